//! The worker control plane: register, heartbeat (status of each replica),
//! and long-poll for assignments. Callers need the `worker` scope. The
//! bodies and answers are the shared contract of `hub_types::control`.

use crate::auth::{Auth, Scope};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::routes::body::{BodyError, JsonBody};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use hub_types::control::{
    Assignment, AssignmentsQuery, AssignmentsResponse, Heartbeat, HeartbeatResponse,
    RegisterRequest, RegisterResponse,
};
use hub_types::{Precision, ReplicaStatus, Task};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A worker's registration or heartbeat that the hub refuses (400 `validation_failed`).
#[derive(Debug, thiserror::Error)]
pub enum WorkerReportError {
    #[error("url: {0}")]
    Url(String),
    #[error("url must be an http(s) URL with a host, and no user, password, query or fragment")]
    UrlScheme,
    #[error("name (1-200 chars) and capacity.cores > 0 are required")]
    NameOrCores,
    #[error(transparent)]
    Status(hub_types::UnknownReplicaStatus),
    #[error("send the job's claim id in the X-Job-Claim header")]
    JobClaim,
    #[error("a result file must declare its Content-Length (at most {0} bytes)")]
    JobFileSize(u64),
    #[error("send worker_id (this worker's registration) and its gateway_secret in X-Paddock-Worker-Secret to claim a job")]
    JobWorker,
}

/// How often workers heartbeat; a worker silent for 3 intervals is lost.
pub const HEARTBEAT_S: u64 = 2;
/// How long pull tokens handed to workers live.
const PULL_TOKEN_TTL_S: i64 = 3600;

/// That the caller is the worker `id` registered: the `gateway_secret` its
/// registration returned, in [`hub_types::control::WORKER_SECRET_HEADER`]
/// (compared in constant time). 404 for an unknown worker (the worker
/// registers again), 403 for a missing or wrong secret.
pub(crate) async fn require_this_worker(
    state: &AppState,
    req: &actix_web::HttpRequest,
    id: Uuid,
) -> ApiResult<db::endpoints::WorkerRow> {
    let w = db::endpoints::worker(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("worker"))?;
    let sent = req
        .headers()
        .get(hub_types::control::WORKER_SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::auth::secrets::constant_time_eq(sent, w.gateway_secret.as_bytes()) {
        return Err(ApiError::Forbidden(format!(
            "send the gateway_secret this worker's registration returned in {}",
            hub_types::control::WORKER_SECRET_HEADER
        )));
    }
    Ok(w)
}

pub(crate) fn require_worker(auth: &Auth) -> ApiResult<()> {
    let p = auth.require()?;
    if !p.has_scope(Scope::Worker) {
        return Err(ApiError::Forbidden(
            "the worker control plane needs a token with the worker scope".into(),
        ));
    }
    Ok(())
}

/// Registers a worker (token scope `worker`).
#[utoipa::path(post, path = "/api/v1/workers/register", tag = "workers", request_body = RegisterRequest,
    responses((status = 200, description = "`{worker_id, heartbeat_interval_s, gateway_secret}`", body = serde_json::Value)))]
pub async fn register(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    let url = url::Url::parse(&body.url).map_err(|e| WorkerReportError::Url(e.to_string()))?;
    // The gateway appends `/models/{replica}/...` to this URL's path: a
    // query or fragment would swallow that suffix (every call would go to the
    // URL as registered), and credentials in it would be sent nowhere.
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(WorkerReportError::UrlScheme.into());
    }
    if body.name.is_empty() || body.name.len() > 200 || body.capacity.cores == 0 {
        return Err(WorkerReportError::NameOrCores.into());
    }
    let secret: [u8; 32] = rand::random();
    let w = db::endpoints::WorkerRow {
        id: Uuid::new_v4(),
        name: body.name.clone(),
        url: body.url.trim_end_matches('/').to_string(),
        gateway_secret: hex::encode(secret),
        memory_bytes: body.capacity.memory_bytes.min(i64::MAX as u64) as i64,
        free_memory_bytes: body.capacity.memory_bytes.min(i64::MAX as u64) as i64,
        cores: body.capacity.cores.min(4096) as i32,
        last_heartbeat: chrono::Utc::now(),
        assign_version: 1,
        cache_room_bytes: None,
    };
    db::endpoints::insert_worker(&state.db, &w, &body.version).await?;
    tracing::info!(worker.id = %w.id, worker.name = %w.name, worker.url = %w.url, "worker registered");
    state.scheduler.nudge();
    Ok(HttpResponse::Ok().json(RegisterResponse {
        worker_id: w.id.to_string(),
        heartbeat_interval_s: HEARTBEAT_S,
        gateway_secret: w.gateway_secret,
    }))
}

