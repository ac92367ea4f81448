//! The control-plane client: register with the hub, heartbeat, long-poll the desired set
//! of assignments and reconcile the registry with it (pull, load, unload). Robust by
//! construction: every call retries with backoff, a 404 re-registers, and a bad
//! assignment only ever marks its own slot `failed` with a message.

pub mod wire;

use crate::engine::{EngineConfig, Model};
use crate::http::GatewayAuth;
use crate::pull::{DownloadHook, Downloaded, Early, PullRequest, Puller};
use crate::registry::{ModelRegistry, Slot, SlotStatus};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use wire::*;

/// Failures talking to the hub.
#[derive(Debug, Error)]
pub enum ControlError {
    #[error(
        "the hub rejected the worker token (HTTP {0}); pass --token / HUB_WORKER_TOKEN with a \
         token of scope `worker`"
    )]
    Rejected(u16),
    #[error("the hub does not know this worker (HTTP 404); re-registering")]
    Gone,
    #[error("the hub answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot reach the hub: {0}")]
    Transport(String),
    #[error("unexpected answer from the hub: {0}")]
    Decode(String),
}

pub use hub_types::control::TokenRefresh;

/// Everything the control loop needs.
pub struct ControlContext {
    pub hub_url: String,
    pub token: String,
    /// Where a fresh token comes from when the hub rejects `token` (None: a
    /// rejection is final).
    pub token_refresh: Option<TokenRefresh>,
    pub name: String,
    pub public_url: String,
    pub capacity: Capacity,
    pub registry: Arc<ModelRegistry>,
    pub auth: Arc<GatewayAuth>,
    pub puller: Puller,
    /// Defaults for loaded models; assignments may override batch tokens and concurrency.
    pub engine: EngineConfig,
    /// Long-poll wait the worker asks for.
    pub wait_s: u64,
    /// Pulls/loads running at once.
    pub load_slots: Arc<Semaphore>,
    /// Opens when the engine runtime fetched at start-up is ready or has failed
    /// (`runtime_fetch`); loads wait for it so they pick the engine the worker keeps.
    pub engines_ready: crate::runtime_fetch::Gate,
    /// Wakes the heartbeat loop early (a model changed state).
    pub changed: Arc<Notify>,
    /// The registration, for the job runner (`finetune::runner`).
    pub registration: SharedRegistration,
}

/// The hub's control-plane client: the worker token, refreshed once when the hub
/// rejects it. Also used by the job runner (`finetune::runner`).
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) hub: String,
    token: std::sync::RwLock<String>,
    refresh: Option<TokenRefresh>,
}

impl Client {
    pub(crate) fn new(
        hub: &str,
        token: &str,
        refresh: Option<TokenRefresh>,
    ) -> Result<Client, ControlError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Dropped before the hub would close it (reqwest keeps one 90 s).
            .pool_idle_timeout(hub_types::control::SERVER_KEEP_ALIVE / 2)
            .user_agent(concat!("paddock-hub-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        Ok(Client {
            http,
            hub: hub.trim_end_matches('/').to_string(),
            token: std::sync::RwLock::new(token.to_string()),
            refresh,
        })
    }

    /// Sends a call; when the hub rejects the token and a refresh is
    /// available, takes a fresh token and sends the call once more.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, ControlError> {
        let again = req.try_clone();
        match self.send(req, timeout).await {
            Err(ControlError::Rejected(status)) => {
                let (Some(refresh), Some(again)) = (&self.refresh, again) else {
                    return Err(ControlError::Rejected(status));
                };
                match refresh().await {
                    Ok(fresh) => {
                        tracing::info!(
                            status,
                            "the hub rejected the worker token; retrying with a fresh one"
                        );
                        *self.token.write().expect("token lock") = fresh;
                        self.send(again, timeout).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not get a fresh worker token");
                        Err(ControlError::Rejected(status))
                    }
                }
            }
            other => other,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, ControlError> {
        let token = self.token.read().expect("token lock").clone();
        let resp = req
            .bearer_auth(token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        let status = resp.status();
        match status {
            s if s.is_success() => resp
                .json::<T>()
                .await
                .map_err(|e| ControlError::Decode(e.to_string())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(ControlError::Rejected(status.as_u16()))
            }
            StatusCode::NOT_FOUND => Err(ControlError::Gone),
            _ => {
                let body = resp.text().await.unwrap_or_default();
                Err(ControlError::Status {
                    status: status.as_u16(),
                    body: body.chars().take(300).collect(),
                })
            }
        }
    }

    async fn register(&self, body: &RegisterRequest) -> Result<RegisterResponse, ControlError> {
        let url = format!("{}/api/v1/workers/register", self.hub);
        self.call(self.http.post(url).json(body), Duration::from_secs(15))
            .await
    }

    async fn heartbeat(
        &self,
        reg: &RegisterResponse,
        body: &Heartbeat,
    ) -> Result<(), ControlError> {
        let url = format!("{}/api/v1/workers/{}/heartbeat", self.hub, reg.worker_id);
        let req = self
            .http
            .post(url)
            .header(
                hub_types::control::WORKER_SECRET_HEADER,
                &reg.gateway_secret,
            )
            .json(body);
        let _: HeartbeatResponse = self.call(req, Duration::from_secs(15)).await?;
        Ok(())
    }

    async fn assignments(
        &self,
        reg: &RegisterResponse,
        version: i64,
        wait_s: u64,
    ) -> Result<RawAssignments, ControlError> {
        let url = format!("{}/api/v1/workers/{}/assignments", self.hub, reg.worker_id);
        let req = self
            .http
            .get(url)
            .header(
                hub_types::control::WORKER_SECRET_HEADER,
                &reg.gateway_secret,
            )
            .query(&AssignmentsQuery {
                version,
                wait_s: Some(wait_s),
            });
        self.call(req, Duration::from_secs(wait_s + 15)).await
    }
}

/// A worker's registration as its job runner (`finetune::runner`) needs it:
/// the hub binds a fine-tuning job's claim to a registered worker, proved by
/// the registration's `gateway_secret` in `X-Paddock-Worker-Secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) worker_id: String,
    pub(crate) secret: String,
}

