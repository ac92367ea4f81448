//! `/api/v1/endpoints/{namespace}[/{name}[/pause|/resume]]`: create, read,
//! change, delete, pause and resume inference endpoints.

use super::member_namespace;
use crate::auth::access::Action;
use crate::auth::Auth;
use crate::db;
use crate::domain::{RepoId, RepoName, RepoType};
use crate::endpoints::{check_scaling, choose_task_for, to_json, EndpointSpecError, RepoSignals};
use crate::error::{ApiError, ApiResult};
use crate::registry;
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Endpoint name, unique in the namespace (the rules of repo names).
    #[schema(
        min_length = 1,
        max_length = 96,
        pattern = "^[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$"
    )]
    name: String,
    /// Model repo id, `namespace/name`.
    #[schema(
        pattern = "^([A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}/)?[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$"
    )]
    repository: String,
    /// Branch, tag or commit (default `main`); resolved to a commit now.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f]+$")]
    #[serde(default)]
    revision: Option<String>,
    /// Default: `text-generation` for a decoder (pipeline tag, `config.json`
    /// architectures ending in `ForCausalLM`, or a GGUF file), else the repo's
    /// `pipeline_tag`, else derived from its config. A task of the other family
    /// than the repo's model is refused (400).
    #[schema(
        pattern = "^(feature-extraction|sentence-similarity|text-classification|text-generation)$"
    )]
    #[serde(default)]
    task: Option<String>,
    /// Replicas kept running (0 allows scale to zero). Default 1.
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 8)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    min_replicas: Option<i64>,
    /// Most replicas under load, at least `max(1, min_replicas)`. Default 1.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    max_replicas: Option<i64>,
    /// Idle seconds before scaling to zero when `min_replicas` is 0 (default 900).
    #[schema(value_type = Option<i32>, minimum = 10, maximum = 2147483647)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    scale_to_zero_after_s: Option<i64>,
    /// Who may call it (default `protected`).
    #[serde(default)]
    access: Option<EndpointAccess>,
    /// Arithmetic of the replicas (default `f32`).
    #[serde(default)]
    precision: Option<EndpointPrecision>,
}

/// The endpoint's arithmetic: the precision the workers parse, declared once.
pub use hub_types::Precision as EndpointPrecision;

/// `public`: anyone may call the endpoint; `protected`: tokens of the
/// owning namespace with `inference` or `write` scope.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointAccess {
    Public,
    Protected,
}

impl EndpointAccess {
    fn as_str(self) -> &'static str {
        match self {
            EndpointAccess::Public => "public",
            EndpointAccess::Protected => "protected",
        }
    }
}

/// An optional whole number that must fit an `i32` column.
fn int32(v: Option<i64>, field: &'static str) -> ApiResult<Option<i32>> {
    v.map(|value| {
        i32::try_from(value).map_err(|_| EndpointSpecError::OutOfRange { field, value }.into())
    })
    .transpose()
}

async fn render(state: &AppState, e: &db::endpoints::EndpointRow) -> ApiResult<serde_json::Value> {
    let replicas = db::endpoints::replicas_of(&state.db, e.id).await?;
    let events = db::endpoints::events(&state.db, e.id, 20).await?;
    Ok(to_json(&state.public_url, e, &replicas, &events))
}

