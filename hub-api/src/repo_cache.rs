//! The repo rows `/resolve` reads, cached per process while the process
//! hears of every change to them.
//!
//! A warm `HEAD /resolve` reads nothing else from PostgreSQL (the token,
//! the revision's commit, the path's entry and the LFS check are cached by
//! keys that make them exact, `resolve_cache`), so this row is what stands
//! between it and no round trip at all. The row carries what access needs
//! (privacy, gating, owner) and the `resolve_version` that keys the rest, so
//! a cached row must never outlive a change to it by more than this bound:
//!
//! - **Changes made through this process** are seen by its very next
//!   request: every request that may write (any method but `GET`, `HEAD`
//!   and `OPTIONS`, outside the inference gateway, the workers' control
//!   routes and the job runners' polls) drops the whole cache once its handler has returned, before
//!   its response is sent ([`middleware`]), and a load that began before the
//!   drop cannot put its answer back (the cache's epoch).
//! - **Changes made anywhere else** (another replica, `hub-api admin`, a
//!   background job, `psql`) are announced by the database itself: triggers
//!   on `repos` and `namespaces` (migration `20261206000001`) send
//!   [`CHANNEL`] with `repo:<id>` or `namespace:<id>` when the transaction
//!   commits, for every change to a repo row (a ref move bumps its
//!   `resolve_version`) except its counters, and for a namespace's rename
//!   or deletion. Each process's listener (`scheduler::spawn_listener`)
//!   drops what it holds of that repo or namespace: the bound is the
//!   notification's delivery (measured in `it::repo_cache`).
//! - **A write acknowledged by one replica has reached that replica's own
//!   listener first**: after a successful write the middleware sends a
//!   `sync:<process>:<n>` notification of its own and waits (at most
//!   [`SYNC_WAIT`]) until its listener hands it back. PostgreSQL delivers
//!   notifications in commit order and hands them to every listener at the
//!   same commit, so by the time a client can send its next request to
//!   another replica through a load balancer, that replica has been told
//!   too unless its listener task runs later than this one's by more than the
//!   client's own round trip.
//! - **The cache is used only while that listener listens.** Until it has
//!   run `LISTEN`, and from the moment its connection fails until it has
//!   listened again, every lookup reads the database (as with the cache
//!   off) and the cache is emptied at both edges, since notifications may
//!   have been missed in between. An entry lives at most the TTL
//!   (`--repo-cache-ttl-secs`, default 5 s; 0 turns the cache off) and is
//!   reloaded in the background after a fifth of it under traffic, which
//!   bounds staleness should the listener's connection hang unnoticed.
//!
//! Missing repos are not cached (a repo created elsewhere is found at once).
//! Only `/resolve` reads through this cache; other routes read the row
//! fresh (through `repo_lookup`), since they show its counters.

use crate::db::repos::RepoRow;
use crate::refresh_cache::{Lookup, RefreshCache};
use crate::repo_lookup::{Answer, Key, RepoLookups};
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// NOTIFY channel of repo row changes (payload `repo:<id>` or `namespace:<id>`),
/// sent by the database's triggers.
pub const CHANNEL: &str = "paddock_repo";

/// Above this many rows the cache starts over (bounded memory).
const MAX_ENTRIES: usize = 20_000;

/// Path prefixes whose unsafe requests never change a repo row: the inference
/// gateway and the workers' control calls, the two kinds of `POST` that come
/// by the thousand. Every other unsafe request empties the cache.
const NO_REPO_WRITES: [&str; 2] = ["/endpoints/", "/api/v1/workers/"];

/// The job runners' polls (`POST /api/v1/job-runner/claim` every 2 s per
/// runner) and progress reports, which never change a repo row either (their
/// `files` and `finish` calls may: those empty the cache).
const JOB_RUNNER: &str = "/api/v1/job-runner/";

/// The longest a write's response waits for its own sync notification.
pub const SYNC_WAIT: Duration = Duration::from_millis(100);