/// The control loop's current registration, shared with the same worker's job runner
/// (`hub_worker::run` hands one to each): `None` before the loop registers and after it
/// ends.
#[derive(Debug, Clone, Default)]
pub struct SharedRegistration(Arc<std::sync::Mutex<Option<Registration>>>);

impl SharedRegistration {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Registration>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registration the control loop holds now.
    pub(crate) fn current(&self) -> Option<Registration> {
        self.lock().clone()
    }

    /// Publishes a new registration; the returned guard withdraws it when dropped (the
    /// loop ended), unless a newer one replaced it.
    pub(crate) fn publish(&self, reg: &RegisterResponse) -> Published {
        let r = Registration {
            worker_id: reg.worker_id.clone(),
            secret: reg.gateway_secret.clone(),
        };
        *self.lock() = Some(r.clone());
        Published {
            shared: self.clone(),
            current: r,
        }
    }
}

/// A registration published by [`SharedRegistration::publish`].
pub(crate) struct Published {
    shared: SharedRegistration,
    current: Registration,
}

impl Drop for Published {
    fn drop(&mut self) {
        let mut now = self.shared.lock();
        if now.as_ref() == Some(&self.current) {
            *now = None;
        }
    }
}

/// Exponential backoff with jitter: 250 ms doubling up to 15 s.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(6)).min(15_000);
    Duration::from_millis(base + rand::random::<u64>() % (base / 4 + 1))
}

/// Sleeps unless cancelled; returns false when cancelled.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

