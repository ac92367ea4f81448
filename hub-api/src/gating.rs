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
