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
    /// Needs by (repo id, commit, task): a commit never changes, so an entry
    /// never goes stale; at most [`NEED_CACHE`] kept.
    needs: Arc<Mutex<HashMap<NeedKey, Need>>>,
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
/// Memory needs the scheduler keeps (one per deployed commit and task).
pub const NEED_CACHE: usize = 16_384;

/// What a need depends on: the repo, the commit (immutable) and the task.
type NeedKey = (i64, String, String);

/// What a replica of a model needs on a worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// Memory ([`memory_need`]).
    pub memory: i64,
    /// Bytes its download takes in the worker's cache at most: its top-level
    /// weight files (a repo with several GGUF files counts them all, though a
    /// worker pulls one), so an over-estimate.
    pub disk: i64,
}

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

    fn need_cached(&self, key: &NeedKey) -> Option<Need> {
        self.needs.lock().expect("lock").get(key).copied()
    }

    fn need_store(&self, key: NeedKey, need: Need) {
        let mut m = self.needs.lock().expect("lock");
        if m.len() >= NEED_CACHE {
            m.clear();
        }
        m.insert(key, need);
    }

    /// Memory needs kept (for tests).
    pub fn needs_cached(&self) -> usize {
        self.needs.lock().expect("lock").len()
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
    let key = (repo_id, e.commit_oid.clone());
    let mut listed = db::git::top_level_files(&state.db, std::slice::from_ref(&key)).await?;
    match listed.remove(&key) {
        Some(files) => Ok(sized(state, e, &files).await.0.memory),
        None => Ok(0),
    }
}