/// Creates an endpoint (the revision is resolved to a commit now).
#[utoipa::path(post, path = "/api/v1/endpoints/{ns}", tag = "endpoints", request_body = CreateBody,
    params(("ns" = String, Path, description = "Namespace (user or organization)")),
    responses((status = 201, description = "The endpoint", body = serde_json::Value)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<HttpResponse> {
    let (ns, p) =
        member_namespace(&state, &auth, &path.into_inner(), Action::ManageEndpoints).await?;
    let name = RepoName::parse(&body.name).map_err(|e| EndpointSpecError::Name(e.to_string()))?;
    let access = body.access.unwrap_or(EndpointAccess::Protected).as_str();
    let min_replicas = int32(body.min_replicas, "min_replicas")?.unwrap_or(1);
    let max_replicas = int32(body.max_replicas, "max_replicas")?.unwrap_or(1);
    let scale_to_zero = check_scaling(
        min_replicas,
        max_replicas,
        int32(body.scale_to_zero_after_s, "scale_to_zero_after_s")?,
    )?;
    let repo_id = RepoId::parse(&body.repository)?;
    // An endpoint reads the model's files: the same decision as a download
    // (403 GatedRepo when the caller has not been granted a gated model).
    let weights =
        crate::gating::load_repo_for_download(&state, &auth, RepoType::Model, &repo_id).await?;
    let ctx = weights.ctx();
    let revision = body
        .revision
        .clone()
        .unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string());
    let resolved = registry::resolve_str(&state, ctx.repo.id, &revision).await?;
    let archs: Vec<String> = resolved.commit.config_info.0["architectures"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // A GGUF file's header names its architecture (and the decoder's shape).
    let files = db::git::list_recursive(&state.db, &resolved.commit.tree_oid, "").await?;
    let tenant = crate::heavy::Tenant::User(p.user_id);
    let gguf = match crate::endpoints::decoder_gguf(&files) {
        Some((_, blob)) => Some(
            crate::endpoints::gguf_facts(&state, tenant, &blob.sha256, blob.size.max(0) as u64)
                .await?,
        ),
        None => None,
    };
    let task = choose_task_for(
        body.task.as_deref(),
        &RepoSignals {
            pipeline_tag: resolved.commit.pipeline_tag.as_deref(),
            architectures: &archs,
            gguf_architecture: gguf.as_ref().and_then(|g| g.architecture.as_deref()),
        },
    )?;
    if task == hub_types::Task::TextGeneration.as_str() {
        // The scheduler sizes a decoder's KV cache: refuse one it cannot size.
        let d = crate::endpoints::decoder_weights(&state, tenant, &files).await?;
        if d.dims.is_none() {
            return Err(EndpointSpecError::NoDecoderShape(
                "the repo has no GGUF file with <arch>.block_count and attention head counts, \
                 nor a config.json with num_hidden_layers, num_attention_heads and hidden_size"
                    .into(),
            )
            .into());
        }
    }
    let mut tx = state.db.begin().await?;
    let id = db::endpoints::insert(
        &mut tx,
        &db::endpoints::NewEndpoint {
            namespace_id: ns.id,
            name: name.as_str(),
            repo_id: ctx.repo.id,
            repo_type: "model",
            repository: &ctx.repo.full_id(),
            revision: &revision,
            commit_oid: &resolved.commit.oid,
            task: &task,
            precision: body.precision.unwrap_or(EndpointPrecision::F32).as_str(),
            min_replicas,
            max_replicas,
            scale_to_zero_after_s: scale_to_zero,
            access,
            created_by: p.user_id,
        },
    )
    .await?
    .ok_or_else(|| {
        ApiError::Conflict(format!("an endpoint named {} exists in {}", name, ns.name))
    })?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        ns.id,
        "endpoint.created",
        &format!("endpoint:{}/{}", ns.name, name),
        json!({"repository": ctx.repo.full_id(), "commit": resolved.commit.oid, "task": task,
            "precision": body.precision.unwrap_or(EndpointPrecision::F32).as_str()}),
    )
    .await?;
    tx.commit().await?;
    crate::signals::invalidate(&state, crate::signals::Invalidation::Routes).await;
    state.scheduler.nudge();
    let e = db::endpoints::by_id(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    Ok(HttpResponse::Created().json(render(&state, &e).await?))
}

/// Lists a namespace's endpoints.
#[utoipa::path(get, path = "/api/v1/endpoints/{ns}", tag = "endpoints",
    params(("ns" = String, Path, description = "Namespace"), crate::routes::v1::PageQuery),
    responses((status = 200, description = "`{items, next_cursor}`", body = serde_json::Value)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = crate::routes::v1::Page::parse(req.query_string())?;
    let (ns, _) =
        member_namespace(&state, &auth, &path.into_inner(), Action::ReadEndpoints).await?;
    let limit = page.limit;
    let after = page.cursor;
    let rows = db::endpoints::list(&state.db, ns.id, after, limit + 1).await?;
    let next = (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].id.to_string());
    let mut items = Vec::new();
    for e in rows.iter().take(limit as usize) {
        items.push(render(&state, e).await?);
    }
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next})))
}

