//! `GET /api/{models,datasets}/{ns}/{name}/xet-{read,write}-token/{rev}`
//! (§2.1-2.4): a short-lived CAS access token for one repo, as JSON
//! (`casUrl`, `exp`, `accessToken`: the Rust client) and as `X-Xet-*`
//! headers (the Python download path reads only those). The token records
//! on whose behalf it was minted (the caller's `auth::grants::Grant`) and is
//! decided again on every CAS call (`routes::xet::CasToken`).

use super::{sign_cas_token, Scope, CAS_PREFIX};
use crate::auth::access::Access;
use crate::auth::grants::Grant;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::registry::repo_ref::{param, query_bool};
use crate::registry::{self, RepoRef};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// A write token: write access to the repo. The revision must exist, except
/// `None` with `?create_pr=1` (huggingface_hub's PR uploads, §2.1).
pub async fn write_token(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let rev = param(&req, "rev").unwrap_or_default();
    let create_pr = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "create_pr")
        .map(|(_, v)| v.into_owned());
    let for_pr = query_bool("create_pr", create_pr.as_deref())? == Some(true);
    if !(for_pr && rev == "None") {
        registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    }
    // Write access is a user's (sessions and API tokens): pull and worker
    // credentials never have it.
    let grant = auth
        .principal()
        .and_then(crate::gating::user_grant)
        .ok_or_else(|| ApiError::Forbidden("Xet uploads need a user's credential".into()))?;
    answer(
        &state,
        Scope::Write,
        ctx.repo.id,
        ctx.repo.namespace_id,
        grant,
    )
    .await
}

/// A read token: read access with the gate's rules (as downloads), and the
/// revision must exist.
pub async fn read_token(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let dl = crate::gating::load_repo_for_download(&state, &auth, repo.kind, &repo.id).await?;
    let rev = param(&req, "rev").unwrap_or_default();
    registry::resolve_str(&state, dl.repo().id, &rev).await?;
    answer(
        &state,
        Scope::Read,
        dl.repo().id,
        dl.repo().namespace_id,
        dl.grant(),
    )
    .await
}

async fn answer(
    state: &AppState,
    scope: Scope,
    repo: i64,
    ns: i64,
    grant: Grant,
) -> ApiResult<HttpResponse> {
    let ttl = state.limits.xet_token_ttl_s;
    let (token, exp) = sign_cas_token(state, scope, repo, ns, grant, ttl).await?;
    let cas_url = format!("{}{CAS_PREFIX}", state.public_url.trim_end_matches('/'));
    Ok(HttpResponse::Ok()
        .insert_header(("X-Xet-Cas-Url", cas_url.as_str()))
        .insert_header(("X-Xet-Access-Token", token.as_str()))
        .insert_header(("X-Xet-Token-Expiration", exp.to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"casUrl": cas_url, "exp": exp, "accessToken": token})))
}
