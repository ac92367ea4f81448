//! Signals between hub replicas over PostgreSQL `NOTIFY`, beyond the
//! scheduler's own (`scheduler::WAKE_CHANNEL`, `scheduler::ASSIGNMENTS_CHANNEL`):
//!
//! - **Cache invalidations** ([`INVALIDATE_CHANNEL`], a small JSON payload
//!   `{"kind": ..., "id": ...}`, see [`Invalidation`]). What a process changes
//!   it drops from its own caches at once and publishes; every process's
//!   listener (`scheduler::spawn_listener`) applies it too, so another replica
//!   stops answering from a stale token, role, route, quota or grant
//!   (`auth::grants`) within a notification's delivery time rather than the
//!   caches' TTLs. The TTLs stay
//!   the bound when a notification is lost: the listener reconnects and, since
//!   it may have missed some, clears every cache when it (re)connects.
//!   Applying an invalidation twice (the publisher receives its own) is
//!   harmless.
//! - **Repo row changes** (`repo_cache::CHANNEL`), sent by the database's
//!   own triggers on `repos` and `namespaces`: see `repo_cache`.
//! - **Replica ready** ([`READY_CHANNEL`], payload the endpoint id), sent by
//!   the database itself when a worker reports a replica `running`
//!   (`db::endpoints::update_replica`): a gateway request held for a cold
//!   endpoint is answered at once instead of at its next re-read (the
//!   waiters of one process share its one listener, see `gateway::Live`).

use crate::state::AppState;
use serde::{Deserialize, Serialize};

/// NOTIFY channel of cache invalidations (payload: an [`Invalidation`] as JSON).
pub const INVALIDATE_CHANNEL: &str = "paddock_invalidate";
/// NOTIFY channel of replicas that became ready (payload: the endpoint id).
pub const READY_CHANNEL: &str = "paddock_ready";

