//! `/api/v1/job-runner/...`: the workers' side of fine-tuning jobs (`worker`
//! scope, like the control plane). A runner claims a job (a lease of
//! [`LEASE_S`] and a claim id, with pull tokens for the base model and the
//! dataset minted from the creator's read decision), reports progress (which
//! renews the lease and answers whether to stop), uploads the result files one
//! by one (stored as pending objects of the namespace), and finishes: the hub
//! commits the files to the output repo as the job's creator. Every call after
//! the claim names it in `X-Job-Claim`; a claim that no longer holds the job is
//! 409, so a runner whose lease lapsed cannot touch the job another one holds.
//!
//! A claim is made by a registered worker, as its heartbeats and assignment
//! polls are (`workers::require_this_worker`): the body names the worker and
//! `X-Paddock-Worker-Secret` carries its registration's `gateway_secret`. The
//! job records the worker and the secret's SHA-256, and every later call of
//! the claim must send the same secret (403 otherwise): a worker credential
//! alone, or with another worker's id, or a claim id that leaked, neither
//! claims nor reports.

use super::workers::{require_this_worker, require_worker, WorkerReportError};
use crate::auth::access::{self, Action, Standing};
use crate::auth::principal::{Credential, Principal};
use crate::auth::Auth;
use crate::db;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::registry::commit::{self, AddContent, CommitInput, Op};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use crate::sweeper::{self, Pending};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use hub_types::jobs::{
    ClaimRequest, ClaimResponse, Finish, FinishAnswer, Hyperparameters, JobSpec, JobTask, Outcome,
    Progress, ProgressAnswer, RepoPull, StopReason, CLAIM_HEADER,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// How long a claim holds a job without a progress report.
pub const LEASE_S: i64 = 60;
/// How long the pull tokens of a claim live.
const PULL_TOKEN_TTL_S: i64 = 3600;
/// Largest result file.
const MAX_FILE_BYTES: u64 = 4 << 30;
/// Files the commit reads (kept in the row; at most 1 MiB).
const INTERPRETED: &[&str] = &["README.md", "config.json"];
/// Grace past the wall-time limit before the hub stops a job itself (the
/// worker stops it at the limit).
const WALL_GRACE_S: i64 = 30;

fn claim_of(req: &HttpRequest) -> ApiResult<Uuid> {
    req.headers()
        .get(CLAIM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .ok_or_else(|| WorkerReportError::JobClaim.into())
}

fn lost() -> ApiError {
    ApiError::Conflict("this claim no longer holds the job".into())
}

/// The running job `id` held by the request's claim (`X-Job-Claim`; 409 when
/// it no longer holds it), sent by the worker that made the claim: the
/// `X-Paddock-Worker-Secret` it claimed with (403 otherwise).
async fn held(
    state: &AppState,
    req: &HttpRequest,
    id: Uuid,
) -> ApiResult<(db::jobs::JobRow, Uuid)> {
    let claim = claim_of(req)?;
    let j = db::jobs::by_id(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    if j.state != "running" || j.claim != Some(claim) {
        return Err(lost());
    }
    let sent = req
        .headers()
        .get(hub_types::control::WORKER_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let proved = j.worker_secret_sha256.as_deref().is_some_and(|want| {
        crate::auth::secrets::constant_time_eq(&crate::auth::secrets::hash(sent), want)
    });
    if !proved {
        return Err(ApiError::Forbidden(format!(
            "send the gateway_secret of the worker that claimed this job in {}",
            hub_types::control::WORKER_SECRET_HEADER
        )));
    }
    Ok((j, claim))
}

/// A pull token for a repo the job reads, if its creator may still read it.
/// The token is bound to this claim ([`Grant::Job`]): it stops when the job
/// ends or another claim takes it, or when the creator loses the repo. The
/// refusal names no repo: the job's JSON shows its error to every member of
/// the namespace, who may not be allowed to learn another namespace's
/// private repo names (the field says which repo).
///
/// [`Grant::Job`]: crate::auth::grants::Grant::Job
async fn pull(
    state: &AppState,
    j: &db::jobs::JobRow,
    repo_id: Option<i64>,
    commit: &str,
    what: &str,
) -> Result<RepoPull, String> {
    let gone = || format!("the {what} was deleted or the job's creator may no longer read it");
    let repo_id = repo_id.ok_or_else(gone)?;
    let claim = j
        .claim
        .ok_or_else(|| "the job is not claimed".to_string())?;
    let grant = crate::auth::grants::Grant::Job { id: j.id, claim };
    let download =
        crate::gating::job_download(state, repo_id, j.namespace_id, j.created_by, grant)
            .await
            .map_err(|e| match e {
                ApiError::RepoNotFound => gone(),
                ApiError::GatedRepo(_) => format!(
                    "the job's creator may not download the {what}: it is gated and their access request is not accepted"
                ),
                e => format!("the {what}: {e}"),
            })?;
    let token = crate::auth::service_tokens::pull_token(state, &download, PULL_TOKEN_TTL_S)
        .await
        .map_err(|e| e.to_string())?;
    Ok(RepoPull {
        repo_id: download.repo().full_id(),
        revision: commit.to_string(),
        pull_token: token,
    })
}

async fn spec_for(state: &AppState, j: &db::jobs::JobRow) -> Result<JobSpec, String> {
    let task = JobTask::parse(&j.task).map_err(|e| e.to_string())?;
    let hyperparameters: Hyperparameters =
        serde_json::from_value(j.hyperparameters.clone()).map_err(|e| e.to_string())?;
    Ok(JobSpec {
        job_id: j.id.to_string(),
        claim: j.claim.map(|c| c.to_string()).unwrap_or_default(),
        task,
        base: pull(state, j, j.base_repo_id, &j.base_revision, "base model").await?,
        dataset: pull(state, j, j.dataset_repo_id, &j.dataset_revision, "dataset").await?,
        train_files: j.train_files.clone(),
        test_files: j.test_files.clone(),
        hyperparameters,
        output_repo: j.output_repo.clone(),
        max_wall_seconds: j.max_wall_seconds.max(1) as u64,
        lease_seconds: LEASE_S as u64,
    })
}

/// Claims the oldest due job, if any, for the registered worker `worker_id`
/// (its `gateway_secret` in `X-Paddock-Worker-Secret`).
#[utoipa::path(post, path = "/api/v1/job-runner/claim", tag = "workers",
    request_body = hub_types::jobs::ClaimRequest,
    responses((status = 200, description = "`{job}`: the job spec, or null when none is due", body = serde_json::Value),
              (status = 400, description = "`validation_failed`: no `worker_id`", body = crate::routes::v1::ErrorDto),
              (status = 403, description = "The worker's `gateway_secret` is missing or wrong", body = crate::routes::v1::ErrorDto),
              (status = 404, description = "No such worker: register again", body = crate::routes::v1::ErrorDto)))]
pub async fn claim(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    JsonBody(body): JsonBody<ClaimRequest>,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    if body.runner.is_empty() || body.runner.len() > 200 {
        return Err(WorkerReportError::NameOrCores.into());
    }
    let worker_id = body
        .worker_id
        .as_deref()
        .and_then(|w| Uuid::parse_str(w.trim()).ok())
        .ok_or(WorkerReportError::JobWorker)?;
    let worker = require_this_worker(&state, &req, worker_id).await?;
    let secret_sha256 = crate::auth::secrets::hash(&worker.gateway_secret);
    let claimer = db::jobs::Claimer {
        worker_id: worker.id,
        name: &worker.name,
        secret_sha256: &secret_sha256,
    };
    let settled = db::jobs::settle_lapsed(&state.db).await?;
    if settled > 0 {
        tracing::warn!(
            jobs = settled,
            "fine-tuning jobs whose runners went silent were ended"
        );
    }
    // A job that cannot be handed out (its repos deleted or no longer readable
    // by its creator) fails with the reason; the next due one is tried.
    for _ in 0..8 {
        let Some(id) = db::jobs::claim(&state.db, &claimer, LEASE_S).await? else {
            break;
        };
        // A job claimed again: the earlier claim's pull tokens stop everywhere.
        crate::signals::invalidate(&state, crate::signals::Invalidation::Job(id)).await;
        let Some(j) = db::jobs::by_id(&state.db, id).await? else {
            continue;
        };
        match spec_for(&state, &j).await {
            Ok(spec) => {
                tracing::info!(job.id = %id, worker.id = %worker.id, runner = %worker.name, attempt = j.attempts, "fine-tuning job claimed");
                return Ok(HttpResponse::Ok().json(ClaimResponse { job: Some(spec) }));
            }
            Err(msg) => {
                tracing::warn!(job.id = %id, "{msg}");
                let claim = j.claim.unwrap_or_default();
                end(
                    &state,
                    &j,
                    claim,
                    "failed",
                    Some(&msg),
                    0.0,
                    &j.metrics,
                    None,
                )
                .await?;
            }
        }
    }
    Ok(HttpResponse::Ok().json(ClaimResponse { job: None }))
}

/// Why a running job should stop now, if it should.
async fn stop_reason(state: &AppState, r: &db::jobs::Reported) -> ApiResult<Option<StopReason>> {
    if r.cancel_requested {
        return Ok(Some(StopReason::Cancelled));
    }
    if let Some(start) = r.started_at {
        let limit = chrono::TimeDelta::seconds(r.max_wall_seconds as i64 + WALL_GRACE_S);
        if chrono::Utc::now() - start > limit {
            return Ok(Some(StopReason::WallTime));
        }
    }
    let (used, limit) = crate::jobs::quota_today(state, r.namespace_id).await?;
    if limit.is_some_and(|l| used > l as f64) {
        return Ok(Some(StopReason::Quota));
    }
    Ok(None)
}

/// Metrics as stored: an object of at most 64 KiB.
fn bounded(m: serde_json::Map<String, Value>) -> Value {
    let v = Value::Object(m);
    if v.to_string().len() > 64 << 10 {
        json!({"error": "metrics over 64 KiB were dropped"})
    } else {
        v
    }
}

/// Progress of a claimed job; renews the lease and answers whether to stop.
#[utoipa::path(post, path = "/api/v1/job-runner/{id}/progress", tag = "workers",
    request_body = hub_types::jobs::Progress,
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, description = "`{stop}`: null, or cancelled / wall_time / quota", body = serde_json::Value),
              (status = 409, description = "The claim no longer holds the job", body = crate::routes::v1::ErrorDto)))]
