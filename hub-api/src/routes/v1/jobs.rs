//! `/api/v1/jobs/{ns}[/{id}[/logs|/cancel]]`: fine-tuning jobs of a namespace
//! (`crate::jobs`). Jobs are compute in the namespace, decided like its
//! endpoints: members read them (`ReadEndpoints`), the write role creates and
//! cancels them (`ManageEndpoints`); outsiders get the 404 of a missing one.
//! A job's base model and dataset are named only to callers who may read
//! them (and to its creator): another namespace's private repo stays hidden
//! from the other members (`crate::jobs::Shown`).

use crate::auth::access::{self, Access, Action, Standing};
use crate::auth::Auth;
use crate::db;
use crate::domain::{RepoId, RepoName, RepoType};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobSpecError, Shown, Viewer, DEFAULT_WALL_S, MAX_WALL_S, MIN_WALL_S};
use crate::registry;
use crate::routes::body::BodyError;
use crate::routes::body::JsonBody;
use crate::routes::inference::member_namespace;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use hub_types::jobs::{Hyperparameters, JobTask, RequestHyperparametersError};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobBody {
    /// What to train: `text-classification` (a new head on a BERT encoder,
    /// trained with it on the dataset's `text` and `label` columns) or
    /// `sentence-embedding` (the encoder, mean-pooled and normalised, trained on
    /// the dataset's `anchor` and `positive` sentence pairs with in-batch
    /// negatives; served as `feature-extraction`) or `causal-lm-lora` (LoRA
    /// adapters on a safetensors decoder: llama, mistral, qwen2, qwen3, gemma3;
    /// rows of `prompt` + `completion`, `messages` or `text`; committed merged,
    /// with the PEFT adapter under `adapter/`; served as `text-generation`).
    #[schema(pattern = "^(text-classification|sentence-embedding|causal-lm-lora)$")]
    task: String,
    /// The model repo to start from, `namespace/name`.
    base_model: String,
    /// Branch, tag or commit (default `main`); resolved to a commit now.
    #[serde(default)]
    base_revision: Option<String>,
    /// The dataset repo, `namespace/name`: its `train` split is trained on, its
    /// `test` split evaluated (CSV or JSON Lines files).
    dataset: String,
    /// Branch, tag or commit (default `main`); resolved to a commit now.
    #[serde(default)]
    dataset_revision: Option<String>,
    /// The model repo the result is committed to, in this namespace; created
    /// (with the namespace's default visibility) when it does not exist.
    output_repo: String,
    /// Training knobs; every field has a default (the learning rate's depends on
    /// the task).
    #[serde(default)]
    #[schema(value_type = Option<Hyperparameters>)]
    hyperparameters: Option<serde_json::Value>,
    /// Wall-time limit in seconds, counted from when a worker starts the job
    /// (5-86400, default 3600).
    #[schema(value_type = Option<i64>, minimum = 5, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    max_wall_seconds: Option<i64>,
}

/// The output repo: found (the caller must be able to write it) or created.
async fn output_repo(
    state: &AppState,
    auth: &Auth,
    ns: &db::namespaces::Namespace,
    id: &RepoId,
) -> ApiResult<db::repos::RepoRow> {
    let p = auth.require()?;
    if db::repos::find(&state.db, "model", &ns.name, id.name.as_str())
        .await?
        .is_some()
    {
        let ctx = registry::load_repo(state, auth, RepoType::Model, id, Access::Write).await?;
        return Ok(ctx.repo.clone());
    }
    let standing = Standing::load_namespace(&state.db, Some(p), ns, "namespace").await?;
    access::decide(Some(p), &standing, Action::CreateRepo)?;
    let name = RepoName::parse(id.name.as_str())?;
    let private = db::namespaces::private_by_default(&state.db, ns.id).await?;
    let full_id = format!("{}/{}", ns.name, name);
    let initial = registry::commit::InitialFiles::store(state, ns.id).await?;
    let created = crate::routes::hf::repos::insert_with_initial_commit(
        state,
        p,
        ns,
        name.as_str(),
        RepoType::Model,
        private,
        &full_id,
        &initial,
    )
    .await;
    if !matches!(created, Ok(Some(_))) {
        initial.release(state).await;
    }
    created?;
    // Created now, or by a concurrent request: either way it is there.
    db::repos::find(&state.db, "model", &ns.name, name.as_str())
        .await?
        .ok_or(ApiError::RepoNotFound)
}

