//! Likes, as `huggingface_hub` calls them: `like` / `unlike`
//! (`POST`/`DELETE /api/{type}s/{repo}/like`) and `list_liked_repos`
//! (`GET /api/users/{user}/likes`).

use crate::auth::access::{self, Access, Action, Standing};
use crate::auth::Auth;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::registry::repo_ref::param;
use crate::registry::{self, hf_date, RepoRef};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// Most likes one listing returns (newest first).
const MAX_LISTED: i64 = 1000;

/// `POST .../like` and `DELETE .../like`: any repo the caller can see
/// (others are RepoNotFound, as everywhere); idempotent. A like is a change
/// made in the caller's name: it needs a session or a write-scoped token that
/// covers the repo (`Action::LikeRepo`; a read-only token is 403).
pub async fn like(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let p = auth.require()?;
    access::decide(Some(p), &Standing::repo(&ctx.repo, None), Action::LikeRepo)?;
    let like = req.method() == actix_web::http::Method::POST;
    let mut tx = state.db.begin().await?;
    db::likes::set(&mut tx, p.user_id, ctx.repo.id, like).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `GET /api/users/{user}/likes`: the public repos a user liked (private
/// ones are never listed, whoever asks), newest first, one page.
/// Open to anyone; bad credentials are still refused (the `Auth` extractor).
pub async fn list(
    state: web::Data<AppState>,
    _auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let name = param(&req, "user").unwrap_or_default();
    let user = db::namespaces::user_by_name(&state.db, &name)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let rows = db::likes::public_of_user(&state.db, user.id, MAX_LISTED).await?;
    let out: Vec<_> = rows
        .into_iter()
        .map(|(kind, id, at)| json!({"createdAt": hf_date(at), "repo": {"name": id, "type": kind}}))
        .collect();
    Ok(HttpResponse::Ok().json(out))
}