pub async fn progress(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    req: HttpRequest,
    JsonBody(body): JsonBody<Progress>,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    let id = path.into_inner();
    let (_, claim) = held(&state, &req, id).await?;
    let cpu = if body.cpu_seconds.is_finite() {
        body.cpu_seconds.max(0.0)
    } else {
        0.0
    };
    let r = db::jobs::progress(
        &state.db,
        id,
        claim,
        body.step.min(i64::MAX as u64) as i64,
        body.total_steps.min(i64::MAX as u64) as i64,
        cpu,
        &bounded(body.metrics),
        LEASE_S,
    )
    .await?
    .ok_or_else(lost)?;
    let mut conn = state.db.acquire().await?;
    let lines: Vec<String> = body.logs.into_iter().take(500).collect();
    db::jobs::add_logs(&mut conn, id, &lines).await?;
    let stop = stop_reason(&state, &r).await?;
    Ok(HttpResponse::Ok().json(ProgressAnswer { stop }))
}

#[derive(Debug, serde::Deserialize)]
pub struct FileQuery {
    path: String,
}

/// Stores one result file of a claimed job (the whole file as the body).
#[utoipa::path(put, path = "/api/v1/job-runner/{id}/files", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Job id"), ("path" = String, Query, description = "Path in the output repo")),
    responses((status = 200, description = "`{path, sha256, size}`", body = serde_json::Value)))]