/// Memory needs of many endpoints (by index into `endpoints`): from the
/// scheduler's cache, else worked out in one query for every (repo, commit)
/// and, for decoders whose shape is not cached, [`NEED_CONCURRENCY`] reads at
/// a time. Kept when settled.
async fn needs_of(state: &AppState, endpoints: &[&EndpointRow]) -> anyhow::Result<Vec<Need>> {
    use futures_util::StreamExt;
    let mut out = vec![Need::default(); endpoints.len()];
    // Not cached: (repo, commit) to list, and which endpoints each sizes.
    let mut missing: HashMap<NeedKey, Vec<usize>> = HashMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        let Some(repo_id) = e.repo_id else {
            continue;
        };
        let key = (repo_id, e.commit_oid.clone(), e.task.clone());
        match state.scheduler.need_cached(&key) {
            Some(n) => out[i] = n,
            None => missing.entry(key).or_default().push(i),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let mut commits: Vec<(i64, String)> = missing.keys().map(|k| (k.0, k.1.clone())).collect();
    commits.sort();
    commits.dedup();
    let listed = db::git::top_level_files(&state.db, &commits).await?;
    let groups: Vec<(NeedKey, Vec<usize>)> = missing.into_iter().collect();
    let work: Vec<_> = groups
        .iter()
        .map(|(key, ix)| {
            let files = listed.get(&(key.0, key.1.clone()));
            sized_listed(state, endpoints[ix[0]], files)
        })
        .collect();
    let sized: Vec<(Need, bool)> = futures_util::stream::iter(work)
        .buffered(NEED_CONCURRENCY)
        .collect()
        .await;
    for ((key, ix), (need, settled)) in groups.into_iter().zip(sized) {
        for i in &ix {
            out[*i] = need;
        }
        if settled {
            state.scheduler.need_store(key, need);
        }
    }
    Ok(out)
}

/// [`sized`] of a commit's listing; 0 (not settled) when the commit was not found.
async fn sized_listed(
    state: &AppState,
    e: &EndpointRow,
    files: Option<&Vec<db::git::Entry>>,
) -> (Need, bool) {
    match files {
        Some(files) => sized(state, e, files).await,
        None => (Need::default(), false),
    }
}

/// [`memory_need`] from the commit's top-level files, and whether the figure
/// is settled: not when a decoder's shape could not be read (it is then sized
/// by its weight files alone; a later try may do better).
async fn sized(state: &AppState, e: &EndpointRow, files: &[db::git::Entry]) -> (Need, bool) {
    let weights: u64 = files
        .iter()
        .filter(|f| {
            let p = f.path.to_ascii_lowercase();
            !p.contains('/')
                && (p.ends_with(".safetensors") || p.ends_with(".onnx") || p.ends_with(".gguf"))
        })
        .filter_map(|f| f.blob.as_ref().map(|b| b.size.max(0) as u64))
        .fold(0, u64::saturating_add);
    let need = |memory: u64| Need {
        memory: i64::try_from(memory).unwrap_or(i64::MAX),
        disk: i64::try_from(weights).unwrap_or(i64::MAX),
    };
    let mut settled = true;
    if e.task == hub_types::Task::TextGeneration.as_str() {
        // Background work: charged to no caller.
        let tenant = crate::heavy::Tenant::Anonymous(None);
        match crate::endpoints::decoder_weights(state, tenant, files).await {
            Ok(d) => return (need(d.need_bytes()), true),
            Err(err) => {
                settled = false;
                tracing::warn!(endpoint = %format!("{}/{}", e.namespace, e.name), error = %err,
                    "reading the decoder's shape failed; sizing by its weight files alone");
            }
        }
    }
    (need(hub_types::memory::model_bytes(weights)), settled)
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
    replicas: &[&ReplicaRow],
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

/// What one tick does to an endpoint's replicas.
enum Action {
    Keep,
    /// Place this many more.
    Place(i32),
    /// Remove these (indexes into the endpoint's replicas): scaling down.
    ScaleDown(Vec<usize>),
    /// Remove every replica: the target is 0 and some failed.
    ClearFailed,
}

/// One endpoint in a tick.
struct Pass {
    e: EndpointRow,
    replicas: Vec<ReplicaRow>,
    target: i32,
    action: Action,
    /// What a replica needs (worked out when placing, or when replicas are
    /// still loading).
    need: Need,
    problem: Option<String>,
    /// Replicas placed by this tick: (id, worker index).
    placed: Vec<(Uuid, usize)>,
}

impl Pass {
    /// Whether this replica is removed by the tick.
    fn removes(&self, i: usize) -> bool {
        match &self.action {
            Action::ScaleDown(victims) => victims.contains(&i),
            Action::ClearFailed => true,
            _ => false,
        }
    }

    /// Replicas the worker has been given but not loaded yet: its reported
    /// free memory does not show them.
    fn loading(&self) -> impl Iterator<Item = &ReplicaRow> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                matches!(r.status.as_str(), "assigned" | "pulling" | "loading") && !self.removes(*i)
            })
            .map(|(_, r)| r)
    }
}

/// The workers as one tick's placement sees them.
struct Fleet<'a> {
    workers: &'a [WorkerRow],
    index: HashMap<Uuid, usize>,
    /// Replicas on each worker (any state).
    count: Vec<i64>,
    /// Free memory less what is promised and not loaded yet.
    left: Vec<i64>,
    /// Room in the model cache less what is promised and not pulled yet
    /// (`i64::MAX` where not reported).
    disk_left: Vec<i64>,
    /// The order of choice: fewest replicas, then most free memory reported,
    /// then registration (the order of `workers`).
    order: std::collections::BTreeSet<(i64, std::cmp::Reverse<i64>, usize)>,
    /// No worker has more than this left (lowered after a search that failed;
    /// `left` only goes down within a tick).
    most_left: i64,
}