/// Queues a fine-tuning job (base model and dataset resolved to commits now).
#[utoipa::path(post, path = "/api/v1/jobs/{ns}", tag = "jobs", request_body = CreateJobBody,
    params(("ns" = String, Path, description = "Namespace (user or organization) the job runs in")),
    responses((status = 201, description = "The job", body = serde_json::Value),
              (status = 400, description = "`invalid_job`: the message says which field and why", body = super::ErrorDto),
              (status = 429, description = "`job_quota_exceeded`: the namespace's daily CPU-seconds are spent", body = super::ErrorDto)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    JsonBody(body): JsonBody<CreateJobBody>,
) -> ApiResult<HttpResponse> {
    let (ns, p) =
        member_namespace(&state, &auth, &path.into_inner(), Action::ManageEndpoints).await?;
    let task = JobTask::parse(&body.task).map_err(JobSpecError::Task)?;
    let hp = Hyperparameters::from_request(task, body.hyperparameters.clone()).map_err(
        |e| -> ApiError {
            match e {
                RequestHyperparametersError::Json(e) => {
                    BodyError::JsonField(format!("hyperparameters: {e}")).into()
                }
                RequestHyperparametersError::Bad(b) => JobSpecError::Hyperparameter(b).into(),
            }
        },
    )?;
    let wall = body.max_wall_seconds.unwrap_or(DEFAULT_WALL_S);
    if !(MIN_WALL_S..=MAX_WALL_S).contains(&wall) {
        return Err(JobSpecError::WallTime.into());
    }
    let out_id = RepoId::parse(&body.output_repo)?;
    if out_id.namespace_key() != ns.name {
        return Err(JobSpecError::OutputNamespace(ns.name.clone()).into());
    }
    // The base model and the dataset are read like downloads (gated repos need
    // an accepted request), at a commit fixed now.
    let base_id = RepoId::parse(&body.base_model)?;
    let base =
        crate::gating::load_repo_for_download(&state, &auth, RepoType::Model, &base_id).await?;
    let base_repo = base.repo().clone();
    let base_rev = body
        .base_revision
        .as_deref()
        .unwrap_or(registry::DEFAULT_BRANCH);
    let base_commit = registry::resolve_str(&state, base_repo.id, base_rev)
        .await?
        .commit;
    // A LoRA job's base (a decoder family, safetensors rather than GGUF) is
    // judged by the worker, which ends the job with the reason.
    if task != JobTask::CausalLmLora {
        let files = db::git::list_recursive(&state.db, &base_commit.tree_oid, "").await?;
        let has =
            |pred: &dyn Fn(&str) -> bool| files.iter().any(|e| e.blob.is_some() && pred(&e.path));
        if !has(&|p| p == "config.json")
            || !has(&|p| !p.contains('/') && p.ends_with(".safetensors"))
        {
            return Err(JobSpecError::BaseWeights(base_repo.full_id()).into());
        }
        let model_type = base_commit.config_info.0["model_type"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if model_type != "bert" {
            return Err(JobSpecError::BaseArchitecture {
                repo: base_repo.full_id(),
                model_type,
            }
            .into());
        }
    }
    let ds_id = RepoId::parse(&body.dataset)?;
    let ds =
        crate::gating::load_repo_for_download(&state, &auth, RepoType::Dataset, &ds_id).await?;
    let ds_repo = ds.repo().clone();
    let ds_rev = body
        .dataset_revision
        .as_deref()
        .unwrap_or(registry::DEFAULT_BRANCH);
    let ds_commit = registry::resolve_str(&state, ds_repo.id, ds_rev)
        .await?
        .commit;
    let (train, test) =
        crate::jobs::splits(&state, &ds_repo.full_id(), &ds_commit.tree_oid).await?;
    if out_id.name.as_str().eq_ignore_ascii_case(&base_repo.name) && base_repo.namespace == ns.name
    {
        return Err(JobSpecError::OutputIsBase.into());
    }
    crate::jobs::check_quota(&state, &ns.name, ns.id).await?;
    let out = output_repo(&state, &auth, &ns, &out_id).await?;

    let id = Uuid::new_v4();
    let hp_json = serde_json::to_value(&hp).map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    db::jobs::insert(
        &mut *tx,
        &db::jobs::NewJob {
            id,
            namespace_id: ns.id,
            created_by: p.user_id,
            task: task.as_str(),
            base_repo_id: base_repo.id,
            base_model: &base_repo.full_id(),
            base_revision: &base_commit.oid,
            dataset_repo_id: ds_repo.id,
            dataset: &ds_repo.full_id(),
            dataset_revision: &ds_commit.oid,
            train_files: &train,
            test_files: &test,
            hyperparameters: &hp_json,
            output_repo_id: out.id,
            output_repo: &out.full_id(),
            max_wall_seconds: wall as i32,
        },
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        ns.id,
        "job.created",
        &format!("job:{}/{id}", ns.name),
        json!({"task": task.as_str(), "base_model": base_repo.full_id(), "base_revision": base_commit.oid,
               "dataset": ds_repo.full_id(), "dataset_revision": ds_commit.oid, "output_repo": out.full_id()}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(job.id = %id, namespace = %ns.name, "fine-tuning job queued");
    let job = db::jobs::by_id(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    Ok(HttpResponse::Created().json(crate::jobs::to_json(&job, &Shown::all())))
}

/// A namespace's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs/{ns}", tag = "jobs",
    params(("ns" = String, Path, description = "Namespace"),
           ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Jobs per page (1-100, default 50)")),
    responses((status = 200, description = "`{items, next_cursor}`", body = serde_json::Value)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    q: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let (ns, _) =
        member_namespace(&state, &auth, &path.into_inner(), Action::ReadEndpoints).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(crate::routes::query::QueryError::LimitOutOfRange { limit, max: 100 }.into());
    }
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(parse_id(c)?),
        None => None,
    };
    let rows = db::jobs::list(&state.db, ns.id, cursor, limit + 1).await?;
    let next = (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].id.to_string());
    let mut viewer = Viewer::new(&state, auth.principal());
    let mut items = Vec::new();
    for j in rows.iter().take(limit as usize) {
        items.push(crate::jobs::to_json(j, &viewer.shown(j).await?));
    }
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next})))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A job id in a path: a job that cannot exist is a missing one.
fn parse_id(s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::NotFound("job"))
}