pub async fn put_file(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    q: web::Query<FileQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    let id = path.into_inner();
    let file = RepoPath::parse(&q.path)?;
    let (j, claim) = held(&state, &req, id).await?;
    let size: u64 = crate::routes::body::content_length(&req)
        .filter(|s| *s <= MAX_FILE_BYTES)
        .ok_or(WorkerReportError::JobFileSize(MAX_FILE_BYTES))?;
    let staged = state.storage.stage(payload, Some(size), None, true).await?;
    let (written, pending) = sweeper::store(&state, j.namespace_id, staged).await?;
    let small = crate::registry::files::read_small(&state, written.sha256.as_str(), size as i64)
        .await
        .ok()
        .flatten();
    let binary = small
        .as_ref()
        .map(|b| commit::looks_binary(b))
        .unwrap_or(true);
    let content = small
        .filter(|_| INTERPRETED.contains(&file.as_str()))
        .map(|b| b.to_vec());
    let row = db::jobs::JobFile {
        path: file.as_str().to_string(),
        pending_id: pending.id,
        sha256: written.sha256.to_string(),
        size: size as i64,
        git_oid: written.git_oid.clone().unwrap_or_default(),
        is_binary: binary,
        content,
    };
    let mut conn = state.db.acquire().await?;
    let replaced = db::jobs::put_file(&mut conn, id, claim, &row).await?;
    if let Some((pid, sha)) = replaced {
        if let Ok(sha256) = Sha256::parse(&sha) {
            sweeper::release(&state, &[Pending { id: pid, sha256 }]).await;
        }
    }
    Ok(HttpResponse::Ok().json(json!({"path": row.path, "sha256": row.sha256, "size": size})))
}

