//! Memory held by request bodies that must be whole before they can be
//! checked (Xet xorbs and shards: a xorb's hash covers all of it). Each such
//! body reserves its bytes here before it is read: at most
//! [`BudgetLimits::per_namespace`] for one tenant's uploads at a time and
//! [`BudgetLimits::global`] for everyone's, so neither a flood of concurrent
//! uploads nor one tenant's burst can take the process's memory or every
//! other tenant's turn. A reservation waits (the client is mid-upload; a
//! short queue beats a retry) up to [`BudgetLimits::wait`], then the request
//! is refused with 429 and `Retry-After`, which the Xet client retries.

use crate::error::{ApiError, ApiResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in units of this many bytes (a semaphore holds
/// at most `u32::MAX` permits per acquisition).
const UNIT: u64 = 64 * 1024;

/// The bounds of the budget.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    /// Bytes reserved at once, all tenants together.
    pub global: u64,
    /// Bytes one namespace may hold reserved at once.
    pub per_namespace: u64,
    /// How long a reservation waits before 429.
    pub wait: Duration,
}

impl Default for BudgetLimits {
    /// 1 GiB in all, 512 MiB per namespace: with 64 MiB xorbs held twice
    /// (the body and the stored form), four of one tenant's uploads and
    /// eight in all are checked at once, enough to keep two cores busy.
    fn default() -> Self {
        Self {
            global: 1024 * 1024 * 1024,
            per_namespace: 512 * 1024 * 1024,
            wait: Duration::from_secs(30),
        }
    }
}

/// The budget (one per process, in `AppState`).
pub struct MemoryBudget {
    limits: BudgetLimits,
    global: Arc<Semaphore>,
    namespaces: Mutex<HashMap<i64, Arc<Semaphore>>>,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(BudgetLimits::default())
    }
}

/// Reserved bytes, given back on drop (also when the request is dropped).
pub struct Reservation {
    ns_permit: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
    budget: Arc<MemoryBudget>,
    ns: i64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.ns_permit.take());
        self.budget.forget_if_idle(self.ns);
    }
}

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT).max(1)
}

impl MemoryBudget {
    pub fn new(limits: BudgetLimits) -> Self {
        Self {
            global: Arc::new(Semaphore::new(units(limits.global) as usize)),
            namespaces: Mutex::new(HashMap::new()),
            limits,
        }
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    /// Bytes `ns` holds reserved now (for tests and metrics).
    pub fn reserved(&self, ns: i64) -> u64 {
        let map = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ns).map_or(0, |s| {
            (units(self.limits.per_namespace) - s.available_permits() as u64) * UNIT
        })
    }

    /// Reserves `bytes` for namespace `ns`: waits up to the limit's `wait`
    /// for room, first in the namespace's share, then in the global one.
    /// A request larger than a share is cut to the share (it then waits for
    /// the namespace to be idle) so that it can still be served.
    pub async fn reserve(self: &Arc<Self>, ns: i64, bytes: u64) -> ApiResult<Reservation> {
        let ns_units = units(bytes).min(units(self.limits.per_namespace));
        let global_units = ns_units.min(units(self.limits.global));
        let sem = {
            let mut map = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(ns)
                .or_insert_with(|| {
                    Arc::new(Semaphore::new(units(self.limits.per_namespace) as usize))
                })
                .clone()
        };
        let deadline = tokio::time::Instant::now() + self.limits.wait;
        let retry_after_s = self.limits.wait.as_secs().clamp(1, 30);
        let ns_permit = match tokio::time::timeout_at(
            deadline,
            sem.acquire_many_owned(ns_units as u32),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                self.forget_if_idle(ns);
                return Err(ApiError::TenantBusy {
                    retry_after_s,
                    running: (self.limits.per_namespace / bytes.max(1)).max(1) as usize,
                });
            }
        };
        let global = match tokio::time::timeout_at(
            deadline,
            self.global.clone().acquire_many_owned(global_units as u32),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                drop(ns_permit);
                self.forget_if_idle(ns);
                return Err(ApiError::Overloaded(
                    "the hub is checking too many uploads at once; retry shortly".into(),
                ));
            }
        };
        Ok(Reservation {
            ns_permit: Some(ns_permit),
            _global: global,
            budget: self.clone(),
            ns,
        })
    }

    /// Drops the namespace's semaphore when nothing holds or awaits it, so
    /// the map does not grow with every tenant ever seen.
    fn forget_if_idle(&self, ns: i64) {
        let mut map = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&ns).is_some_and(|s| {
            Arc::strong_count(s) == 1
                && s.available_permits() as u64 == units(self.limits.per_namespace)
        }) {
            map.remove(&ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn budget(global: u64, per_namespace: u64, wait_ms: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(BudgetLimits {
            global,
            per_namespace,
            wait: Duration::from_millis(wait_ms),
        }))
    }

    #[tokio::test]
    async fn a_namespace_cannot_hold_more_than_its_share() {
        let b = budget(100 * MIB, 10 * MIB, 50);
        let first = b.reserve(1, 6 * MIB).await.unwrap();
        assert_eq!(b.reserved(1), 6 * MIB);
        let err = b.reserve(1, 6 * MIB).await.err().expect("over the share");
        assert!(matches!(err, ApiError::TenantBusy { .. }), "{err:?}");
        // Another tenant is not held up by the first one's share.
        let other = b.reserve(2, 6 * MIB).await.unwrap();
        drop(first);
        assert_eq!(b.reserved(1), 0);
        let again = b.reserve(1, 6 * MIB).await.unwrap();
        drop((other, again));
        assert!(
            b.namespaces.lock().unwrap().is_empty(),
            "idle namespaces are forgotten"
        );
    }

    #[tokio::test]
    async fn the_global_budget_bounds_all_tenants_together() {
        let b = budget(10 * MIB, 8 * MIB, 50);
        let _a = b.reserve(1, 6 * MIB).await.unwrap();
        let err = b
            .reserve(2, 6 * MIB)
            .await
            .err()
            .expect("over the global budget");
        assert!(matches!(err, ApiError::Overloaded(_)), "{err:?}");
        assert_eq!(
            b.reserved(2),
            0,
            "a refused reservation gives its share back"
        );
    }

    #[tokio::test]
    async fn a_waiting_reservation_is_served_when_room_frees() {
        let b = budget(100 * MIB, 10 * MIB, 5_000);
        let first = b.reserve(1, 8 * MIB).await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(1, 8 * MIB).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "waits while the share is held");
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_body_over_the_share_is_still_served_alone() {
        let b = budget(100 * MIB, 10 * MIB, 50);
        let r = b.reserve(1, 40 * MIB).await.unwrap();
        assert_eq!(b.reserved(1), 10 * MIB);
        drop(r);
    }
}