async fn load(
    state: &AppState,
    auth: &Auth,
    ns: &str,
    name: &str,
    action: Action,
) -> ApiResult<db::endpoints::EndpointRow> {
    let (nsrow, _) = member_namespace(state, auth, ns, action).await?;
    db::endpoints::get(&state.db, &nsrow.name, name)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))
}

/// One endpoint: status, replicas, recent events.
#[utoipa::path(get, path = "/api/v1/endpoints/{ns}/{name}", tag = "endpoints",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, description = "The endpoint", body = serde_json::Value)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ns, name) = path.into_inner();
    let e = load(&state, &auth, &ns, &name, Action::ReadEndpoints).await?;
    Ok(HttpResponse::Ok().json(render(&state, &e).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 8)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    min_replicas: Option<i64>,
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    max_replicas: Option<i64>,
    #[schema(value_type = Option<i32>, minimum = 10, maximum = 2147483647)]
    #[serde(default, deserialize_with = "crate::routes::v1::opt_whole")]
    scale_to_zero_after_s: Option<i64>,
    #[serde(default)]
    access: Option<EndpointAccess>,
    /// A new branch, tag or commit: replicas are replaced.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f]+$")]
    #[serde(default)]
    revision: Option<String>,
    /// A new precision: replicas are replaced.
    #[serde(default)]
    precision: Option<EndpointPrecision>,
}

/// Changes scaling, access, revision or precision.
#[utoipa::path(patch, path = "/api/v1/endpoints/{ns}/{name}", tag = "endpoints", request_body = PatchBody,
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, description = "The endpoint", body = serde_json::Value)))]
pub async fn patch(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    JsonBody(body): JsonBody<PatchBody>,
) -> ApiResult<HttpResponse> {
    let (ns, name) = path.into_inner();
    let e = load(&state, &auth, &ns, &name, Action::ManageEndpoints).await?;
    let min = int32(body.min_replicas, "min_replicas")?.unwrap_or(e.min_replicas);
    let max = int32(body.max_replicas, "max_replicas")?.unwrap_or(e.max_replicas);
    let stz = check_scaling(
        min,
        max,
        int32(body.scale_to_zero_after_s, "scale_to_zero_after_s")?.or(e.scale_to_zero_after_s),
    )?;
    let access = body
        .access
        .map(|a| a.as_str().to_string())
        .unwrap_or(e.access.clone());
    let (revision, commit) = match &body.revision {
        Some(rev) => {
            let repo_id = e.repo_id.ok_or(EndpointSpecError::RepoDeleted)?;
            // The caller picks what the endpoint will read: the same decision
            // as at creation (a download of the model as this caller), so a
            // member who may manage the endpoint but not read the model
            // cannot probe its branches or deploy one of them.
            let row = crate::db::repos::by_id(&state.db, repo_id)
                .await?
                .ok_or(EndpointSpecError::RepoDeleted)?;
            let name = RepoId::parse(&format!("{}/{}", row.namespace, row.name))?;
            let weights =
                crate::gating::load_repo_for_download(&state, &auth, RepoType::Model, &name)
                    .await?;
            if weights.ctx().repo.id != repo_id {
                return Err(EndpointSpecError::RepoDeleted.into());
            }
            let resolved = registry::resolve_str(&state, repo_id, rev).await?;
            (rev.clone(), resolved.commit.oid)
        }
        None => (e.revision.clone(), e.commit_oid.clone()),
    };
    let precision = body
        .precision
        .map(|p| p.as_str().to_string())
        .unwrap_or(e.precision.clone());
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE endpoints SET min_replicas = $2, max_replicas = $3, scale_to_zero_after_s = $4, access = $5,
         revision = $6, commit_oid = $7, precision = $8, updated_at = now() WHERE id = $1",
    )
    .bind(e.id)
    .bind(min)
    .bind(max)
    .bind(stz)
    .bind(&access)
    .bind(&revision)
    .bind(&commit)
    .bind(&precision)
    .execute(&mut *tx)
    .await?;
    let mut changes = Vec::new();
    if commit != e.commit_oid {
        changes.push(format!("revision changed to {revision} ({commit})"));
    }
    if precision != e.precision {
        changes.push(format!("precision changed to {precision}"));
    }
    if !changes.is_empty() {
        // What the replicas serve changed: replace every replica.
        for r in db::endpoints::replicas_of(&mut *tx, e.id).await? {
            db::endpoints::delete_replica(&mut tx, r.id, r.worker_id).await?;
        }
        db::endpoints::event(&mut *tx, e.id, "pending", Some(&changes.join("; "))).await?;
    }
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        e.namespace_id,
        "endpoint.updated",
        &format!("endpoint:{ns}/{name}"),
        json!({"min_replicas": min, "max_replicas": max, "access": access, "commit": commit,
            "precision": precision}),
    )
    .await?;
    tx.commit().await?;
    crate::signals::invalidate(&state, crate::signals::Invalidation::Endpoint(e.id)).await;
    state.scheduler.nudge();
    let e = db::endpoints::by_id(&state.db, e.id)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    Ok(HttpResponse::Ok().json(render(&state, &e).await?))
}