/// Ends a job: state, error, metrics; settles its uploaded files.
#[allow(clippy::too_many_arguments)]
async fn end(
    state: &AppState,
    j: &db::jobs::JobRow,
    claim: Uuid,
    job_state: &str,
    error: Option<&str>,
    cpu_seconds: f64,
    metrics: &Value,
    output_commit: Option<&str>,
) -> ApiResult<bool> {
    let done = db::jobs::finish(
        &state.db,
        j.id,
        claim,
        &db::jobs::Ending {
            state: job_state,
            error,
            cpu_seconds,
            metrics,
            output_commit,
        },
    )
    .await?;
    // The claim's pull tokens stop (`gating::recheck`) on every replica.
    crate::signals::invalidate(state, crate::signals::Invalidation::Job(j.id)).await;
    // Every uploaded file's pending object is given back: those the commit
    // claimed are referenced now and stay; the rest (a failed job's, or an
    // earlier claim's that the last one did not send again) are deleted
    // unless something else needs the bytes.
    let dropped = db::jobs::drop_files(&state.db, j.id).await?;
    let pending: Vec<Pending> = dropped
        .into_iter()
        .filter_map(|(id, sha)| {
            Sha256::parse(&sha)
                .ok()
                .map(|sha256| Pending { id, sha256 })
        })
        .collect();
    sweeper::release(state, &pending).await;
    tracing::info!(job.id = %j.id, state = job_state, error = ?error, "fine-tuning job ended");
    Ok(done)
}

/// The job's creator, acting for the commit (None: the account is gone).
async fn creator(state: &AppState, j: &db::jobs::JobRow) -> ApiResult<Option<Principal>> {
    let Some(uid) = j.created_by else {
        return Ok(None);
    };
    Ok(db::jobs::creator(&state.db, uid)
        .await?
        .map(|(name, fullname, is_admin)| Principal {
            user_id: uid,
            name,
            fullname,
            is_admin,
            // The creator's own rights, decided again below, as at creation.
            credential: Credential::Session {
                csrf: String::new(),
                expires_at: i64::MAX,
                version: None,
            },
        }))
}

