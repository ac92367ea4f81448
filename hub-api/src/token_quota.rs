//! Daily token quotas per namespace: prompt + completion tokens its endpoints serve per
//! UTC day (`namespace_quotas.daily_tokens`; NULL: unlimited), enforced by the gateway
//! before a request is forwarded (429 `token_quota_exceeded`, `Retry-After` = seconds to
//! UTC midnight).
//!
//! The hot path makes no database round trip per call: each process keeps, per
//! namespace, the quota and today's total as last read, and reads them again in the
//! background once they are [`REFRESH`] old (the request that notices is admitted on
//! what is cached and does not wait; only an entry older than [`EXPIRE`], when
//! reloading failed or nobody called for that long, is read on the request path);
//! when the UTC day changes the cached total starts again from 0. Tokens this process
//! meters in between are added to its cached total. The bound, documented: a quota
//! can be overshot by the requests in flight when it runs out (a request is admitted
//! on the tokens spent before it, and its own are counted when it ends) plus, per hub
//! replica, about one [`REFRESH`] of the traffic other replicas serve (and the up to
//! `gateway::USAGE_FLUSH` of records not yet written when a replica reads the total).

use crate::db;
use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The entries and the epoch of the last [`TokenQuotas::forget`] (a read that began
/// before it cannot put its answer back).
#[derive(Default)]
struct Table {
    epoch: u64,
    map: HashMap<i64, Entry>,
}

/// After how long a namespace's quota and total are read again (in the background).
pub const REFRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
/// How long they answer at most without a successful read.
pub const EXPIRE: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

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
    /// A background read is under way.
    refreshing: bool,
}

impl Entry {
    /// Whether the entry is fresh at `now`: read less than [`REFRESH`] ago, on the same
    /// UTC day.
    fn fresh(&self, now: DateTime<Utc>) -> bool {
        now.date_naive() == self.day && now >= self.read_at && now - self.read_at < REFRESH
    }

    /// Whether the entry may still answer at `now` (and be read again in the
    /// background): read less than [`EXPIRE`] ago.
    fn usable(&self, now: DateTime<Utc>) -> bool {
        now >= self.read_at && now - self.read_at < EXPIRE
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
    table: Arc<Mutex<Table>>,
}

impl Default for TokenQuotas {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

/// What the cache can say about a namespace now.
enum Cached {
    Fresh(Entry),
    /// Usable; the caller reads it again in the background (begun at this epoch).
    Stale(Entry, u64),
    Miss(u64),
}

/// Reads a namespace's quota and, when it has one, today's total.
async fn read(db: &sqlx::PgPool, namespace_id: i64, now: DateTime<Utc>) -> ApiResult<Entry> {
    let limit = crate::quota::settings(db, namespace_id).await?.daily_tokens;
    let used = match limit {
        Some(_) => db::endpoints::tokens_since(db, namespace_id, day_start(now)).await?,
        None => 0,
    };
    Ok(Entry {
        read_at: now,
        day: now.date_naive(),
        limit,
        used,
        refreshing: false,
    })
}

impl TokenQuotas {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    /// What the cache holds for a namespace at `now`. A usable entry from an earlier
    /// UTC day answers with today's total at 0 (yesterday's tokens do not count).
    fn cached(&self, namespace_id: i64, now: DateTime<Utc>) -> Cached {
        let mut table = self.table.lock().expect("lock");
        let epoch = table.epoch;
        let Some(e) = table.map.get_mut(&namespace_id) else {
            return Cached::Miss(epoch);
        };
        if !e.usable(now) {
            return Cached::Miss(epoch);
        }
        if e.day != now.date_naive() {
            e.day = now.date_naive();
            e.used = 0;
        }
        if e.fresh(now) || e.refreshing {
            return Cached::Fresh(e.clone());
        }
        e.refreshing = true;
        Cached::Stale(e.clone(), epoch)
    }

    fn store(table: &Mutex<Table>, namespace_id: i64, e: Entry, epoch: u64) {
        let mut table = table.lock().expect("lock");
        if table.epoch != epoch {
            return;
        }
        if table.map.len() > 10_000 {
            let now = e.read_at;
            table.map.retain(|_, e| e.usable(now));
        }
        table.map.insert(namespace_id, e);
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
        let epoch = match self.cached(namespace_id, now) {
            Cached::Fresh(e) => return e.verdict(namespace, now),
            Cached::Stale(e, epoch) => {
                let (table, db) = (self.table.clone(), db.clone());
                tokio::spawn(async move {
                    match read(&db, namespace_id, now).await {
                        Ok(e) => Self::store(&table, namespace_id, e, epoch),
                        Err(err) => {
                            tracing::debug!(error = %err, "reading a token quota failed");
                            if let Some(e) = table.lock().expect("lock").map.get_mut(&namespace_id)
                            {
                                e.refreshing = false;
                            }
                        }
                    }
                });
                return e.verdict(namespace, now);
            }
            Cached::Miss(epoch) => epoch,
        };
        let e = read(db, namespace_id, now).await?;
        let verdict = e.verdict(namespace, now);
        Self::store(&self.table, namespace_id, e, epoch);
        verdict
    }