/// Runs the control loop until `cancel`. Returns an error only when retrying cannot
/// help (the hub rejects the worker token).
pub async fn run(ctx: Arc<ControlContext>, cancel: CancellationToken) -> Result<(), ControlError> {
    let client = Client::new(&ctx.hub_url, &ctx.token, ctx.token_refresh.clone())?;
    let request = RegisterRequest {
        name: ctx.name.clone(),
        url: ctx.public_url.clone(),
        capacity: ctx.capacity.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut _published = None;
    loop {
        let mut attempt = 0;
        let reg = loop {
            match client.register(&request).await {
                Ok(r) => break r,
                Err(e @ ControlError::Rejected(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "worker registration failed; retrying");
                    if !pause(backoff(attempt), &cancel).await {
                        return Ok(());
                    }
                    attempt += 1;
                }
            }
        };
        ctx.auth.set_secret(&reg.gateway_secret);
        _published = Some(ctx.registration.publish(&reg));
        tracing::info!(worker.id = %reg.worker_id, url = %ctx.public_url, "registered with the hub");
        let outcome = tokio::select! {
            r = heartbeat_loop(&ctx, &client, &reg) => r,
            r = assignments_loop(&ctx, &client, &reg, &cancel) => r,
            _ = cancel.cancelled() => return Ok(()),
        };
        match outcome {
            Err(e @ ControlError::Rejected(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "control loop restarting"),
            Ok(()) => return Ok(()),
        }
    }
}

/// The heartbeat body from the registry, with the cache's room (`BlobCache::room`).
pub fn heartbeat_body(registry: &ModelRegistry, cache_room: Option<u64>) -> Heartbeat {
    Heartbeat {
        free_memory_bytes: crate::host::mem_available_bytes().unwrap_or(0),
        cache_room_bytes: cache_room,
        models: registry
            .reports()
            .into_iter()
            .map(|r| HeartbeatModel {
                assignment_id: r.assignment_id,
                status: r.status.as_str().to_string(),
                message: r.message,
                in_flight: r.stats.in_flight,
                queue_depth: r.stats.queue_depth,
            })
            .collect(),
    }
}

async fn heartbeat_loop(
    ctx: &ControlContext,
    client: &Client,
    reg: &RegisterResponse,
) -> Result<(), ControlError> {
    let interval = Duration::from_secs(reg.heartbeat_interval_s.clamp(1, 300));
    let mut failures = 0u32;
    let mut room = CacheRoom::default();
    loop {
        let cache_room = room.get(ctx.puller.cache());
        match client
            .heartbeat(reg, &heartbeat_body(&ctx.registry, cache_room))
            .await
        {
            Ok(()) => failures = 0,
            Err(e @ (ControlError::Gone | ControlError::Rejected(_))) => return Err(e),
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "heartbeat failed");
            }
        }
        let wait = if failures > 0 {
            backoff(failures).min(interval)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.changed.notified() => {
                // A pull finished or a model was dropped: the room moved.
                room.stale = true;
                // Coalesce bursts of state changes into one heartbeat (short: a
                // model turning ready waits on this to be routed to).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The cache's room as the heartbeats report it: measured (a scan of the cache under its
/// lock) on a blocking thread at most every [`CacheRoom::EVERY`] and after a model changed
/// state (a pull finished or a model was dropped, which is when the room moves). A heartbeat
/// never waits for it: it reports the last figure, so a pull or an eviction holding the
/// cache lock cannot make the worker miss its heartbeats.
#[derive(Default)]
struct CacheRoom {
    last: Arc<std::sync::Mutex<Option<u64>>>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    started: Option<std::time::Instant>,
    /// A model changed state since the last measure started.
    stale: bool,
}

impl CacheRoom {
    const EVERY: Duration = Duration::from_secs(30);

    fn get(&mut self, cache: &crate::pull::cache::BlobCache) -> Option<u64> {
        use std::sync::atomic::Ordering::AcqRel;
        let due = self.stale || self.started.is_none_or(|at| at.elapsed() >= Self::EVERY);
        if due && !self.measuring.swap(true, AcqRel) {
            let (c, last, measuring) = (cache.clone(), self.last.clone(), self.measuring.clone());
            tokio::task::spawn_blocking(move || {
                let room = c.room().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "measuring the model cache's room failed");
                    None
                });
                *last.lock().unwrap_or_else(|e| e.into_inner()) = room;
                measuring.store(false, std::sync::atomic::Ordering::Release);
            });
            self.started = Some(std::time::Instant::now());
            self.stale = false;
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn assignments_loop(
    ctx: &Arc<ControlContext>,
    client: &Client,
    reg: &RegisterResponse,
    cancel: &CancellationToken,
) -> Result<(), ControlError> {
    let mut version = 0i64;
    let mut failures = 0u32;
    loop {
        let started = std::time::Instant::now();
        match client.assignments(reg, version, ctx.wait_s).await {
            Ok(resp) => {
                failures = 0;
                let unchanged = resp.version == version;
                version = resp.version;
                let desired: Vec<Desired> = resp
                    .assignments
                    .iter()
                    .filter_map(|v| {
                        let d = parse_assignment(v);
                        if d.is_none() {
                            tracing::warn!(item = %v, "assignment without an assignment_id ignored");
                        }
                        d
                    })
                    .collect();
                reconcile(ctx, &desired);
                // A hub that answers at once without waiting must not make us spin.
                if unchanged
                    && started.elapsed() < Duration::from_secs(1)
                    && !pause(Duration::from_secs(1), cancel).await
                {
                    return Ok(());
                }
            }
            Err(e @ (ControlError::Gone | ControlError::Rejected(_))) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, failures, "assignment poll failed");
                if !pause(backoff(failures), cancel).await {
                    return Ok(());
                }
                failures += 1;
            }
        }
    }
}

/// Makes the registry match `desired`: unloads what is gone or changed, starts what is new.
pub fn reconcile(ctx: &Arc<ControlContext>, desired: &[Desired]) {
    let wanted: HashMap<&str, &Desired> = desired.iter().map(|a| (a.id(), a)).collect();
    for id in ctx.registry.assignment_ids() {
        let keep = match (wanted.get(id.as_str()), ctx.registry.get(&id)) {
            (Some(a), Some(slot)) => slot.fingerprint == a.fingerprint(),
            _ => false,
        };
        if !keep {
            tracing::info!(assignment.id = %id, "unloading assignment");
            ctx.registry.remove(&id);
            ctx.changed.notify_one();
        }
    }
    for d in desired {
        if ctx.registry.get(d.id()).is_some() {
            continue;
        }
        match d {
            Desired::Valid(a) => start(ctx, a.clone()),
            Desired::Invalid {
                assignment_id,
                model_key,
                error,
            } => {
                tracing::warn!(assignment.id = %assignment_id, %error, "invalid assignment");
                ctx.registry.upsert(Slot {
                    assignment_id: assignment_id.clone(),
                    model_key: model_key.clone(),
                    served_name: String::new(),
                    fingerprint: d.fingerprint(),
                    status: SlotStatus::Failed,
                    message: Some(format!("invalid assignment: {error}")),
                    model: None,
                });
                ctx.changed.notify_one();
            }
        }
    }
}

fn start(ctx: &Arc<ControlContext>, a: Assignment) {
    let fingerprint = a.fingerprint();
    ctx.registry.upsert(Slot {
        assignment_id: a.assignment_id.clone(),
        model_key: a.model_key.clone(),
        served_name: a.repo_id.clone(),
        fingerprint: fingerprint.clone(),
        status: SlotStatus::Pulling,
        message: None,
        model: None,
    });
    ctx.changed.notify_one();
    tracing::info!(assignment.id = %a.assignment_id, repo.id = %a.repo_id, "assignment noticed");
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let id = a.assignment_id.clone();
        let started = std::time::Instant::now();
        let result = load_assignment(&ctx, &a, &fingerprint).await;
        if result.is_ok() {
            tracing::info!(
                assignment.id = %id,
                repo.id = %a.repo_id,
                duration_ms = started.elapsed().as_millis() as u64,
                "assignment ready"
            );
        }
        let (status, message, model) = match result {
            Ok(model) => (SlotStatus::Running, None, Some(model)),
            Err(msg) => {
                tracing::warn!(assignment.id = %id, repo.id = %a.repo_id, error = %msg, "assignment failed");
                (SlotStatus::Failed, Some(msg), None)
            }
        };
        ctx.registry
            .set_status(&id, &fingerprint, status, message, model);
        ctx.changed.notify_one();
    });
}