/// Commits the uploaded files to the output repo; Err(message) when it cannot.
async fn commit_result(
    state: &AppState,
    j: &db::jobs::JobRow,
    claim: Uuid,
    paths: &[String],
) -> ApiResult<Result<String, String>> {
    let files = db::jobs::files(&state.db, j.id, claim).await?;
    for p in paths {
        if !files.iter().any(|f| &f.path == p) {
            return Ok(Err(format!("the result file {p} was not uploaded")));
        }
    }
    if files.is_empty() {
        return Ok(Err("the job uploaded no result files".into()));
    }
    let Some(p) = creator(state, j).await? else {
        return Ok(Err("the job's creator no longer exists".into()));
    };
    let Some(repo) = (match j.output_repo_id {
        Some(id) => db::repos::by_id(&state.db, id).await?,
        None => None,
    }) else {
        return Ok(Err(format!(
            "the output repo {} was deleted",
            j.output_repo
        )));
    };
    let standing = Standing::load_repo(&state.db, Some(&p), &repo).await?;
    if let Err(denied) = access::decide(Some(&p), &standing, Action::WriteRepo) {
        return Ok(Err(format!(
            "the job's creator may no longer write {}: {}",
            repo.full_id(),
            ApiError::from(denied)
        )));
    }
    let mut ops = Vec::new();
    for f in files {
        ops.push(Op::Add {
            path: RepoPath::parse(&f.path)?,
            content: AddContent::Inline {
                pending: Pending {
                    id: f.pending_id,
                    sha256: Sha256::parse(&f.sha256)?,
                },
                sha256: f.sha256,
                size: f.size as u64,
                git_oid: f.git_oid,
                binary: f.is_binary,
                bytes: f.content.map(Bytes::from),
            },
        });
    }
    let input = CommitInput {
        summary: format!("Fine-tune {} on {}", j.base_model, j.dataset),
        description: format!(
            "Paddock fine-tuning job {} ({}): base {}@{}, dataset {}@{}.",
            j.id, j.task, j.base_model, j.base_revision, j.dataset, j.dataset_revision
        ),
        parent: None,
        ops,
        idempotency_key: Some(format!("finetune-{}-{claim}", j.id)),
        merge_parent: None,
    };
    let branch = format!("refs/heads/{}", crate::registry::DEFAULT_BRANCH);
    match commit::commit(state, &repo, &branch, &p, input).await {
        Ok(c) => Ok(Ok(c.oid)),
        Err(e @ (ApiError::DatabaseUnavailable(_) | ApiError::StorageUnavailable(_))) => Err(e),
        Err(e) => Ok(Err(format!("committing the result failed: {e}"))),
    }
}

/// Ends a claimed job; a successful one is committed to its output repo first.
#[utoipa::path(post, path = "/api/v1/job-runner/{id}/finish", tag = "workers",
    request_body = hub_types::jobs::Finish,
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, description = "`{state, output_commit}`", body = serde_json::Value),
              (status = 409, description = "The claim no longer holds the job", body = crate::routes::v1::ErrorDto)))]
pub async fn finish(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    req: HttpRequest,
    JsonBody(body): JsonBody<Finish>,
) -> ApiResult<HttpResponse> {
    require_worker(&auth)?;
    let id = path.into_inner();
    let (j, claim) = held(&state, &req, id).await?;
    let mut conn = state.db.acquire().await?;
    let lines: Vec<String> = body.logs.iter().take(500).cloned().collect();
    db::jobs::add_logs(&mut conn, id, &lines).await?;
    drop(conn);
    let cpu = if body.cpu_seconds.is_finite() {
        body.cpu_seconds.max(0.0)
    } else {
        0.0
    };
    let metrics = bounded(body.metrics.clone());
    let clip = |s: &str| crate::error::clip(s, 2000);
    let (job_state, error, commit) = match body.outcome {
        Outcome::Succeeded => match commit_result(&state, &j, claim, &body.files).await? {
            Ok(oid) => ("succeeded", None, Some(oid)),
            Err(msg) => ("failed", Some(msg), None),
        },
        Outcome::Failed => (
            "failed",
            Some(clip(
                body.error
                    .as_deref()
                    .unwrap_or("the worker reported a failure"),
            )),
            None,
        ),
        Outcome::Stopped => match body.reason {
            Some(StopReason::Cancelled) | None => {
                ("cancelled", Some("cancelled".to_string()), None)
            }
            Some(StopReason::WallTime) => (
                "failed",
                Some(format!(
                    "the job ran past its wall-time limit of {} s",
                    j.max_wall_seconds
                )),
                None,
            ),
            Some(StopReason::Quota) => (
                "failed",
                Some(
                    "stopped: the namespace's daily fine-tuning CPU-seconds quota is spent".into(),
                ),
                None,
            ),
        },
    };
    if !end(
        &state,
        &j,
        claim,
        job_state,
        error.as_deref(),
        cpu,
        &metrics,
        commit.as_deref(),
    )
    .await?
    {
        return Err(lost());
    }
    Ok(HttpResponse::Ok().json(FinishAnswer {
        state: job_state.to_string(),
        output_commit: commit,
    }))
}
