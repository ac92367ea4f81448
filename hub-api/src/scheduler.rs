//! The scheduler: turns each endpoint's desired state into replicas on
//! workers with room, scales between min and max on load, scales to zero
//! after the idle timeout, wakes on demand, and moves replicas off workers
//! that miss heartbeats. One hub-api replica leads at a time (a Postgres
//! advisory lock held on a dedicated connection); the others stand by.

use crate::db;
use crate::db::endpoints::{EndpointRow, ReplicaRow, WorkerRow};
use crate::endpoints::GgufFacts;
use crate::state::AppState;
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// A worker silent for this long is lost; its replicas are placed elsewhere.
pub const LOST_AFTER_S: f64 = 6.0;
/// Requests in flight per replica above which the endpoint scales up.
pub const SCALE_UP_AT: f64 = 4.0;
/// A wake request keeps one replica wanted for this long.
const WAKE_HOLD_S: i64 = 120;
const LEADER_LOCK: i64 = 0x5041_4444_4f43_4b01;

/// The scheduler's per-app state (in [`AppState`]): its doorbell, which
/// handlers that change what endpoints want ring so the scheduler of this app
/// runs now rather than at its next tick (two apps in one process, tests or a
/// hub embedded twice, never wake each other), and the GGUF headers read to
/// detect decoders and size their KV cache, by blob sha256 (content-addressed,
/// so never stale; at most [`GGUF_CACHE`] kept).
#[derive(Clone, Default)]
pub struct Nudge {
    bell: Arc<tokio::sync::Notify>,
    /// Rung when any worker's `assign_version` moved (a Postgres NOTIFY on
    /// [`ASSIGNMENTS_CHANNEL`], so on every hub replica): wakes the long-polls.
    assignments: Arc<tokio::sync::Notify>,
    gguf: Arc<Mutex<HashMap<String, GgufFacts>>>,
    /// Times the notification listener (re)connected and LISTENed.
    listens: Arc<std::sync::atomic::AtomicU64>,
}

/// NOTIFY channel of wake requests (`db::endpoints::request_wake`): the
/// scheduler runs at once instead of at its next tick.
pub const WAKE_CHANNEL: &str = "paddock_wake";
/// NOTIFY channel of assignment changes (`db::endpoints::bump_assign_version`,
/// payload the worker id): the worker's long-poll answers at once.
pub const ASSIGNMENTS_CHANNEL: &str = "paddock_assignments";

/// GGUF headers the scheduler keeps what it read of.
pub const GGUF_CACHE: usize = 1024;

impl Nudge {
    /// Asks this app's scheduler to run now rather than at its next tick.
    pub fn nudge(&self) {
        self.bell.notify_one();
    }

    /// Waits for a nudge, at most `max`; true when nudged.
    pub async fn wait(&self, max: Duration) -> bool {
        tokio::time::timeout(max, self.bell.notified())
            .await
            .is_ok()
    }

    /// Wakes every waiting assignments long-poll of this app (each re-reads
    /// its worker's version).
    pub fn assignments_changed(&self) {
        self.assignments.notify_waiters();
    }

    /// A future that resolves at the next [`Nudge::assignments_changed`];
    /// create it (and `enable` it) before reading the version, so a change
    /// between the read and the wait is not missed.
    pub fn assignments_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.assignments.notified()
    }

    /// How many times this app's notification listener (re)connected and
    /// LISTENed: a test waits for 1 before relying on notifications.
    pub fn listens(&self) -> u64 {
        self.listens.load(std::sync::atomic::Ordering::Acquire)
    }

    /// What a GGUF blob's header said, if it was read.
    pub fn gguf_cached(&self, sha256: &str) -> Option<GgufFacts> {
        self.gguf.lock().expect("lock").get(sha256).cloned()
    }

    /// Keeps what a GGUF blob's header said.
    pub fn gguf_store(&self, sha256: &str, facts: GgufFacts) {
        let mut m = self.gguf.lock().expect("lock");
        if m.len() >= GGUF_CACHE {
            m.clear();
        }
        m.insert(sha256.to_string(), facts);
    }
}

#[cfg(test)]
mod nudge_tests {
    use super::Nudge;
    use std::time::Duration;