impl<'a> Fleet<'a> {
    fn new(workers: &'a [WorkerRow], replicas: &[ReplicaRow]) -> Self {
        let index: HashMap<Uuid, usize> =
            workers.iter().enumerate().map(|(i, w)| (w.id, i)).collect();
        let mut count = vec![0i64; workers.len()];
        for r in replicas {
            if let Some(i) = index.get(&r.worker_id) {
                count[*i] += 1;
            }
        }
        let left: Vec<i64> = workers.iter().map(|w| w.free_memory_bytes).collect();
        let order = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (count[i], std::cmp::Reverse(w.free_memory_bytes), i))
            .collect();
        Fleet {
            workers,
            index,
            count,
            most_left: left.iter().copied().max().unwrap_or(i64::MIN),
            left,
            disk_left: workers
                .iter()
                .map(|w| w.cache_room_bytes.unwrap_or(i64::MAX))
                .collect(),
            order,
        }
    }

    /// A replica given to a worker before this tick and not loaded yet: its
    /// memory is promised; so is its download while it is still only
    /// `assigned` (a pull under way is in the room the worker reports).
    fn promised(&mut self, r: &ReplicaRow, need: Need) {
        if let Some(&i) = self.index.get(&r.worker_id) {
            self.left[i] = self.left[i].saturating_sub(need.memory);
            if r.status == "assigned" {
                self.disk_left[i] = self.disk_left[i].saturating_sub(need.disk);
            }
        }
    }

    /// The worker for a replica needing `need`, not one of `hosting`: of those
    /// with that much memory left, the first in the order of choice whose
    /// model cache has room for the download, else the first (the worker may
    /// hold the files already, or free room by the time it pulls; if not, the
    /// replica fails saying so).
    fn choose(&mut self, need: Need, hosting: &[usize]) -> Option<usize> {
        if need.memory > self.most_left {
            return None;
        }
        let mut most = i64::MIN;
        let mut without_room = None;
        for &(_, _, i) in &self.order {
            if self.left[i] >= need.memory && !hosting.contains(&i) {
                if self.disk_left[i] >= need.disk {
                    return Some(i);
                }
                without_room.get_or_insert(i);
            }
            most = most.max(self.left[i]);
        }
        self.most_left = most;
        without_room
    }

    fn place(&mut self, i: usize, need: Need) {
        let free = self.workers[i].free_memory_bytes;
        self.order
            .remove(&(self.count[i], std::cmp::Reverse(free), i));
        self.count[i] += 1;
        self.left[i] = self.left[i].saturating_sub(need.memory);
        self.disk_left[i] = self.disk_left[i].saturating_sub(need.disk);
        self.order
            .insert((self.count[i], std::cmp::Reverse(free), i));
    }
}

/// Memory needs worked out at once, at most this many at a time.
const NEED_CONCURRENCY: usize = 8;