/// See the module docs.
pub struct RepoCache {
    rows: Arc<RefreshCache<Key, RepoRow>>,
    live: AtomicBool,
    /// This process, in sync payloads (random).
    process: String,
    next_sync: AtomicU64,
    syncs: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Default for RepoCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl RepoCache {
    /// A cache whose rows answer for `ttl` at most (0: off).
    pub fn new(ttl: Duration) -> Self {
        let refresh = (ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(1));
        Self {
            rows: Arc::new(RefreshCache::new(refresh, ttl, MAX_ENTRIES)),
            live: AtomicBool::new(false),
            process: format!("{:016x}", rand::random::<u64>()),
            next_sync: AtomicU64::new(0),
            syncs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether lookups may answer from the cache (the listener listens).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The listener started listening (true) or lost its connection (false):
    /// either way notifications may have been missed, so everything held is
    /// dropped (and loads under way cannot put theirs back).
    pub fn set_live(&self, live: bool) {
        if !live {
            self.live.store(false, Ordering::Release);
        }
        self.rows.clear();
        if live {
            self.live.store(true, Ordering::Release);
        }
    }

    /// Drops everything (a write through this process, or an unknown notification).
    pub fn clear(&self) {
        self.rows.clear();
    }

    /// Rows held (for tests).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Applies a notification's payload (`repo:<id>`, `namespace:<id>`,
    /// `sync:<process>:<n>`; anything else drops everything, in case a newer
    /// replica sent it).
    pub fn received(&self, payload: &str) {
        if let Some(sync) = payload.strip_prefix("sync:") {
            if let Some(n) = sync
                .strip_prefix(self.process.as_str())
                .and_then(|n| n.strip_prefix(':'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if let Some(w) = self.lock_syncs().remove(&n) {
                    let _ = w.send(());
                }
            }
            return;
        }
        let parsed = payload
            .split_once(':')
            .and_then(|(k, id)| Some((k, id.parse::<i64>().ok()?)));
        match parsed {
            Some(("repo", id)) => self.rows.forget(|_, r| r.id == id),
            Some(("namespace", id)) => self.rows.forget(|_, r| r.namespace_id == id),
            _ => {
                tracing::warn!(
                    payload,
                    "unknown repo change notification; clearing the repo cache"
                );
                self.rows.clear();
            }
        }
    }

    fn lock_syncs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until this process's listener has received every notification
    /// committed before this call (see the module docs); gives up after
    /// [`SYNC_WAIT`] or when the listener is not listening. Whether it got there.
    pub async fn sync(&self, db: &PgPool) -> bool {
        if !self.is_live() {
            return false;
        }
        let n = self.next_sync.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock_syncs().insert(n, tx);
        let payload = format!("sync:{}:{n}", self.process);
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&payload)
            .execute(db)
            .await;
        let done = match sent {
            Ok(_) => matches!(tokio::time::timeout(SYNC_WAIT, rx).await, Ok(Ok(()))),
            Err(e) => {
                tracing::debug!(error = %e, "repo cache sync notification failed");
                false
            }
        };
        self.lock_syncs().remove(&n);
        done
    }

    /// The repo `namespace/name` of `repo_type`: from the cache while it is
    /// live, else (and on a miss) read through `lookups`.
    pub async fn find(
        &self,
        lookups: &Arc<RepoLookups>,
        db: &PgPool,
        repo_type: &str,
        namespace: &str,
        name: &str,
    ) -> Answer {
        if !self.is_live() {
            return lookups.find(db, repo_type, namespace, name).await;
        }
        let key = crate::repo_lookup::key(repo_type, namespace, name);
        let epoch = match self.rows.get(&key) {
            Lookup::Fresh(row) => return Ok(Some(row)),
            Lookup::Stale { value, epoch } => {
                let (rows, lookups, db) = (self.rows.clone(), lookups.clone(), db.clone());
                tokio::spawn(async move {
                    let (t, ns, n) = &key;
                    match lookups.find(&db, t, ns, n).await {
                        Ok(row) => rows.put(key, row, epoch),
                        Err(e) => {
                            tracing::debug!(error = %e, "reloading a repo row failed");
                            rows.reload_failed(&key);
                        }
                    }
                });
                return Ok(Some(value));
            }
            Lookup::Miss { epoch } => epoch,
        };
        let row = lookups.find(db, repo_type, namespace, name).await?;
        if let Some(r) = &row {
            self.rows.put(key, Some(r.clone()), epoch);
        }
        Ok(row)
    }
}

/// Whether a request may change a repo row (see [`NO_REPO_WRITES`]).
pub fn may_write(method: &Method, path: &str) -> bool {
    let polls = path.strip_prefix(JOB_RUNNER).is_some_and(|rest| {
        rest == "claim"
            || rest
                .split_once('/')
                .is_some_and(|(_, tail)| tail == "progress")
    });
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !polls
        && !NO_REPO_WRITES.iter().any(|p| path.starts_with(p))
}

/// Empties the repo cache after every request that may have changed a repo
/// row, once its handler has returned and before its response goes out: the
/// caller's next request, here, reads what it wrote. A successful one also
/// waits for its own sync notification ([`RepoCache::sync`]), so other
/// replicas have been told too.
pub async fn middleware<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let state = may_write(req.method(), req.path())
        .then(|| req.app_data::<web::Data<AppState>>().cloned())
        .flatten();
    let res = next.call(req).await;
    if let Some(s) = state {
        s.resolved.rows.clear();
        if res.as_ref().is_ok_and(|r| r.status().is_success()) {
            s.resolved.rows.sync(&s.db).await;
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsafe_requests_outside_the_gateway_and_worker_control_empty_the_cache() {
        for (m, p, writes) in [
            (Method::HEAD, "/olga/m/resolve/main/f", false),
            (Method::GET, "/api/models/olga/m", false),
            (Method::OPTIONS, "/api/models/olga/m", false),
            (Method::POST, "/api/models/olga/m/commit/main", true),
            (Method::PUT, "/api/models/olga/m/settings", true),
            (Method::DELETE, "/api/repos/delete", true),
            (Method::POST, "/olga/m.git/git-receive-pack", true),
            (Method::POST, "/api/v1/job-runner/3/finish", true),
            (Method::POST, "/api/v1/job-runner/3/files", true),
            (Method::POST, "/api/v1/job-runner/claim", false),
            (Method::POST, "/api/v1/job-runner/3/progress", false),
            (Method::POST, "/endpoints/acme/emb/v1/embeddings", false),
            (Method::POST, "/api/v1/workers/4/heartbeat", false),
        ] {
            assert_eq!(may_write(&m, p), writes, "{m} {p}");
        }
    }

    fn row(id: i64, namespace_id: i64, name: &str) -> RepoRow {
        RepoRow::sample(id, namespace_id, &format!("ns{namespace_id}"), name, false)
    }

    /// Rows 1 and 2 of namespace 10, row 3 of namespace 20.
    fn filled() -> RepoCache {
        let c = RepoCache::default();
        c.set_live(true);
        for r in [row(1, 10, "a"), row(2, 10, "b"), row(3, 20, "c")] {
            let key = crate::repo_lookup::key("model", &r.namespace, &r.name);
            c.rows.put(key, Some(r), c.rows.epoch());
        }
        assert_eq!(c.len(), 3);
        c
    }

    fn ids(c: &RepoCache) -> Vec<i64> {
        let mut v: Vec<i64> = ["a", "b", "c"]
            .iter()
            .zip([10, 10, 20])
            .filter_map(|(n, ns)| {
                match c
                    .rows
                    .get(&crate::repo_lookup::key("model", &format!("NS{ns}"), n))
                {
                    Lookup::Fresh(r) | Lookup::Stale { value: r, .. } => Some(r.id),
                    Lookup::Miss { .. } => None,
                }
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn notifications_drop_their_repo_or_namespace_and_anything_unknown_drops_all() {
        let c = filled();
        c.received("repo:2");
        assert_eq!(ids(&c), [1, 3]);
        c.received("namespace:20");
        assert_eq!(ids(&c), [1]);
        c.received("repo:99");
        assert_eq!(ids(&c), [1]);
        // Sync payloads, this process's or another's, drop nothing.
        c.received("sync:0123456789abcdef:4");
        c.received(&format!("sync:{}:5", c.process));
        assert_eq!(ids(&c), [1]);
        for p in ["repo:x", "namespace:", "other:1", ""] {
            let c = filled();
            c.received(p);
            assert!(c.is_empty(), "{p:?} kept rows");
        }
    }

    #[tokio::test]
    async fn a_sync_completes_when_its_own_payload_comes_back() {
        let c = RepoCache::default();
        let (tx, rx) = oneshot::channel();
        c.lock_syncs().insert(7, tx);
        c.received("sync:0123456789abcdef:7");
        c.received(&format!("sync:{}:8", c.process));
        assert_eq!(
            c.lock_syncs().len(),
            1,
            "another's sync or number completed it"
        );
        c.received(&format!("sync:{}:7", c.process));
        assert!(c.lock_syncs().is_empty());
        rx.await.unwrap();
    }

    #[test]
    fn losing_the_listener_empties_the_cache_and_refuses_loads_under_way() {
        let c = filled();
        let epoch = c.rows.epoch();
        c.set_live(false);
        assert!(!c.is_live() && c.is_empty());
        // A load begun while live cannot put its row after the loss.
        c.rows.put(
            crate::repo_lookup::key("model", "ns10", "a"),
            Some(row(1, 10, "a")),
            epoch,
        );
        assert!(c.is_empty());
        c.set_live(true);
        assert!(c.is_live() && c.is_empty());
    }
}