/// Deletes an endpoint.
#[utoipa::path(delete, path = "/api/v1/endpoints/{ns}/{name}", tag = "endpoints",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, description = "Deleted", body = serde_json::Value)))]
pub async fn delete(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ns, name) = path.into_inner();
    let e = load(&state, &auth, &ns, &name, Action::ManageEndpoints).await?;
    let mut tx = state.db.begin().await?;
    for r in db::endpoints::replicas_of(&mut *tx, e.id).await? {
        db::endpoints::bump_assign_version(&mut *tx, r.worker_id).await?;
    }
    db::endpoints::delete(&mut *tx, e.id).await?;
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        e.namespace_id,
        "endpoint.deleted",
        &format!("endpoint:{ns}/{name}"),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    crate::signals::invalidate(&state, crate::signals::Invalidation::Endpoint(e.id)).await;
    state.scheduler.nudge();
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn set_paused(
    state: &AppState,
    auth: &Auth,
    ns: &str,
    name: &str,
    paused: bool,
) -> ApiResult<HttpResponse> {
    let e = load(state, auth, ns, name, Action::ManageEndpoints).await?;
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE endpoints SET paused = $2, updated_at = now(), wake_requested_at = CASE WHEN $2 THEN NULL ELSE now() END WHERE id = $1")
        .bind(e.id)
        .bind(paused)
        .execute(&mut *tx)
        .await?;
    let action = if paused {
        "endpoint.paused"
    } else {
        "endpoint.resumed"
    };
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        e.namespace_id,
        action,
        &format!("endpoint:{ns}/{name}"),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    crate::signals::invalidate(state, crate::signals::Invalidation::Endpoint(e.id)).await;
    state.scheduler.nudge();
    let e = db::endpoints::by_id(&state.db, e.id)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    Ok(HttpResponse::Ok().json(render(state, &e).await?))
}

/// Pauses an endpoint (no replicas; calls answer 503).
#[utoipa::path(post, path = "/api/v1/endpoints/{ns}/{name}/pause", tag = "endpoints",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, description = "The endpoint", body = serde_json::Value)))]
pub async fn pause(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ns, name) = path.into_inner();
    set_paused(&state, &auth, &ns, &name, true).await
}

/// Resumes a paused endpoint.
#[utoipa::path(post, path = "/api/v1/endpoints/{ns}/{name}/resume", tag = "endpoints",
    params(("ns" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Endpoint name")),
    responses((status = 200, description = "The endpoint", body = serde_json::Value)))]
pub async fn resume(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ns, name) = path.into_inner();
    set_paused(&state, &auth, &ns, &name, false).await
}