    /// Each app has its own doorbell: ringing one wakes its scheduler only
    /// (the process-wide `Notify` it replaces woke every app's scheduler).
    #[tokio::test]
    async fn nudges_are_per_app() {
        let (a, b) = (Nudge::default(), Nudge::default());
        a.nudge();
        assert!(
            !b.wait(Duration::from_millis(50)).await,
            "b woke on a's nudge"
        );
        assert!(
            a.wait(Duration::from_millis(50)).await,
            "a missed its nudge"
        );
        // A clone is the same doorbell (handlers hold clones of the state).
        let a2 = a.clone();
        a2.nudge();
        assert!(a.wait(Duration::from_millis(50)).await);
    }
}

/// Memory a model needs on a worker, estimated with the figure the worker itself
/// applies: for an encoder, from its top-level weight files
/// ([`hub_types::memory::model_bytes`]); for a decoder, its weights (the GGUF
/// file, else the safetensors) plus the KV cache of the default slots
/// ([`hub_types::decoder::default_decoder_bytes`], shape from the GGUF header or
/// `config.json`).
pub async fn memory_need(state: &AppState, e: &EndpointRow) -> anyhow::Result<i64> {
    let Some(repo_id) = e.repo_id else {
        return Ok(0);
    };
    let Some(c) = db::git::commit(&state.db, repo_id, &e.commit_oid).await? else {
        return Ok(0);
    };
    let files = db::git::list_recursive(&state.db, &c.tree_oid, "").await?;
    if e.task == hub_types::Task::TextGeneration.as_str() {
        // Background work: charged to no caller.
        let tenant = crate::heavy::Tenant::Anonymous(None);
        match crate::endpoints::decoder_weights(state, tenant, &files).await {
            Ok(d) => return Ok(i64::try_from(d.need_bytes()).unwrap_or(i64::MAX)),
            Err(err) => {
                tracing::warn!(endpoint = %format!("{}/{}", e.namespace, e.name), error = %err,
                    "reading the decoder's shape failed; sizing by its weight files alone");
            }
        }
    }
    let weights: u64 = files
        .iter()
        .filter(|f| {
            let p = f.path.to_ascii_lowercase();
            !p.contains('/')
                && (p.ends_with(".safetensors") || p.ends_with(".onnx") || p.ends_with(".gguf"))
        })
        .filter_map(|f| f.blob.as_ref().map(|b| b.size.max(0) as u64))
        .fold(0, u64::saturating_add);
    let need = hub_types::memory::model_bytes(weights);
    Ok(i64::try_from(need).unwrap_or(i64::MAX))
}

/// The replica count an endpoint wants now.
fn desired(e: &EndpointRow, replicas: &[ReplicaRow], now: chrono::DateTime<chrono::Utc>) -> i32 {
    if e.paused {
        return 0;
    }
    // A wake holds the endpoint up until a request has been served after it
    // (or the hold expires); a satisfied wake must not block scaling to zero.
    let woken = e.wake_requested_at.is_some_and(|t| {
        (now - t).num_seconds() < WAKE_HOLD_S && e.last_request_at.is_none_or(|l| l < t)
    });
    let idle = match e.scale_to_zero_after_s {
        Some(s) if e.min_replicas == 0 => {
            let last = e.last_request_at.unwrap_or(e.created_at);
            (now - last).num_seconds() >= s as i64
        }
        _ => false,
    };
    if e.min_replicas == 0 && idle && !woken {
        return 0;
    }
    let floor = e.min_replicas.max(1);
    let running: Vec<&ReplicaRow> = replicas.iter().filter(|r| r.status == "running").collect();
    let mut target = e.target_replicas.max(floor);
    if !running.is_empty() {
        let load: i32 = running.iter().map(|r| r.in_flight + r.queue_depth).sum();
        let per = load as f64 / running.len() as f64;
        if per > SCALE_UP_AT && running.len() as i32 >= target {
            target += 1;
        } else if per < 0.5 && target > floor {
            target -= 1;
        }
    }
    target.clamp(floor, e.max_replicas)
}

