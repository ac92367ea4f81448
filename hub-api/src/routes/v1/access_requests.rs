//! Access requests to gated repos: a user asks (`auto` gating accepts at
//! once); the repo's admins list, accept, reject, or grant without a request.
//! The HF-compatible routes (`/api/{type}s/{repo}/user-access-request/...`)
//! are in `routes::hf::access`.

use super::{list_dto, time, ErrorDto, Page};
use crate::auth::access::{self, Access};
use crate::auth::Auth;
use crate::db;
use crate::db::access_requests::AccessRequest;
use crate::error::{ApiError, ApiResult};
use crate::gating;
use crate::registry::{self, RepoRef};
use crate::routes::body::RequiredJson as JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessRequestDto {
    pub id: i64,
    pub user: String,
    pub fullname: String,
    /// pending, accepted or rejected.
    pub status: String,
    /// What the user filled in when asking.
    #[schema(value_type = Object)]
    pub fields: serde_json::Value,
    pub rejection_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<AccessRequest> for AccessRequestDto {
    fn from(r: AccessRequest) -> Self {
        Self {
            id: r.id,
            user: r.user_name,
            fullname: r.fullname,
            status: r.status,
            fields: r.fields.0,
            rejection_reason: r.rejection_reason,
            created_at: time(r.created_at),
            updated_at: time(r.updated_at),
        }
    }
}

list_dto!(AccessRequestList, AccessRequestDto);

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAccessBody {
    /// Answers to the repo's gate form (a flat object of at most 20 short strings).
    #[schema(value_type = Object)]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A token restricted to other repos acts here as an anonymous caller would not: refuse.
/// Asking for access changes state in the caller's name: a session or a
/// write-scoped token that covers the repo (`Action::RequestRepoAccess`).
fn require_ask(p: &crate::auth::Principal, ctx: &registry::RepoCtx) -> ApiResult<()> {
    let standing = access::Standing::repo(&ctx.repo, None);
    access::decide(Some(p), &standing, access::Action::RequestRepoAccess)?;
    Ok(())
}

/// Reading one's own request: any credential of the user whose restriction
/// covers the repo (a read-only token may check on it).
fn require_touch(p: &crate::auth::Principal, ctx: &registry::RepoCtx) -> ApiResult<()> {
    let r = &ctx.repo;
    if !p.may_touch_repo(&r.namespace, &r.full_id(), &r.repo_type) {
        return Err(ApiError::Forbidden(
            "this token is restricted to other repositories".into(),
        ));
    }
    Ok(())
}

fn check_fields(
    f: &Option<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<serde_json::Value> {
    let Some(f) = f else {
        return Ok(serde_json::json!({}));
    };
    if f.len() > 20
        || f.iter().any(|(k, v)| {
            k.len() > 100
                || k.contains('\0')
                || !(v.is_string() || v.is_boolean() || v.is_number())
                || v.to_string().len() > 2000
                || v.as_str().is_some_and(|s| s.contains('\0'))
        })
    {
        return Err(super::FieldError::AccessRequestFields.into());
    }
    Ok(serde_json::Value::Object(f.clone()))
}

/// Asks for access to a gated repo (`auto` gating accepts immediately).
#[utoipa::path(post, path = "/api/v1/repos/{kind}/{ns}/{name}/access-requests", tag = "access-requests",
    params(("kind" = String, Path, description = "models or datasets"),
           ("ns" = String, Path), ("name" = String, Path)),
    request_body = RequestAccessBody,
    responses((status = 201, description = "The request", body = AccessRequestDto),
              (status = 400, description = "The repo is not gated", body = ErrorDto)))]
pub async fn request(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<RequestAccessBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let p = auth.require()?;
    require_ask(p, &ctx)?;
    let fields = check_fields(&body.fields)?;
    let r = gating::request_access(&state, p, &ctx, &fields).await?;
    Ok(HttpResponse::Created().json(AccessRequestDto::from(r)))
}

/// The caller's own request.
#[utoipa::path(get, path = "/api/v1/repos/{kind}/{ns}/{name}/access-requests/me", tag = "access-requests",
    params(("kind" = String, Path, description = "models or datasets"),
           ("ns" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The request", body = AccessRequestDto)))]
pub async fn mine(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let p = auth.require()?;
    require_touch(p, &ctx)?;
    let r = db::access_requests::get(&state.db, ctx.repo.id, p.user_id)
        .await?
        .ok_or(ApiError::NotFound("access request"))?;
    Ok(HttpResponse::Ok().json(AccessRequestDto::from(r)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// pending (default), accepted or rejected.
    pub status: Option<String>,
}

/// A repo's requests with a status (repo admins).
#[utoipa::path(get, path = "/api/v1/repos/{kind}/{ns}/{name}/access-requests", tag = "access-requests",
    params(("kind" = String, Path, description = "models or datasets"),
           ("ns" = String, Path), ("name" = String, Path), StatusQuery, super::PageQuery),
    responses((status = 200, description = "A page of requests", body = AccessRequestList)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    page: Page,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let status = web::Query::<StatusQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().status)
        .unwrap_or_else(|| "pending".into());
    let status = gating::parse_status(&status)?;
    let mut rows =
        db::access_requests::list(&state.db, ctx.repo.id, status, page.cursor, page.fetch())
            .await?;
    let next_cursor = page.finish(&mut rows, |r| r.id);
    Ok(HttpResponse::Ok().json(AccessRequestList {
        items: rows.into_iter().map(AccessRequestDto::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// accepted, rejected or pending.
    #[schema(pattern = "^(accepted|rejected|pending)$")]
    pub status: String,
    #[schema(max_length = 1000, pattern = "^[^\\x00]*$")]
    pub rejection_reason: Option<String>,
}

/// Accepts, rejects or resets a user's request (repo admins); accepting a
/// user without a request grants access.
#[utoipa::path(put, path = "/api/v1/repos/{kind}/{ns}/{name}/access-requests/{user}", tag = "access-requests",
    params(("kind" = String, Path, description = "models or datasets"),
           ("ns" = String, Path), ("name" = String, Path), ("user" = String, Path)),
    request_body = DecisionBody,
    responses((status = 200, description = "The request after the decision", body = AccessRequestDto)))]
pub async fn decide(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<DecisionBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let p = auth.require()?;
    let status = gating::parse_status(&body.status)?;
    let name = crate::domain::NamespaceName::parse(
        &crate::registry::repo_ref::param(&req, "user").unwrap_or_default(),
    )
    .map_err(|_| ApiError::NotFound("user"))?;
    let user = db::namespaces::user_by_name(&state.db, name.as_str())
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    gating::decide(
        &state,
        p,
        &ctx,
        &user,
        status,
        body.rejection_reason.as_deref(),
        status == "accepted",
    )
    .await?;
    let r = db::access_requests::get(&state.db, ctx.repo.id, user.id)
        .await?
        .ok_or(ApiError::NotFound("access request"))?;
    Ok(HttpResponse::Ok().json(AccessRequestDto::from(r)))
}
