//! The repo row a request names, read with other requests' lookups in one
//! PostgreSQL round trip: group commit, for reads.
//!
//! Every registry request reads its repo row (access, privacy, gating, and the
//! `resolve_version` that keys the `/resolve` cache), and under load that one
//! round trip is most of a warm `HEAD /resolve`. It cannot be cached without
//! giving up that a ref moved or a repo made private on one replica is seen
//! by the very next request on every replica. So instead of caching, lookups
//! share queries: at most [`QUERIES`] run at once per app; a lookup that
//! arrives while they are all busy waits for the next free one, which then
//! reads every waiting lookup (up to [`BATCH`] distinct repos, a repo asked
//! for by many requests read once) in one query.
//!
//! Freshness is unchanged: a lookup is always answered by a query that began
//! after the lookup was made, so it sees every commit acknowledged before
//! the request arrived. Under no load a lookup runs alone, at once, as before.
//! The queries run in spawned tasks, so a request that goes away (a client
//! disconnecting) never strands the others waiting on its query.

use crate::db;
use crate::db::repos::RepoRow;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Lookup queries in flight at once, per app.
pub const QUERIES: usize = 4;
/// Distinct repos read by one query at most.
pub const BATCH: usize = 128;

/// (repo type, namespace lower-cased, name lower-cased): the lookup's key,
/// matched as `db::repos::find` matches.
pub type Key = (String, String, String);
/// A lookup's answer (the error shared by the lookups one query answered).
pub type Answer = Result<Option<RepoRow>, Arc<sqlx::Error>>;

/// The [`Key`] of the repo `namespace/name` of `repo_type`.
pub fn key(repo_type: &str, namespace: &str, name: &str) -> Key {
    (
        repo_type.to_string(),
        namespace.to_lowercase(),
        name.to_lowercase(),
    )
}

#[derive(Default)]
struct Queue {
    /// Queries in flight (at most [`QUERIES`]).
    running: usize,
    pending: HashMap<Key, Vec<oneshot::Sender<Answer>>>,
}

/// The per-app lookup queue (see the module docs).
#[derive(Default)]
pub struct RepoLookups {
    queue: Mutex<Queue>,
    /// Queries run and repos read, for tests and figures.
    stats: Mutex<(u64, u64)>,
}

impl RepoLookups {
    /// The repo `namespace/name` of `repo_type`, if it exists.
    pub async fn find(
        self: &Arc<Self>,
        db: &PgPool,
        repo_type: &str,
        namespace: &str,
        name: &str,
    ) -> Answer {
        let key = key(repo_type, namespace, name);
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.pending.entry(key).or_default().push(tx);
            let start = q.running < QUERIES;
            if start {
                q.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(Self::drain(Slot(self.clone(), false), db.clone()));
        }
        rx.await
            .unwrap_or_else(|_| Err(Arc::new(sqlx::Error::WorkerCrashed)))
    }

    /// (queries run, repos read) so far.
    pub fn stats(&self) -> (u64, u64) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs queries for whatever is pending until nothing is, then frees
    /// its slot (under the same lock that saw the queue empty, so a lookup
    /// queued meanwhile always finds a slot or a running query to take it).
    async fn drain(mut slot: Slot, db: PgPool) {
        loop {
            let batch: Vec<(Key, Vec<oneshot::Sender<Answer>>)> = {
                let mut q = slot.0.lock();
                if q.pending.is_empty() {
                    q.running -= 1;
                    slot.1 = true;
                    return;
                }
                if q.pending.len() <= BATCH {
                    q.pending.drain().collect()
                } else {
                    let keys: Vec<Key> = q.pending.keys().take(BATCH).cloned().collect();
                    keys.into_iter()
                        .map(|k| {
                            let w = q.pending.remove(&k).unwrap_or_default();
                            (k, w)
                        })
                        .collect()
                }
            };
            let keys: Vec<Key> = batch.iter().map(|(k, _)| k.clone()).collect();
            let rows = if let [(t, ns, n)] = keys.as_slice() {
                db::repos::find(&db, t, ns, n).await.map(|r| vec![r])
            } else {
                db::repos::find_many(&db, &keys).await
            };
            {
                let mut s = slot.0.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.0 += 1;
                s.1 += keys.len() as u64;
            }
            match rows {
                Ok(rows) => {
                    for ((_, waiters), row) in batch.into_iter().zip(rows) {
                        for w in waiters {
                            let _ = w.send(Ok(row.clone()));
                        }
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for w in batch.into_iter().flat_map(|(_, w)| w) {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// A query slot; given back when its task ends, even by a panic (`.1`: given
/// back already, by `drain` under the queue's lock).
struct Slot(Arc<RepoLookups>, bool);

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.1 {
            let mut q = self.0.lock();
            q.running -= 1;
            // Whoever waits would wait forever: fail them.
            q.pending.clear();
        }
    }
}