/// The status an endpoint shows, from its replicas.
fn status_of(
    e: &EndpointRow,
    target: i32,
    replicas: &[ReplicaRow],
    placement_problem: Option<&str>,
) -> (String, Option<String>) {
    if e.paused {
        return ("paused".into(), None);
    }
    if replicas.iter().any(|r| r.status == "running") {
        return ("running".into(), None);
    }
    if target == 0 {
        return (
            "scaled_to_zero".into(),
            Some("idle; the next request wakes it".into()),
        );
    }
    if !replicas.is_empty() && replicas.iter().all(|r| r.status == "failed") {
        let msg = replicas
            .iter()
            .find_map(|r| r.message.clone())
            .unwrap_or_else(|| "the model failed to load".into());
        return ("failed".into(), Some(msg));
    }
    if replicas.iter().any(|r| r.status == "loading") {
        return ("loading".into(), None);
    }
    if replicas.iter().any(|r| r.status == "pulling") {
        return ("pulling".into(), None);
    }
    match placement_problem {
        Some(p) => ("pending".into(), Some(p.to_string())),
        None => (
            "pending".into(),
            Some("waiting for a worker to start it".into()),
        ),
    }
}

/// One pass of the scheduler over every endpoint.
pub async fn tick(state: &AppState) -> anyhow::Result<()> {
    let lost = db::endpoints::remove_lost_workers(&state.db, LOST_AFTER_S).await?;
    let decided = |decision: &str, n: u64| state.metrics.scheduler_decisions.add(&[decision], n);
    decided("worker_lost", lost.len() as u64);
    for w in &lost {
        tracing::warn!(worker.id = %w, "worker missed its heartbeats; its replicas move elsewhere");
    }
    if !lost.is_empty() {
        // Every process's gateway stops routing to them at once.
        crate::signals::invalidate(state, crate::signals::Invalidation::Routes).await;
    }
    let workers: Vec<WorkerRow> = db::endpoints::workers(&state.db).await?;
    let all = db::endpoints::all_replicas(&state.db).await?;
    publish_states(state, &workers, &all);
    let mut by_endpoint: HashMap<i64, Vec<ReplicaRow>> = HashMap::new();
    let mut per_worker: HashMap<Uuid, i64> = HashMap::new();
    for r in all {
        *per_worker.entry(r.worker_id).or_default() += 1;
        by_endpoint.entry(r.endpoint_id).or_default().push(r);
    }
    // Memory already promised on each worker by this pass.
    let mut promised: HashMap<Uuid, i64> = HashMap::new();
    let now = chrono::Utc::now();
    for e in db::endpoints::all(&state.db).await? {
        let replicas = by_endpoint.remove(&e.id).unwrap_or_default();
        let target = desired(&e, &replicas, now);
        if target != e.target_replicas {
            sqlx::query("UPDATE endpoints SET target_replicas = $2 WHERE id = $1")
                .bind(e.id)
                .bind(target)
                .execute(&state.db)
                .await?;
        }
        let live: Vec<&ReplicaRow> = replicas.iter().filter(|r| r.status != "failed").collect();
        let failed = replicas.len() - live.len();
        let mut problem: Option<String> = None;
        let mut conn = state.db.acquire().await?;
        if (live.len() as i32) < target && failed == 0 {
            let need = memory_need(state, &e).await?;
            // Workers with a replica of this endpoint, those placed by this
            // pass included: never two replicas of one endpoint on one worker.
            let mut hosting: Vec<Uuid> = replicas.iter().map(|r| r.worker_id).collect();
            for _ in live.len() as i32..target {
                let fits = |w: &&WorkerRow| {
                    w.free_memory_bytes - promised.get(&w.id).copied().unwrap_or(0) >= need
                };
                let choice = workers
                    .iter()
                    .filter(|w| !hosting.contains(&w.id))
                    .filter(fits)
                    .min_by_key(|w| {
                        (
                            per_worker.get(&w.id).copied().unwrap_or(0),
                            -w.free_memory_bytes,
                        )
                    });
                match choice {
                    Some(w) => {
                        let id = db::endpoints::insert_replica(&mut conn, e.id, w.id).await?;
                        *promised.entry(w.id).or_default() += need;
                        *per_worker.entry(w.id).or_default() += 1;
                        hosting.push(w.id);
                        decided("place", 1);
                        tracing::info!(endpoint = %format!("{}/{}", e.namespace, e.name), replica = %id, worker = %w.name, "replica placed");
                    }
                    None => {
                        decided("unplaceable", 1);
                        problem = Some(if workers.is_empty() {
                            "no worker is registered".into()
                        } else if workers.iter().all(|w| w.memory_bytes < need) {
                            format!(
                                "the model needs about {} MiB; no worker is that big",
                                need / (1 << 20)
                            )
                        } else {
                            format!("no worker has {} MiB free right now", need / (1 << 20))
                        });
                        break;
                    }
                }
            }
        } else if live.len() as i32 > target {
            // Remove the newest replicas first, those not yet running before running ones.
            let mut victims: Vec<&ReplicaRow> = live.clone();
            victims.sort_by_key(|r| (r.status == "running", std::cmp::Reverse(r.created_at)));
            for r in victims.into_iter().take(live.len() - target as usize) {
                db::endpoints::delete_replica(&mut conn, r.id, r.worker_id).await?;
                decided("scale_down", 1);
            }
            crate::signals::invalidate(state, crate::signals::Invalidation::Endpoint(e.id)).await;
        } else if target == 0 && failed > 0 {
            for r in &replicas {
                db::endpoints::delete_replica(&mut conn, r.id, r.worker_id).await?;
            }
            decided("clear_failed", replicas.len() as u64);
            crate::signals::invalidate(state, crate::signals::Invalidation::Endpoint(e.id)).await;
        }
        let replicas_now = db::endpoints::replicas_of(&mut *conn, e.id).await?;
        let too_big = problem
            .as_deref()
            .is_some_and(|p| p.contains("no worker is that big"));
        let (status, message) = if too_big {
            ("failed".to_string(), problem.clone())
        } else {
            status_of(&e, target, &replicas_now, problem.as_deref())
        };
        db::endpoints::set_status(&mut conn, e.id, &status, message.as_deref()).await?;
    }
    Ok(())
}