    /// Counts tokens this process just metered (until the next read of the total).
    pub fn add(&self, namespace_id: i64, tokens: i64) {
        let today = self.clock.now().date_naive();
        if let Some(e) = self.table.lock().expect("lock").map.get_mut(&namespace_id) {
            if e.day == today {
                e.used = e.used.saturating_add(tokens);
            }
        }
    }

    /// Forgets a namespace's entry (after this process changed its quota).
    pub fn forget(&self, namespace_id: i64) {
        let mut table = self.table.lock().expect("lock");
        table.epoch += 1;
        table.map.remove(&namespace_id);
    }

    /// Forgets every entry (invalidations may have been missed).
    pub fn clear(&self) {
        let mut table = self.table.lock().expect("lock");
        table.epoch += 1;
        table.map.clear();
    }

    /// Today's tokens and the quota as this process knows them, for tests.
    #[doc(hidden)]
    pub fn peek(&self, namespace_id: i64) -> Option<(Option<i64>, i64)> {
        let table = self.table.lock().expect("lock");
        table.map.get(&namespace_id).map(|e| (e.limit, e.used))
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
            refreshing: false,
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
        TokenQuotas::store(
            &q.table,
            7,
            Entry {
                read_at: now,
                day: now.date_naive(),
                limit: Some(10),
                used: 50,
                refreshing: false,
            },
            0,
        );
        assert!(
            matches!(q.cached(7, now), Cached::Fresh(e) if e.used == 50),
            "fresh within the second"
        );
        q.add(7, 5);
        assert_eq!(q.peek(7), Some((Some(10), 55)));
        // Half a second later it is tomorrow: the entry answers with today's total
        // at 0 (yesterday's 55 no longer count; the quota is kept) and is read again
        // in the background; tokens metered now count toward today.
        let tomorrow = now + chrono::TimeDelta::milliseconds(500);
        *clock.0.lock().unwrap() = tomorrow;
        match q.cached(7, tomorrow) {
            Cached::Fresh(e) => {
                assert_eq!(
                    (e.limit, e.used, e.day),
                    (Some(10), 0, tomorrow.date_naive())
                )
            }
            _ => panic!("a usable entry answers across midnight"),
        }
        assert!(q.check_cached_is_ok(7, tomorrow));
        q.add(7, 5);
        assert_eq!(q.peek(7), Some((Some(10), 5)));
        assert_eq!(
            next_reset(tomorrow),
            Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()
        );
        assert_eq!(
            day_start(tomorrow).to_rfc3339(),
            "2026-12-03T00:00:00+00:00"
        );
        // Same day, a second later: stale (read again in the background, once),
        // still usable until EXPIRE; then a miss (read on the request path).
        let e = Entry {
            read_at: at(12, 0, 0),
            day: at(12, 0, 0).date_naive(),
            limit: Some(1),
            used: 0,
            refreshing: false,
        };
        assert!(e.fresh(at(12, 0, 0) + chrono::TimeDelta::milliseconds(999)));
        assert!(!e.fresh(at(12, 0, 1)));
        assert!(e.usable(at(12, 0, 4)));
        assert!(!e.usable(at(12, 0, 5)));
        // A clock that went backwards does not keep an entry forever.
        assert!(!e.fresh(at(11, 59, 59)));
        assert!(!e.usable(at(11, 59, 59)));
        clock.0.lock().unwrap().clone_from(&at(12, 0, 1));
        let epoch = q.table.lock().unwrap().epoch;
        TokenQuotas::store(&q.table, 8, e, epoch);
        assert!(matches!(q.cached(8, at(12, 0, 1)), Cached::Stale(..)));
        assert!(
            matches!(q.cached(8, at(12, 0, 1)), Cached::Fresh(..)),
            "one background read at a time"
        );
        assert!(matches!(q.cached(8, at(12, 0, 6)), Cached::Miss(_)));
        // A forget beats a read under way.
        let epoch = q.table.lock().unwrap().epoch;
        q.forget(8);
        TokenQuotas::store(
            &q.table,
            8,
            Entry {
                read_at: at(12, 0, 6),
                ..q_entry()
            },
            epoch,
        );
        assert!(q.peek(8).is_none());
    }

    fn q_entry() -> Entry {
        Entry {
            read_at: at(12, 0, 0),
            day: at(12, 0, 0).date_naive(),
            limit: Some(1),
            used: 0,
            refreshing: false,
        }
    }

    impl TokenQuotas {
        /// What `check` would answer from the cache alone.
        fn check_cached_is_ok(&self, ns: i64, now: DateTime<Utc>) -> bool {
            let table = self.table.lock().unwrap();
            table
                .map
                .get(&ns)
                .is_some_and(|e| e.verdict("acme", now).is_ok())
        }
    }
}