/// A background task's wake-up on a NOTIFY channel: rung at every
/// notification and whenever the listener (re)connects (a notification may
/// have been missed meanwhile). Drop it to stop listening. The webhook sender
/// and the dataset viewer's job runner each keep one.
pub struct Bell {
    bell: std::sync::Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl Bell {
    /// Starts listening on `channel` (`what` names the task in log lines).
    pub fn listen(db: sqlx::PgPool, channel: &'static str, what: &'static str) -> Bell {
        let bell = std::sync::Arc::new(tokio::sync::Notify::new());
        let ring = bell.clone();
        let listener = tokio::spawn(async move {
            loop {
                // Held in `ManuallyDrop` as the scheduler's listener is: `PgListener`'s
                // Drop spawns a task, which panics when dropped with the runtime (sqlx #1389).
                match sqlx::postgres::PgListener::connect_with(&db).await {
                    Ok(l) => {
                        let mut l = std::mem::ManuallyDrop::new(l);
                        if let Err(e) = l.listen(channel).await {
                            tracing::warn!(error = %e, "{what}: LISTEN failed");
                        } else {
                            ring.notify_one();
                            while let Ok(Some(_)) = l.try_recv().await {
                                ring.notify_one();
                            }
                        }
                        drop(std::mem::ManuallyDrop::into_inner(l));
                    }
                    Err(e) => tracing::warn!(error = %e, "{what}: notification listener failed"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        Bell { bell, listener }
    }

    /// Waits for the next ring (one rung before this call counts).
    pub async fn rung(&self) {
        self.bell.notified().await
    }

    /// Rings it from this process.
    pub fn ring(&self) {
        self.bell.notify_one()
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// What changed, so every process drops what it cached of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Invalidation {
    /// A token was revoked (token id).
    Token(i64),
    /// A namespace's members or roles changed, or the org was deleted (namespace id).
    Roles(i64),
    /// An endpoint was changed, paused, resumed, deleted or scaled down (endpoint id).
    Endpoint(i64),
    /// Routes in general (an endpoint created, workers lost).
    Routes,
    /// A namespace's quotas or rate limits changed (namespace id).
    Quota(i64),
    /// A gated repo's access requests were decided (repo id): the grants of
    /// links, Xet tokens and pull tokens on it are decided again.
    Gate(i64),
    /// A fine-tuning job ended (job id): its pull tokens stop.
    Job(uuid::Uuid),
    /// A user signed out (user id): the credentials minted for their
    /// dashboard sessions (Xet tokens, data links, signed links) stop.
    SignOut(i64),
}

/// Drops what this process cached of `what`.
pub fn apply(state: &AppState, what: Invalidation) {
    let grants = &state.tenancy.grants;
    match what {
        Invalidation::Token(id) => {
            state.tenancy.token_cache.forget_token(id);
            grants.forget_token(id);
        }
        Invalidation::Roles(ns) => {
            state.tenancy.roles.forget_namespace(ns);
            grants.forget_namespace(ns);
        }
        Invalidation::Endpoint(id) => {
            state.live.forget_endpoint(id);
            grants.forget_endpoint(id);
        }
        Invalidation::Routes => state.live.forget_routes(),
        Invalidation::Quota(ns) => {
            state.live.quotas.forget(ns);
            state.tenancy.rate.invalidate();
        }
        Invalidation::Gate(repo) => grants.forget_repo(repo),
        Invalidation::Job(id) => grants.forget_job(id),
        Invalidation::SignOut(user) => grants.forget_sessions(user),
    }
}

/// Drops every cache an invalidation reaches (the listener (re)connected and
/// may have missed some).
pub fn clear_all(state: &AppState) {
    state.tenancy.token_cache.clear();
    state.tenancy.roles.clear();
    state.tenancy.grants.clear();
    state.live.forget_routes();
    state.live.quotas.clear();
    state.tenancy.rate.invalidate();
    state.resolved.rows.clear();
}

/// Applies `what` here at once and publishes it to every replica. Call it
/// after the change is committed (a replica that reloads on the notification
/// must read the new state). A failed publish is logged, not returned: the
/// change is made, and other replicas see it within the TTLs.
pub async fn invalidate(state: &AppState, what: Invalidation) {
    apply(state, what);
    let payload = serde_json::to_string(&what).expect("an invalidation serializes");
    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(INVALIDATE_CHANNEL)
        .bind(&payload)
        .execute(&state.db)
        .await
    {
        tracing::warn!(error = %e, invalidation = %payload, "publishing a cache invalidation failed; other replicas see the change within the TTLs");
    }
}

/// [`invalidate`] for many changes at once: applied here, published in one
/// statement (the scheduler scaling many endpoints down in one tick).
pub async fn invalidate_many(state: &AppState, what: &[Invalidation]) {
    if what.is_empty() {
        return;
    }
    let payloads: Vec<String> = what
        .iter()
        .map(|w| {
            apply(state, *w);
            serde_json::to_string(w).expect("an invalidation serializes")
        })
        .collect();
    if let Err(e) = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(INVALIDATE_CHANNEL)
        .bind(&payloads)
        .execute(&state.db)
        .await
    {
        tracing::warn!(error = %e, invalidations = payloads.len(), "publishing cache invalidations failed; other replicas see the changes within the TTLs");
    }
}

/// Handles a notification on [`INVALIDATE_CHANNEL`], [`READY_CHANNEL`] or
/// `repo_cache::CHANNEL` (from the listener); false for another channel.
pub fn received(state: &AppState, channel: &str, payload: &str) -> bool {
    match channel {
        INVALIDATE_CHANNEL => {
            match serde_json::from_str::<Invalidation>(payload) {
                Ok(what) => apply(state, what),
                Err(e) => {
                    // From a newer replica, perhaps: drop everything rather than miss it.
                    tracing::warn!(error = %e, payload, "unknown cache invalidation; clearing the caches");
                    clear_all(state);
                }
            }
            true
        }
        crate::repo_cache::CHANNEL => {
            state.resolved.rows.received(payload);
            state.tenancy.grants.received(payload);
            true
        }
        READY_CHANNEL => {
            if let Ok(id) = payload.parse::<i64>() {
                state.live.replica_ready(id);
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Invalidation;

    #[test]
    fn payloads_are_small_json() {
        for (what, json) in [
            (Invalidation::Token(7), r#"{"kind":"token","id":7}"#),
            (Invalidation::Roles(3), r#"{"kind":"roles","id":3}"#),
            (Invalidation::Endpoint(9), r#"{"kind":"endpoint","id":9}"#),
            (Invalidation::Routes, r#"{"kind":"routes"}"#),
            (Invalidation::Quota(1), r#"{"kind":"quota","id":1}"#),
            (Invalidation::Gate(4), r#"{"kind":"gate","id":4}"#),
            (
                Invalidation::Job(uuid::Uuid::nil()),
                r#"{"kind":"job","id":"00000000-0000-0000-0000-000000000000"}"#,
            ),
            (Invalidation::SignOut(5), r#"{"kind":"sign_out","id":5}"#),
        ] {
            assert_eq!(serde_json::to_string(&what).unwrap(), json);
            assert_eq!(serde_json::from_str::<Invalidation>(json).unwrap(), what);
        }
    }
}