/// Sets the leader's view of the fleet in the metrics: workers by state and
/// endpoint replicas by state.
fn publish_states(state: &AppState, workers: &[WorkerRow], replicas: &[ReplicaRow]) {
    let now = chrono::Utc::now();
    let mut by_worker: HashMap<&str, i64> = HashMap::from([("ready", 0), ("late", 0)]);
    for w in workers {
        let silent = (now - w.last_heartbeat).num_milliseconds() as f64 / 1000.0;
        *by_worker
            .entry(if silent < LOST_AFTER_S / 2.0 {
                "ready"
            } else {
                "late"
            })
            .or_default() += 1;
    }
    let mut by_replica: HashMap<&str, i64> = ["pulling", "loading", "running", "failed"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for r in replicas {
        *by_replica.entry(r.status.as_str()).or_default() += 1;
    }
    let series = |m: HashMap<&str, i64>| {
        m.into_iter()
            .map(|(k, v)| (vec![k.to_string()], v))
            .collect::<Vec<_>>()
    };
    state.metrics.workers.replace(series(by_worker));
    state.metrics.replicas.replace(series(by_replica));
}

/// Listens on [`WAKE_CHANNEL`] and [`ASSIGNMENTS_CHANNEL`] on a connection of
/// its own, ringing this app's scheduler and long-polls, and on
/// `signals::INVALIDATE_CHANNEL` and `signals::READY_CHANNEL`, dropping
/// cached entries and answering held gateway requests (`signals::received`);
/// reconnects after a second when the connection drops (the 1 s tick, the
/// long-polls' and held requests' own re-reads and the caches' TTLs cover
/// that gap, and the caches are cleared on every (re)connect, as
/// invalidations may have been missed). One per app (`serve` starts it with
/// the scheduler; a test starts it for each app it gives notifications to).
pub fn spawn_listener(state: AppState, db_url: String) {
    actix_web::rt::spawn(async move {
        loop {
            if let Err(e) = listen(&state, &db_url).await {
                tracing::warn!(error = %e, "scheduler: notification listener failed; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn listen(state: &AppState, db_url: &str) -> sqlx::Result<()> {
    // A private connection (not the app pool's), held in `ManuallyDrop`:
    // `PgListener`'s Drop spawns a task, which panics when this task is dropped
    // with the runtime at hub shutdown (sqlx #1389). Then the connection is
    // left to the process exit; after an error, inside the runtime, it is
    // dropped as usual.
    let mut listener =
        std::mem::ManuallyDrop::new(sqlx::postgres::PgListener::connect(db_url).await?);
    let result = relay(&mut listener, state).await;
    drop(std::mem::ManuallyDrop::into_inner(listener));
    result
}

async fn relay(listener: &mut sqlx::postgres::PgListener, state: &AppState) -> sqlx::Result<()> {
    listener
        .listen_all([
            WAKE_CHANNEL,
            ASSIGNMENTS_CHANNEL,
            crate::signals::INVALIDATE_CHANNEL,
            crate::signals::READY_CHANNEL,
        ])
        .await?;
    // Anything sent before LISTEN was missed: look once, and drop what may be stale.
    state.scheduler.nudge();
    state.scheduler.assignments_changed();
    crate::signals::clear_all(state);
    state
        .scheduler
        .listens
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    loop {
        // `try_recv`, not `recv`: `recv` reconnects by itself, and the caches must
        // be cleared after a reconnect (notifications were missed meanwhile).
        let Some(n) = listener.try_recv().await? else {
            return Err(sqlx::Error::Protocol("notification connection lost".into()));
        };
        if n.channel() == WAKE_CHANNEL {
            state.scheduler.nudge();
        } else if n.channel() == ASSIGNMENTS_CHANNEL {
            state.scheduler.assignments_changed();
        } else {
            crate::signals::received(state, n.channel(), n.payload());
        }
    }
}

/// Runs the scheduler loop: contends for leadership, ticks every second (or
/// when nudged, by a handler or a NOTIFY) while leading.
pub fn spawn(state: AppState, db_url: String) {
    spawn_listener(state.clone(), db_url.clone());
    actix_web::rt::spawn(async move {
        loop {
            match lead(&state, &db_url).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: lost leadership or database; retrying")
                }
            }
            // Not leading: the fleet's state is the new leader's to publish.
            state.metrics.scheduler_leader.set(&[], 0);
            state.metrics.workers.replace([]);
            state.metrics.replicas.replace([]);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

async fn lead(state: &AppState, db_url: &str) -> anyhow::Result<()> {
    use sqlx::ConnectOptions;
    let opts: sqlx::postgres::PgConnectOptions = db_url.parse()?;
    let mut conn = opts
        .log_statements(tracing::log::LevelFilter::Trace)
        .connect()
        .await?;
    loop {
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if got {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::info!("scheduler: leading");
    state.metrics.scheduler_leader.set(&[], 1);
    loop {
        let started = std::time::Instant::now();
        let result = tick(state).await;
        let m = &state.metrics;
        m.scheduler_tick_duration
            .observe(&[], started.elapsed().as_secs_f64());
        m.scheduler_ticks
            .inc(&[if result.is_ok() { "ok" } else { "error" }]);
        if let Err(e) = result {
            tracing::warn!(error = format!("{e:#}"), "scheduler tick failed");
        }
        // Still holding the lock (and the connection is alive)?
        conn.ping().await?;
        state.scheduler.wait(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn endpoint(min: i32, stz: Option<i32>) -> EndpointRow {
        let t = Utc::now() - Duration::seconds(300);
        EndpointRow {
            id: 1,
            namespace_id: 1,
            namespace: "ns".into(),
            name: "e".into(),
            repo_id: Some(1),
            repo_type: "model".into(),
            repository: "ns/m".into(),
            revision: "main".into(),
            commit_oid: "0".repeat(40),
            task: "feature-extraction".into(),
            precision: "f32".into(),
            min_replicas: min,
            max_replicas: 2,
            scale_to_zero_after_s: stz,
            access: "protected".into(),
            paused: false,
            target_replicas: 1,
            status: "running".into(),
            message: None,
            created_at: t,
            updated_at: t,
            last_request_at: None,
            wake_requested_at: None,
        }
    }

    #[test]
    fn scale_to_zero_after_idle_even_after_a_recent_wake() {
        let now = Utc::now();
        let mut e = endpoint(0, Some(10));
        // Woken 20 s ago, the held request served 19 s ago, idle since.
        e.wake_requested_at = Some(now - Duration::seconds(20));
        e.last_request_at = Some(now - Duration::seconds(19));
        assert_eq!(desired(&e, &[], now), 0);
        // Still inside the idle window: stays up.
        e.last_request_at = Some(now - Duration::seconds(5));
        assert_eq!(desired(&e, &[], now), 1);
        // A wake not yet answered holds it up even when idle.
        e.last_request_at = Some(now - Duration::seconds(30));
        e.wake_requested_at = Some(now - Duration::seconds(2));
        assert_eq!(desired(&e, &[], now), 1);
        // min_replicas 1 never scales to zero; paused always does.
        let mut e = endpoint(1, Some(10));
        assert_eq!(desired(&e, &[], now), 1);
        e.paused = true;
        assert_eq!(desired(&e, &[], now), 0);
    }
}