async fn load(
    state: &AppState,
    auth: &Auth,
    ns: &str,
    id: &str,
    action: Action,
) -> ApiResult<db::jobs::JobRow> {
    let (nsrow, _) = member_namespace(state, auth, ns, action).await?;
    let id = parse_id(id)?;
    db::jobs::by_id(&state.db, id)
        .await?
        .filter(|j| j.namespace_id == nsrow.id)
        .ok_or(ApiError::NotFound("job"))
}

/// One job: state, progress, metrics.
#[utoipa::path(get, path = "/api/v1/jobs/{ns}/{id}", tag = "jobs",
    params(("ns" = String, Path, description = "Namespace"), ("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = serde_json::Value)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ns, id) = path.into_inner();
    let j = load(&state, &auth, &ns, &id, Action::ReadEndpoints).await?;
    let shown = Viewer::new(&state, auth.principal()).shown(&j).await?;
    Ok(HttpResponse::Ok().json(crate::jobs::to_json(&j, &shown)))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// A job's log lines after `after` (a `seq`), oldest first.
#[utoipa::path(get, path = "/api/v1/jobs/{ns}/{id}/logs", tag = "jobs",
    params(("ns" = String, Path, description = "Namespace"), ("id" = String, Path, description = "Job id"),
           ("after" = Option<i64>, Query, description = "Lines after this `seq` (default 0)"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Lines per page (1-1000, default 500)")),
    responses((status = 200, description = "`{items: [{seq, at, line}], next_after}`", body = serde_json::Value)))]
pub async fn logs(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    q: web::Query<LogsQuery>,
) -> ApiResult<HttpResponse> {
    let (ns, id) = path.into_inner();
    let j = load(&state, &auth, &ns, &id, Action::ReadEndpoints).await?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(crate::routes::query::QueryError::LimitOutOfRange { limit, max: 1000 }.into());
    }
    let after = q.after.unwrap_or(0).max(0);
    let rows = db::jobs::logs(&state.db, j.id, after, limit).await?;
    let next = rows.last().map(|r| r.0).unwrap_or(after);
    // The worker's lines may name the base model and dataset.
    let shown = Viewer::new(&state, auth.principal()).shown(&j).await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|(seq, at, line)| json!({"seq": seq, "at": registry::hf_date(at), "line": shown.redact(&line)}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_after": next})))
}

/// Cancels a job: a queued one at once; a running one stops within a training
/// step of its worker's next report (every 2 s). 409 when it has ended.
#[utoipa::path(post, path = "/api/v1/jobs/{ns}/{id}/cancel", tag = "jobs",
    params(("ns" = String, Path, description = "Namespace"), ("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = serde_json::Value),
              (status = 409, description = "`conflict`: the job has ended", body = super::ErrorDto)))]
pub async fn cancel(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ns, id) = path.into_inner();
    let j = load(&state, &auth, &ns, &id, Action::ManageEndpoints).await?;
    if db::jobs::cancel(&state.db, j.id).await?.is_none() {
        return Err(ApiError::Conflict(format!(
            "the job has already ended ({})",
            j.state
        )));
    }
    crate::audit::record(
        &state.db,
        auth.principal(),
        j.namespace_id,
        "job.cancelled",
        &format!("job:{}/{}", j.namespace, j.id),
        json!({"state": j.state}),
    )
    .await?;
    let j = db::jobs::by_id(&state.db, j.id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    let shown = Viewer::new(&state, auth.principal()).shown(&j).await?;
    Ok(HttpResponse::Ok().json(crate::jobs::to_json(&j, &shown)))
}
