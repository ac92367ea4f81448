//! Daily token quotas per namespace: prompt + completion tokens its endpoints serve per
//! UTC day (`namespace_quotas.daily_tokens`; NULL: unlimited), enforced by the gateway
//! before a request is forwarded (429 `token_quota_exceeded`, `Retry-After` = seconds to
//! UTC midnight).
//!
//! The hot path makes no database round trip per call: each process keeps, per
//! namespace, the quota and today's total as last read, and reads them again at most
//! every [`REFRESH`] (and at once when the UTC day changes); tokens this process meters
//! in between are added to its cached total. The bound, documented: a quota can be
//! overshot by the requests in flight when it runs out (a request is admitted on the
//! tokens spent before it, and its own are counted when it ends) plus, per hub replica,
//! about one [`REFRESH`] of the traffic other replicas serve (and the up to
//! `gateway::USAGE_FLUSH` of records not yet written when a replica reads the total).

use crate::db;
use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a namespace's quota and total are reused without asking the database.
pub const REFRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// The time of day, injectable so the day change can be tested.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The start of the UTC day of `now`.
pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

/// The next UTC midnight after `now`: when the quota resets.
pub fn next_reset(now: DateTime<Utc>) -> DateTime<Utc> {
    day_start(now) + chrono::TimeDelta::days(1)
}

/// What one process knows of a namespace's quota today.
#[derive(Debug, Clone)]
struct Entry {
    /// When the database was read (by the clock).
    read_at: DateTime<Utc>,
    /// The UTC day `used` counts.
    day: NaiveDate,
    limit: Option<i64>,
    used: i64,
}

impl Entry {
    /// Whether the entry may still answer at `now`: read less than [`REFRESH`] ago, on
    /// the same UTC day.
    fn fresh(&self, now: DateTime<Utc>) -> bool {
        now.date_naive() == self.day && now >= self.read_at && now - self.read_at < REFRESH
    }