/// A worker's heartbeat with the status of each of its replicas.
#[utoipa::path(post, path = "/api/v1/workers/{id}/heartbeat", tag = "workers", request_body = Heartbeat,
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses((status = 200, description = "`{ok: true}`", body = serde_json::Value)))]
pub async fn heartbeat(
    state: web::Data<AppState>,
    auth: Auth,
    req: actix_web::HttpRequest,
    path: web::Path<Uuid>,
    JsonBody(body): JsonBody<Heartbeat>,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    let id = path.into_inner();
    require_this_worker(&state, &req, id).await?;
    // Replica ids are UUIDs here; one that is not makes the body malformed.
    let replicas = body
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Uuid::parse_str(&m.assignment_id)
                .map_err(|e| BodyError::JsonField(format!("models[{i}].assignment_id: {e}")).into())
        })
        .collect::<ApiResult<Vec<Uuid>>>()?;
    if !db::endpoints::heartbeat(
        &state.db,
        id,
        body.free_memory_bytes.min(i64::MAX as u64) as i64,
        body.cache_room_bytes.map(|b| b.min(i64::MAX as u64) as i64),
    )
    .await?
    {
        return Err(ApiError::NotFound("worker"));
    }
    let mut changed = false;
    for (m, replica) in body.models.iter().zip(replicas) {
        let status = ReplicaStatus::parse(&m.status).map_err(WorkerReportError::Status)?;
        let msg = m
            .message
            .as_deref()
            .map(|s| s.chars().take(1000).collect::<String>());
        db::endpoints::update_replica(
            &state.db,
            replica,
            id,
            status.as_str(),
            msg.as_deref(),
            m.in_flight.min(1 << 20) as i32,
            m.queue_depth.min(1 << 20) as i32,
        )
        .await?;
        changed = true;
    }
    if changed {
        state.scheduler.nudge();
    }
    Ok(HttpResponse::Ok().json(HeartbeatResponse { ok: true }))
}

/// Long-polls a worker's desired set of replicas.
#[utoipa::path(get, path = "/api/v1/workers/{id}/assignments", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id"), AssignmentsQuery),
    responses((status = 200, description = "`{version, assignments}`", body = serde_json::Value)))]
pub async fn assignments(
    state: web::Data<AppState>,
    auth: Auth,
    req: actix_web::HttpRequest,
    path: web::Path<Uuid>,
    q: web::Query<AssignmentsQuery>,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    let id = path.into_inner();
    require_this_worker(&state, &req, id).await?;
    let wait = Duration::from_secs(q.wait_s.unwrap_or(25).min(60));
    let deadline = Instant::now() + wait;
    // Answers as soon as the version moves: a NOTIFY rings the long-polls
    // (`scheduler::ASSIGNMENTS_CHANNEL`); the re-read every second covers a
    // dropped listener connection.
    let worker = loop {
        let notified = state.scheduler.assignments_notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let w = db::endpoints::worker(&state.db, id)
            .await?
            .ok_or(ApiError::NotFound("worker"))?;
        let now = Instant::now();
        if w.assign_version != q.version || now >= deadline {
            break w;
        }
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_secs(1)), notified).await;
    };
    let mut items = Vec::new();
    for (replica, endpoint_id) in db::endpoints::assignments(&state.db, id).await? {
        let Some(e) = db::endpoints::by_id(&state.db, endpoint_id).await? else {
            continue;
        };
        if e.repo_id.is_none() {
            continue;
        }
        // The read-and-gate decision for the endpoint's weights, made again on
        // every poll: a creator whose access was withdrawn stops the endpoint.
        let weights = match crate::gating::endpoint_download(&state, &e).await {
            Ok(w) => w,
            Err(refused @ (ApiError::GatedRepo(_) | ApiError::RepoNotFound)) => {
                let msg = format!("the endpoint's creator may not download the model: {refused}");
                tracing::warn!(endpoint.id = e.id, replica.id = %replica, "{msg}");
                fail_replica(&state, replica, id, &msg).await?;
                continue;
            }
            Err(other) => return Err(other),
        };
        // Endpoint creation only stores names these parse; a row that does not
        // (edited by hand) fails its replica instead of the whole poll.
        let parsed = match (Task::parse(&e.task), Precision::parse(&e.precision)) {
            (Ok(task), Ok(precision)) => Ok((task, precision)),
            (Err(err), _) => Err(err.to_string()),
            (_, Err(err)) => Err(err.to_string()),
        };
        let (task, precision) = match parsed {
            Ok(names) => names,
            Err(msg) => {
                tracing::warn!(endpoint.id = e.id, replica.id = %replica, "{msg}");
                fail_replica(&state, replica, id, &msg).await?;
                continue;
            }
        };
        let pull_token =
            crate::auth::service_tokens::pull_token(&state, &weights, PULL_TOKEN_TTL_S).await?;
        items.push(Assignment {
            assignment_id: replica.to_string(),
            model_key: replica.to_string(),
            repo_type: e.repo_type,
            repo_id: e.repository,
            revision: e.commit_oid,
            task,
            pull_token,
            max_batch_tokens: None,
            max_concurrent: None,
            precision: Some(precision),
        });
    }
    Ok(HttpResponse::Ok().json(AssignmentsResponse {
        version: worker.assign_version,
        assignments: items,
    }))
}

/// Marks a replica `failed` with `msg` (the worker is not sent it) and wakes the
/// scheduler.
async fn fail_replica(state: &AppState, replica: Uuid, worker: Uuid, msg: &str) -> ApiResult<()> {
    let failed = ReplicaStatus::Failed.as_str();
    db::endpoints::update_replica(&state.db, replica, worker, failed, Some(msg), 0, 0).await?;
    state.scheduler.nudge();
    Ok(())
}