async fn load_assignment(
    ctx: &ControlContext,
    a: &Assignment,
    fingerprint: &str,
) -> Result<Model, String> {
    if a.repo_type != "model" {
        return Err(format!(
            "repo type {:?} cannot be served (models only)",
            a.repo_type
        ));
    }
    let task = a.task;
    if a.model_key.is_empty() || a.model_key.contains('/') {
        return Err(format!(
            "model_key {:?} is not a single path segment",
            a.model_key
        ));
    }
    ctx.engines_ready.wait().await;
    let mut cfg = ctx.engine.clone();
    cfg.precision = a.precision.unwrap_or_default();
    // Refused before any weights are pulled.
    crate::engine::check_precision(&cfg).map_err(|e| e.to_string())?;
    let _slot = ctx
        .load_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| "worker is shutting down".to_string())?;
    // The assignment may have been withdrawn while we waited.
    if ctx
        .registry
        .get(&a.assignment_id)
        .is_none_or(|s| s.fingerprint != fingerprint)
    {
        return Err("assignment withdrawn".to_string());
    }
    let pull_started = std::time::Instant::now();
    // The load's first step on a weight file (the GGUF probe child) starts as the
    // file's download ends, beside its hashing and fsync.
    let on_download: DownloadHook = {
        let cfg = cfg.clone();
        Arc::new(move |d: &Downloaded<'_>| {
            crate::engine::load::on_download(d.repo_path, d.files, d.file, d.blob, &cfg)
                .map(Early::new)
        })
    };
    let pulled = ctx
        .puller
        .pull(
            &PullRequest {
                repo_id: a.repo_id.clone(),
                revision: a.revision.clone(),
                token: a.pull_token.clone(),
                on_download: Some(on_download),
            },
            crate::host::mem_available_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        assignment.id = %a.assignment_id,
        repo.id = %a.repo_id,
        duration_ms = pull_started.elapsed().as_millis() as u64,
        downloaded = pulled.downloaded.len(),
        rehashed = pulled.rehashed.len(),
        "pulled"
    );
    if !ctx.registry.set_status(
        &a.assignment_id,
        fingerprint,
        SlotStatus::Loading,
        None,
        None,
    ) {
        return Err("assignment withdrawn".to_string());
    }
    ctx.changed.notify_one();
    if let Some(t) = a.max_batch_tokens {
        cfg.max_batch_tokens = t.clamp(1, 1 << 24) as usize;
    }
    if let Some(c) = a.max_concurrent {
        cfg.max_concurrent = c.max(1) as usize;
    }

    let dir = pulled.dir.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&dir, Some(task), &cfg))
        .await
        .map_err(|e| format!("model load panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    // The model's files stay pinned (safe from eviction) for as long as the model lives:
    // in the registry, and in any request still running after it is unloaded.
    model.keep_alive(Box::new(pulled.pin));
    // Whatever of the early work the load did not take over stops here.
    drop(pulled.early);
    Ok(model)
}