    /// Admits a request at `now` or refuses it.
    fn verdict(&self, namespace: &str, now: DateTime<Utc>) -> ApiResult<()> {
        match self.limit {
            Some(limit) if self.used >= limit => {
                let reset = next_reset(now);
                let secs = (reset - now).num_milliseconds().max(0) as u64;
                Err(ApiError::TokenQuotaExceeded {
                    namespace: namespace.to_string(),
                    limit,
                    used: self.used,
                    resets_at: reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    retry_after_s: secs.div_ceil(1000).max(1),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The per-process cache of quotas and today's totals (one per app, in the gateway's
/// [`crate::gateway::Live`]).
pub struct TokenQuotas {
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<i64, Entry>>,
}

impl Default for TokenQuotas {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl TokenQuotas {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached entry of a namespace when it may still answer.
    fn cached(&self, namespace_id: i64, now: DateTime<Utc>) -> Option<Entry> {
        let entries = self.entries.lock().expect("lock");
        entries.get(&namespace_id).filter(|e| e.fresh(now)).cloned()
    }

    fn store(&self, namespace_id: i64, e: Entry) {
        let mut entries = self.entries.lock().expect("lock");
        if entries.len() > 10_000 {
            let now = self.clock.now();
            entries.retain(|_, e| e.fresh(now));
        }
        entries.insert(namespace_id, e);
    }

    /// Admits a call to an endpoint of the namespace, or refuses it with 429
    /// `token_quota_exceeded` when today's tokens reached its quota.
    pub async fn check(
        &self,
        db: &sqlx::PgPool,
        namespace_id: i64,
        namespace: &str,
    ) -> ApiResult<()> {
        let now = self.clock.now();
        if let Some(e) = self.cached(namespace_id, now) {
            return e.verdict(namespace, now);
        }
        let limit = crate::quota::settings(db, namespace_id).await?.daily_tokens;
        let used = match limit {
            Some(_) => db::endpoints::tokens_since(db, namespace_id, day_start(now)).await?,
            None => 0,
        };
        let e = Entry {
            read_at: now,
            day: now.date_naive(),
            limit,
            used,
        };
        let verdict = e.verdict(namespace, now);
        self.store(namespace_id, e);
        verdict
    }

    /// Counts tokens this process just metered (until the next read of the total).
    pub fn add(&self, namespace_id: i64, tokens: i64) {
        let today = self.clock.now().date_naive();
        if let Some(e) = self.entries.lock().expect("lock").get_mut(&namespace_id) {
            if e.day == today {
                e.used = e.used.saturating_add(tokens);
            }
        }
    }

    /// Forgets a namespace's entry (after this process changed its quota).
    pub fn forget(&self, namespace_id: i64) {
        self.entries.lock().expect("lock").remove(&namespace_id);
    }

    /// Today's tokens and the quota as this process knows them, for tests.
    #[doc(hidden)]
    pub fn peek(&self, namespace_id: i64) -> Option<(Option<i64>, i64)> {
        let entries = self.entries.lock().expect("lock");
        entries.get(&namespace_id).map(|e| (e.limit, e.used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    struct Fixed(Mutex<DateTime<Utc>>);

    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, h, m, s).unwrap()
    }

    #[test]
    fn refuses_once_spent_until_midnight() {
        let now = at(23, 59, 30);
        let e = Entry {
            read_at: now,
            day: now.date_naive(),
            limit: Some(100),
            used: 100,
        };
        match e.verdict("acme", now) {
            Err(ApiError::TokenQuotaExceeded {
                retry_after_s,
                resets_at,
                limit,
                used,
                ..
            }) => {
                assert_eq!(retry_after_s, 30);
                assert_eq!(resets_at, "2026-12-03T00:00:00Z");
                assert_eq!((limit, used), (100, 100));
            }
            other => panic!("{other:?}"),
        }
        let err = e.verdict("acme", now).unwrap_err();
        assert_eq!(err.code(), "token_quota_exceeded");
        assert_eq!(err.status().as_u16(), 429);
        let msg = err.to_string();
        assert!(
            msg.contains("acme") && msg.contains("100") && msg.contains("2026-12-03T00:00:00Z"),
            "{msg}"
        );
        // Under the quota, or unlimited: admitted.
        assert!(Entry {
            used: 99,
            ..e.clone()
        }
        .verdict("acme", now)
        .is_ok());
        assert!(Entry {
            limit: None,
            ..e.clone()
        }
        .verdict("acme", now)
        .is_ok());
        // A fraction of a second before midnight still asks the client to wait a second.
        let late = Utc.with_ymd_and_hms(2026, 12, 2, 23, 59, 59).unwrap()
            + chrono::TimeDelta::milliseconds(500);
        match e.verdict("acme", late) {
            Err(ApiError::TokenQuotaExceeded { retry_after_s, .. }) => {
                assert_eq!(retry_after_s, 1)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_day_forgets_yesterdays_total() {
        let clock = Arc::new(Fixed(Mutex::new(
            at(23, 59, 59) + chrono::TimeDelta::milliseconds(700),
        )));
        let q = TokenQuotas::with_clock(clock.clone());
        let now = clock.now();
        q.store(
            7,
            Entry {
                read_at: now,
                day: now.date_naive(),
                limit: Some(10),
                used: 50,
            },
        );
        assert!(q.cached(7, now).is_some(), "fresh within the second");
        q.add(7, 5);
        assert_eq!(q.peek(7), Some((Some(10), 55)));
        // Half a second later it is tomorrow: the entry no longer answers (the total
        // is read again), and tokens metered now are not added to yesterday's count.
        let tomorrow = now + chrono::TimeDelta::milliseconds(500);
        *clock.0.lock().unwrap() = tomorrow;
        assert!(q.cached(7, tomorrow).is_none());
        q.add(7, 5);
        assert_eq!(q.peek(7), Some((Some(10), 55)));
        assert_eq!(
            next_reset(tomorrow),
            Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()
        );
        assert_eq!(
            day_start(tomorrow).to_rfc3339(),
            "2026-12-03T00:00:00+00:00"
        );
        // Same day, a second later: stale too.
        let e = Entry {
            read_at: at(12, 0, 0),
            day: at(12, 0, 0).date_naive(),
            limit: Some(1),
            used: 0,
        };
        assert!(e.fresh(at(12, 0, 0) + chrono::TimeDelta::milliseconds(999)));
        assert!(!e.fresh(at(12, 0, 1)));
        // A clock that went backwards does not keep an entry forever.
        assert!(!e.fresh(at(11, 59, 59)));
    }
}