/// One pass of the scheduler over every endpoint: reads the fleet (workers,
/// replicas, endpoints: a handful of statements), decides in memory, and
/// writes what changed in a few batched statements. A tick where nothing
/// changes writes nothing.
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
    let mut fleet = Fleet::new(&workers, &all);
    let mut by_endpoint: HashMap<i64, Vec<ReplicaRow>> = HashMap::new();
    for r in all {
        by_endpoint.entry(r.endpoint_id).or_default().push(r);
    }
    let now = chrono::Utc::now();

    // What each endpoint wants.
    let mut passes: Vec<Pass> = vec![];
    for e in db::endpoints::all(&state.db).await? {
        let replicas = by_endpoint.remove(&e.id).unwrap_or_default();
        let target = desired(&e, &replicas, now);
        let live = replicas.iter().filter(|r| r.status != "failed").count();
        let failed = replicas.len() - live;
        let action = if (live as i32) < target && failed == 0 {
            Action::Place(target - live as i32)
        } else if live as i32 > target {
            // Remove the newest replicas first, those not yet running before running ones.
            let mut victims: Vec<usize> = (0..replicas.len())
                .filter(|i| replicas[*i].status != "failed")
                .collect();
            victims.sort_by_key(|i| {
                let r = &replicas[*i];
                (r.status == "running", std::cmp::Reverse(r.created_at))
            });
            victims.truncate(live - target as usize);
            Action::ScaleDown(victims)
        } else if target == 0 && failed > 0 {
            Action::ClearFailed
        } else {
            Action::Keep
        };
        passes.push(Pass {
            e,
            replicas,
            target,
            action,
            need: Need::default(),
            problem: None,
            placed: vec![],
        });
    }

    // The memory needs of what is placed now or still loading.
    let sizing: Vec<usize> = (0..passes.len())
        .filter(|i| {
            let p = &passes[*i];
            matches!(p.action, Action::Place(_)) || p.loading().next().is_some()
        })
        .collect();
    let rows: Vec<&EndpointRow> = sizing.iter().map(|i| &passes[*i].e).collect();
    let mut need_by_pass = vec![Need::default(); passes.len()];
    for (i, need) in sizing.iter().zip(needs_of(state, &rows).await?) {
        need_by_pass[*i] = need;
    }
    for (p, need) in passes.iter_mut().zip(need_by_pass) {
        p.need = need;
        for r in p.loading() {
            fleet.promised(r, need);
        }
    }

    // Placement, in two rounds: the first replica of every endpoint that has
    // none, then the others (more replicas of endpoints that have some, the
    // second of a new `min_replicas: 2`); endpoint by endpoint within a round.
    // When memory is short, serving one more endpoint beats a second replica.
    let biggest = workers.iter().map(|w| w.memory_bytes).max();
    // (endpoint's pass, replicas to place) of each round.
    let mut firsts: Vec<(usize, i32)> = vec![];
    let mut others: Vec<(usize, i32)> = vec![];
    for (i, p) in passes.iter().enumerate() {
        let Action::Place(n) = p.action else {
            continue;
        };
        if p.replicas.is_empty() {
            firsts.push((i, 1));
            if n > 1 {
                others.push((i, n - 1));
            }
        } else {
            others.push((i, n));
        }
    }
    for (i, n) in firsts.into_iter().chain(others) {
        let p = &mut passes[i];
        if p.problem.is_some() {
            continue;
        }
        let mut hosting: Vec<usize> = p
            .replicas
            .iter()
            .map(|r| r.worker_id)
            .chain(p.placed.iter().map(|(_, w)| workers[*w].id))
            .filter_map(|w| fleet.index.get(&w).copied())
            .collect();
        for _ in 0..n {
            match fleet.choose(p.need, &hosting) {
                Some(w) => {
                    fleet.place(w, p.need);
                    hosting.push(w);
                    p.placed.push((Uuid::new_v4(), w));
                }
                None => {
                    decided("unplaceable", 1);
                    p.problem = Some(match biggest {
                        None => "no worker is registered".into(),
                        Some(b) if b < p.need.memory => format!(
                            "the model needs about {} MiB; no worker is that big",
                            p.need.memory / (1 << 20)
                        ),
                        Some(_) => format!(
                            "no worker has {} MiB free right now",
                            p.need.memory / (1 << 20)
                        ),
                    });
                    break;
                }
            }
        }
    }

    // Writes: targets, then the replicas (one transaction, each worker's
    // assignment version moved once), then the statuses that changed.
    let targets: Vec<(i64, i32)> = passes
        .iter()
        .filter(|p| p.target != p.e.target_replicas)
        .map(|p| (p.e.id, p.target))
        .collect();
    db::endpoints::set_targets(&state.db, &targets).await?;
    let mut inserts: Vec<(Uuid, i64, Uuid)> = vec![];
    let mut deletes: Vec<Uuid> = vec![];
    let mut touched: Vec<Uuid> = vec![];
    let mut invalidations = vec![];
    let (mut scaled_down, mut cleared) = (0u64, 0u64);
    for p in &passes {
        for (id, w) in &p.placed {
            inserts.push((*id, p.e.id, workers[*w].id));
            touched.push(workers[*w].id);
        }
        let removed: Vec<&ReplicaRow> = match &p.action {
            Action::ScaleDown(victims) => {
                scaled_down += victims.len() as u64;
                victims.iter().map(|i| &p.replicas[*i]).collect()
            }
            Action::ClearFailed => {
                cleared += p.replicas.len() as u64;
                p.replicas.iter().collect()
            }
            _ => continue,
        };
        for r in removed {
            deletes.push(r.id);
            touched.push(r.worker_id);
        }
        invalidations.push(crate::signals::Invalidation::Endpoint(p.e.id));
    }
    if !touched.is_empty() {
        touched.sort();
        touched.dedup();
        let mut tx = state.db.begin().await?;
        db::endpoints::delete_replicas(&mut tx, &deletes).await?;
        db::endpoints::insert_replicas(&mut tx, &inserts).await?;
        db::endpoints::bump_assign_versions(&mut *tx, &touched).await?;
        tx.commit().await?;
    }
    decided("place", inserts.len() as u64);
    decided("scale_down", scaled_down);
    decided("clear_failed", cleared);
    for p in &passes {
        for (id, w) in &p.placed {
            tracing::info!(endpoint = %format!("{}/{}", p.e.namespace, p.e.name), replica = %id, worker = %workers[*w].name, "replica placed");
        }
    }

    // Each endpoint's status from its replicas as they are now.
    let mut statuses: Vec<(i64, String, Option<String>)> = vec![];
    for p in &passes {
        let placed: Vec<ReplicaRow> = p
            .placed
            .iter()
            .map(|(id, w)| ReplicaRow {
                id: *id,
                endpoint_id: p.e.id,
                worker_id: workers[*w].id,
                worker_name: workers[*w].name.clone(),
                status: "assigned".into(),
                message: None,
                in_flight: 0,
                queue_depth: 0,
                created_at: now,
                updated_at: now,
            })
            .collect();
        let now_replicas: Vec<&ReplicaRow> = p
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !p.removes(*i))
            .map(|(_, r)| r)
            .chain(&placed)
            .collect();
        let too_big = p
            .problem
            .as_deref()
            .is_some_and(|m| m.contains("no worker is that big"));
        let (status, message) = if too_big {
            ("failed".to_string(), p.problem.clone())
        } else {
            status_of(&p.e, p.target, &now_replicas, p.problem.as_deref())
        };
        if status != p.e.status || message != p.e.message {
            statuses.push((p.e.id, status, message));
        }
    }
    db::endpoints::set_statuses(&state.db, &statuses).await?;
    crate::signals::invalidate_many(state, &invalidations).await;
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
    // From here until the next LISTEN, repo row changes go unheard.
    state.resolved.rows.set_live(false);
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
            crate::repo_cache::CHANNEL,
        ])
        .await?;
    // Anything sent before LISTEN was missed: look once, and drop what may be stale.
    state.scheduler.nudge();
    state.scheduler.assignments_changed();
    crate::signals::clear_all(state);
    state.resolved.rows.set_live(true);
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

    fn worker(n: u64, free_gib: i64) -> WorkerRow {
        WorkerRow {
            id: Uuid::from_u64_pair(0, n),
            name: format!("w{n}"),
            url: String::new(),
            gateway_secret: String::new(),
            memory_bytes: 64 << 30,
            free_memory_bytes: free_gib << 30,
            cores: 1,
            last_heartbeat: Utc::now(),
            assign_version: 1,
            cache_room_bytes: None,
        }
    }

    /// A need of `memory` bytes and no download.
    fn mem(memory: i64) -> Need {
        Need { memory, disk: 0 }
    }

    fn replica_on(w: &WorkerRow) -> ReplicaRow {
        ReplicaRow {
            id: Uuid::new_v4(),
            endpoint_id: 9,
            worker_id: w.id,
            worker_name: w.name.clone(),
            status: "running".into(),
            message: None,
            in_flight: 0,
            queue_depth: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    /// The worker chosen: fewest replicas, then most free memory, then
    /// registration order; never one already hosting the endpoint, never
    /// more than a worker has left after what this tick (and replicas still
    /// loading) promised.
    #[test]
    fn placement_picks_the_least_loaded_worker_with_room() {
        const G: i64 = 1 << 30;
        let ws = vec![worker(1, 8), worker(2, 16), worker(3, 16), worker(4, 16)];
        let mut f = Fleet::new(&ws, &[replica_on(&ws[1])]);
        // 0, 2 and 3 have no replica; 2 and 3 the most free; 2 registered first.
        assert_eq!(f.choose(mem(G), &[]), Some(2));
        assert_eq!(f.choose(mem(G), &[2]), Some(3));
        // A replica of another endpoint still loading on 3: 12 GiB promised.
        let mut loading = replica_on(&ws[3]);
        loading.status = "loading".into();
        f.promised(&loading, mem(12 * G));
        f.place(2, mem(15 * G));
        // 0 and 3 have none now, but 0 has 8 GiB and 3 has 4 left: 10 GiB goes to 1.
        assert_eq!(f.choose(mem(10 * G), &[]), Some(1));
        f.place(1, mem(10 * G));
        assert_eq!(f.choose(mem(10 * G), &[]), None);
        // Smaller needs still fit after a failed search.
        assert_eq!(f.choose(mem(8 * G), &[]), Some(0));
        assert_eq!(f.choose(mem(8 * G), &[0]), None);
        assert_eq!(f.choose(mem(4 * G), &[0]), Some(3));
        // No worker: nothing fits.
        assert_eq!(Fleet::new(&[], &[]).choose(mem(0), &[]), None);
    }

    /// The model cache's room (`cache_room_bytes`) decides between workers
    /// with the memory: the first in the order of choice whose cache can take
    /// the download, less what this tick and replicas still `assigned`
    /// promised; a worker that does not report counts as roomy. When none has
    /// the room, the first with the memory still gets it (it may hold the
    /// files already).
    #[test]
    fn placement_prefers_a_worker_whose_cache_has_room() {
        const G: i64 = 1 << 30;
        let mut ws = vec![worker(1, 16), worker(2, 16), worker(3, 16)];
        ws[0].cache_room_bytes = Some(2 * G);
        ws[1].cache_room_bytes = Some(12 * G);
        let need = Need {
            memory: G,
            disk: 5 * G,
        };
        let mut f = Fleet::new(&ws, &[]);
        // 0 comes first in the order but cannot take 5 GiB: 1 gets it.
        assert_eq!(f.choose(need, &[]), Some(1));
        f.place(1, need);
        // 1 has 7 GiB left; 2 does not report: 2 comes before 1 (fewer replicas).
        assert_eq!(f.choose(need, &[]), Some(2));
        f.place(2, need);
        // A download promised to 1 and not started: 2 GiB left there.
        let mut assigned = replica_on(&ws[1]);
        assigned.status = "assigned".into();
        f.promised(&assigned, need);
        // 0 (2 GiB) and 1 (2 GiB): neither has room; the first with memory.
        assert_eq!(f.choose(need, &[2]), Some(0));
        // A small download fits 0.
        let small = Need { memory: G, disk: G };
        assert_eq!(f.choose(small, &[2]), Some(0));
        // A pull under way is in the room reported: not promised again.
        let ws2 = {
            let mut w = worker(4, 16);
            w.cache_room_bytes = Some(6 * G);
            vec![w]
        };
        let mut f2 = Fleet::new(&ws2, &[]);
        let mut pulling = replica_on(&ws2[0]);
        pulling.status = "pulling".into();
        f2.promised(&pulling, need);
        assert_eq!(f2.disk_left[0], 6 * G);
        assert_eq!(f2.left[0], 15 * G);
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
