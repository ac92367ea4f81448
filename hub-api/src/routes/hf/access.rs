//! The HF-compatible gated-access routes `huggingface_hub` calls:
//! `list_pending_access_requests` / `list_accepted_...` / `list_rejected_...`
//! (`GET .../user-access-request/{status}`), `accept_access_request`,
//! `reject_access_request`, `cancel_access_request`
//! (`POST .../user-access-request/handle`) and `grant_access`
//! (`POST .../user-access-request/grant`). Repo admins only.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::error::{AccessRequestError, ApiError, ApiResult, QueryError};
use crate::gating;
use crate::registry::repo_ref::param;
use crate::registry::{self, hf_date, RepoRef};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

const PAGE: i64 = 100;

/// `GET /api/{type}s/{repo}/user-access-request/{status}`: a bare JSON array
/// per page, `Link: <...>; rel="next"` to the next one.
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let status = gating::parse_status(&param(&req, "status").unwrap_or_default())?;
    let cursor = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.parse::<i64>())
        .transpose()
        .map_err(|_| QueryError::Cursor)?;
    let mut rows =
        db::access_requests::list(&state.db, ctx.repo.id, status, cursor, PAGE + 1).await?;
    let mut resp = HttpResponse::Ok();
    if rows.len() as i64 > PAGE {
        rows.truncate(PAGE as usize);
        if let Some(last) = rows.last() {
            resp.insert_header((
                "Link",
                format!(
                    "<{}{}?cursor={}>; rel=\"next\"",
                    state.public_url,
                    req.path(),
                    last.id
                ),
            ));
        }
    }
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "user": {"user": r.user_name, "fullname": r.fullname, "email": r.email},
                "requestId": r.id.to_string(),
                "status": r.status,
                "timestamp": hf_date(r.created_at),
                "fields": r.fields.0,
            })
        })
        .collect();
    Ok(resp.json(items))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    status: String,
    #[serde(default)]
    rejection_reason: Option<String>,
}

async fn user_named(state: &AppState, name: &str) -> ApiResult<db::namespaces::User> {
    let name = crate::domain::NamespaceName::parse(name).map_err(|_| ApiError::NotFound("user"))?;
    db::namespaces::user_by_name(&state.db, name.as_str())
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// `POST .../user-access-request/handle` with `{user | requestId, status, rejectionReason?}`.
pub async fn handle(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<HandleBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let p = auth.require()?;
    let status = gating::parse_status(&body.status)?;
    let user = match (&body.user, &body.request_id) {
        (Some(u), None) => user_named(&state, u).await?,
        (None, Some(id)) => {
            let id: i64 = id
                .parse()
                .map_err(|_| ApiError::NotFound("access request"))?;
            let r = db::access_requests::by_id(&state.db, ctx.repo.id, id)
                .await?
                .ok_or(ApiError::NotFound("access request"))?;
            db::namespaces::user_by_id(&state.db, r.user_id)
                .await?
                .ok_or(ApiError::NotFound("user"))?
        }
        _ => return Err(AccessRequestError::UserOrRequestId.into()),
    };
    if let Some(r) = db::access_requests::get(&state.db, ctx.repo.id, user.id).await? {
        if r.status == status {
            return Err(ApiError::NotFound("access request with another status"));
        }
    }
    gating::decide(
        &state,
        p,
        &ctx,
        &user,
        status,
        body.rejection_reason.as_deref(),
        false,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct GrantBody {
    user: String,
}

/// `POST .../user-access-request/grant` with `{user}`: 400 if the user already has access.
pub async fn grant(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<GrantBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let p = auth.require()?;
    let user = user_named(&state, &body.user).await?;
    if let Some(r) = db::access_requests::get(&state.db, ctx.repo.id, user.id).await? {
        if r.status == "accepted" {
            return Err(AccessRequestError::AlreadyGranted {
                user: user.name,
                repo: ctx.repo.full_id(),
            }
            .into());
        }
    }
    gating::decide(&state, p, &ctx, &user, "accepted", None, true).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "accepted", "user": user.name})))
}

/// `GET /api/{type}s/{repo}/auth-check` (`HfApi.auth_check`): 200 when the
/// caller may download the repo's files; otherwise the error a download
/// would get (404 `RepoNotFound`, 403 `GatedRepo`). The same read-and-gate
/// decision as every byte route.
pub async fn auth_check(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
) -> ApiResult<HttpResponse> {
    gating::load_repo_for_download(&state, &auth, repo.kind, &repo.id).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
