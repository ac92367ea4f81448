//! Gated repos, as on the Hugging Face Hub: metadata stays visible, file
//! downloads need an accepted access request (members with write access and
//! site admins always pass). Refusals carry `X-Error-Code: GatedRepo` so
//! `huggingface_hub` raises `GatedRepoError`.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::registry::RepoCtx;
use crate::state::AppState;

/// Whether the caller may download files of the repo.
pub async fn check_download(state: &AppState, auth: &Auth, ctx: &RepoCtx) -> ApiResult<()> {
    if ctx.repo.gated.is_none() || ctx.access >= Access::Write {
        return Ok(());
    }
    // A worker pulling an endpoint's weights: the endpoint's owner was granted access.
    if let Some(crate::auth::Principal {
        credential: crate::auth::Credential::RepoPull { repo_id },
        ..
    }) = auth.principal()
    {
        if *repo_id == ctx.repo.id {
            return Ok(());
        }
    }
    let name = ctx.repo.full_id();
    let Some(p) = auth.principal() else {
        return Err(ApiError::GatedRepo(name));
    };
    if let Ok(Some(_)) =
        crate::db::namespaces::member_role(&state.db, ctx.repo.namespace_id, p.user_id).await
    {
        return Ok(());
    }
    let status: Option<(String,)> =
        sqlx::query_as("SELECT status FROM access_requests WHERE repo_id = $1 AND user_id = $2")
            .bind(ctx.repo.id)
            .bind(p.user_id)
            .fetch_optional(&state.db)
            .await?;
    match status {
        Some((s,)) if s == "accepted" => Ok(()),
        _ => Err(ApiError::GatedRepo(name)),
    }
}

/// A request's status.
pub const STATUSES: &[&str] = &["pending", "accepted", "rejected"];

/// Parses a status from a URL or body.
pub fn parse_status(s: &str) -> ApiResult<&'static str> {
    STATUSES.iter().find(|x| **x == s).copied().ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "status {:?} is not one of pending, accepted, rejected",
            s.chars().take(40).collect::<String>()
        ))
    })
}

fn require_gated(ctx: &RepoCtx) -> ApiResult<&str> {
    ctx.repo.gated.as_deref().ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "{} is not gated; access requests apply only to gated repositories",
            ctx.repo.full_id()
        ))
    })
}

/// A user asks for access: `auto` gating accepts at once, `manual` waits for
/// an admin. Asking again returns the existing request unchanged.
pub async fn request_access(
    state: &AppState,
    p: &crate::auth::Principal,
    ctx: &RepoCtx,
    fields: &serde_json::Value,
) -> ApiResult<crate::db::access_requests::AccessRequest> {
    let mode = require_gated(ctx)?;
    let status = if mode == "auto" {
        "accepted"
    } else {
        "pending"
    };
    let mut tx = state.db.begin().await?;
    let existing = crate::db::access_requests::get(&mut *tx, ctx.repo.id, p.user_id).await?;
    if let Some(r) = existing {
        return Ok(r);
    }
    let r =
        crate::db::access_requests::create(&mut tx, ctx.repo.id, p.user_id, status, fields).await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        ctx.repo.namespace_id,
        if status == "accepted" {
            "access_request.auto_accepted"
        } else {
            "access_request.created"
        },
        &format!("{}:{}", ctx.repo.repo_type, ctx.repo.full_id()),
        serde_json::json!({"user": p.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(r)
}

/// An admin decides on a user's request (or grants access without one when
/// `create` is set). Recorded in the audit log.
pub async fn decide(
    state: &AppState,
    admin: &crate::auth::Principal,
    ctx: &RepoCtx,
    user: &crate::db::namespaces::User,
    status: &'static str,
    reason: Option<&str>,
    create: bool,
) -> ApiResult<()> {
    require_gated(ctx)?;
    if reason.is_some_and(|r| r.chars().count() > 1000 || r.contains('\0')) {
        return Err(ApiError::InvalidRequest(
            "the rejection reason must be at most 1000 characters, without NUL".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    let existing = crate::db::access_requests::get(&mut *tx, ctx.repo.id, user.id).await?;
    if existing.is_none() && !create {
        return Err(ApiError::NotFound("access request"));
    }
    crate::db::access_requests::set_status(
        &mut *tx,
        ctx.repo.id,
        user.id,
        status,
        if status == "rejected" { reason } else { None },
        admin.user_id,
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        Some(admin),
        ctx.repo.namespace_id,
        &format!(
            "access_request.{}",
            if existing.is_none() {
                "granted"
            } else {
                status
            }
        ),
        &format!("{}:{}", ctx.repo.repo_type, ctx.repo.full_id()),
        serde_json::json!({"user": user.name, "status": status}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
