//! Heavy work on tenant input (pattern matching, weight-header and model-card
//! parsing, markdown rendering) runs here: on tokio's blocking threads, never
//! on the async workers that answer everyone's requests, and with bounded
//! concurrency, so one tenant cannot take every slot.
//!
//! A job needs a slot of its tenant (at most [`HeavyLimits::per_tenant`] at a
//! time) and a global slot (at most [`HeavyLimits::global`]). Each wait is
//! short and bounded; past it the request is answered 429 with `Retry-After`
//! (`tenant_busy` for the tenant's own bound, `overloaded` for the global one).

use crate::error::{ApiError, ApiResult};
use crate::storage::StorageError;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Who a job is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// An authenticated user (every token and session of the user).
    User(i64),
    /// An anonymous caller, by address when known.
    Anonymous(Option<IpAddr>),
}

impl Tenant {
    /// The caller of a request.
    pub fn of(auth: &crate::auth::Auth, req: &actix_web::HttpRequest) -> Self {
        match auth.principal() {
            Some(p) => Tenant::User(p.user_id),
            None => Tenant::Anonymous(req.peer_addr().map(|a| a.ip())),
        }
    }
}

/// Concurrency bounds of heavy work.
#[derive(Debug, Clone, Copy)]
pub struct HeavyLimits {
    /// Jobs running at once, all tenants together.
    pub global: usize,
    /// Jobs one tenant may run at once.
    pub per_tenant: usize,
    /// How long a job waits for its tenant's slot before 429 `tenant_busy`.
    pub tenant_wait: Duration,
    /// How long it then waits for a global slot before 429 `overloaded`.
    pub global_wait: Duration,
}

impl Default for HeavyLimits {
    /// Global: the number of cores (at least 2); per tenant: half of that.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let global = cores.max(2);
        Self {
            global,
            per_tenant: (global / 2).max(1),
            tenant_wait: Duration::from_secs(2),
            global_wait: Duration::from_secs(5),
        }
    }
}

/// The slots of heavy work (one per process, in `AppState`).
pub struct Heavy {
    limits: HeavyLimits,
    global: Arc<Semaphore>,
    tenants: Mutex<HashMap<Tenant, Arc<Semaphore>>>,
}

impl std::fmt::Debug for Heavy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heavy")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Heavy {
    fn default() -> Self {
        Self::new(HeavyLimits::default())
    }
}

/// A held slot: released when the job ends (even if the request was dropped).
pub struct Slot {
    tenant_permit: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
    heavy: Arc<Heavy>,
    tenant: Tenant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.tenant_permit.take());
        // Forget idle tenants so the map does not grow without bound.
        let mut map = self.heavy.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.tenant)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            map.remove(&self.tenant);
        }
    }
}

impl Heavy {
    pub fn new(limits: HeavyLimits) -> Self {
        Self {
            global: Arc::new(Semaphore::new(limits.global.max(1))),
            tenants: Mutex::new(HashMap::new()),
            limits,
        }
    }

    pub fn limits(&self) -> HeavyLimits {
        self.limits
    }

    /// Jobs of `tenant` running now (for tests and metrics).
    pub fn running(&self, tenant: Tenant) -> usize {
        let map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&tenant)
            .map_or(0, |s| self.limits.per_tenant.max(1) - s.available_permits())
    }

    /// Waits (briefly) for a slot of `tenant` and a global one.
    pub async fn slot(self: &Arc<Self>, tenant: Tenant) -> ApiResult<Slot> {
        let sem = {
            let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(tenant)
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_tenant.max(1))))
                .clone()
        };
        let wait_s = self.limits.tenant_wait.as_secs().max(1);
        let tenant_permit = match tokio::time::timeout(
            self.limits.tenant_wait,
            sem.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                self.forget_if_idle(tenant, sem);
                return Err(ApiError::TenantBusy {
                    retry_after_s: wait_s,
                    running: self.limits.per_tenant,
                });
            }
        };
        let global = match tokio::time::timeout(
            self.limits.global_wait,
            self.global.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                drop(tenant_permit);
                self.forget_if_idle(tenant, sem);
                return Err(ApiError::Overloaded(
                    "the hub is busy with other heavy requests; retry shortly".into(),
                ));
            }
        };
        drop(sem);
        Ok(Slot {
            tenant_permit: Some(tenant_permit),
            _global: global,
            heavy: self.clone(),
            tenant,
        })
    }

    fn forget_if_idle(&self, tenant: Tenant, sem: Arc<Semaphore>) {
        drop(sem);
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&tenant).is_some_and(|s| Arc::strong_count(s) == 1) {
            map.remove(&tenant);
        }
    }

    /// Runs `f` on a blocking thread under a slot of `tenant`.
    pub async fn run<T, F>(self: &Arc<Self>, tenant: Tenant, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = self.slot(tenant).await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
        .await
        .map_err(ApiError::internal)
    }

    /// Runs `f` on a blocking thread over a reader of `range` of a stored
    /// blob, streamed: only the bytes `f` reads (plus a chunk or two of
    /// read-ahead) are fetched, and memory holds a couple of chunks.
    pub async fn run_reading<T, F>(
        self: &Arc<Self>,
        tenant: Tenant,
        storage: &crate::storage::Storage,
        sha: &crate::domain::Sha256,
        range: std::ops::Range<u64>,
        f: F,
    ) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Read) -> T + Send + 'static,
    {
        let slot = self.slot(tenant).await?;
        let mut stream = storage.read_blob(sha, Some(range)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let work = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut r = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            f(&mut r)
        });
        let pump = async move {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        if tx.send(c).await.is_err() {
                            return Ok(()); // the reader is done
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<(), StorageError>(())
        };
        let (pumped, out) = tokio::join!(pump, work);
        let out = out.map_err(ApiError::internal)?;
        // A storage failure is the answer, not whatever `f` made of the short read.
        pumped?;
        Ok(out)
    }
}

/// A `Read` over chunks sent by the async side.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.cur = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(per_tenant: usize, global: usize) -> Arc<Heavy> {
        Arc::new(Heavy::new(HeavyLimits {
            global,
            per_tenant,
            tenant_wait: Duration::from_millis(50),
            global_wait: Duration::from_millis(50),
        }))
    }

    #[tokio::test]
    async fn per_tenant_bound_answers_429_and_others_still_run() {
        let h = small(1, 2);
        let a = Tenant::User(1);
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        let h2 = h.clone();
        let busy = tokio::spawn(async move { h2.run(a, move || g.wait()).await });
        while h.running(a) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = h.run(a, || ()).await.unwrap_err();
        assert_eq!(e.code(), "tenant_busy");
        // Another tenant still gets a slot.
        assert_eq!(h.run(Tenant::User(2), || 7).await.unwrap(), 7);
        gate.wait();
        busy.await.unwrap().unwrap();
        // The idle tenant is forgotten.
        assert!(h.tenants.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn global_bound_answers_overloaded() {
        let h = small(1, 1);
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        let h2 = h.clone();
        let busy = tokio::spawn(async move { h2.run(Tenant::User(1), move || g.wait()).await });
        while h.running(Tenant::User(1)) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = h.run(Tenant::User(2), || ()).await.unwrap_err();
        assert_eq!(e.code(), "overloaded");
        gate.wait();
        busy.await.unwrap().unwrap();
        assert_eq!(h.running(Tenant::User(2)), 0);
    }
}
