//! The registry's domain logic, shared by the HF routes, the management API
//! and the dashboard: finding a repo the caller may see, resolving revisions,
//! committing, and reading trees.

pub mod commit;
pub mod discussions;
pub mod files;
pub mod git_push;
pub mod git_serve;
pub mod ndjson;
pub mod path_stats;
pub mod push_rules;
pub mod redirects;
pub mod repo_ref;
pub mod worktree;

use crate::auth::access::{self, Access, Action, Standing};
use crate::auth::Auth;
use crate::db;
use crate::db::git::CommitRow;
use crate::db::repos::RepoRow;
use crate::domain::{RepoId, RepoType, Revision};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub use repo_ref::RepoRef;

/// The branch every repo starts with.
pub const DEFAULT_BRANCH: &str = "main";

/// A repo the caller may access, with what they may do.
#[derive(Debug, Clone)]
pub struct RepoCtx {
    pub repo: RepoRow,
    pub access: Access,
}

/// Finds a repo and checks the caller has `need` on it. Missing and
/// unreadable private repos are both `RepoNotFound`.
pub async fn load_repo(
    state: &AppState,
    auth: &Auth,
    kind: RepoType,
    id: &RepoId,
    need: Access,
) -> ApiResult<RepoCtx> {
    // Read with other requests' lookups when they coincide (`repo_lookup`).
    let repo = state
        .resolved
        .repos
        .find(
            &state.db,
            kind.as_str(),
            id.namespace_key(),
            id.name.as_str(),
        )
        .await?
        .ok_or(ApiError::RepoNotFound)?;
    decide_repo(state, auth, repo, need).await
}

/// [`load_repo`] with the repo row from the per-process repo cache
/// (`repo_cache`; its freshness bound is documented there): for `/resolve`,
/// which shows none of the row's counters.
pub async fn load_repo_cached(
    state: &AppState,
    auth: &Auth,
    kind: RepoType,
    id: &RepoId,
    need: Access,
) -> ApiResult<RepoCtx> {
    let repo = state
        .resolved
        .find_repo(
            &state.db,
            kind.as_str(),
            id.namespace_key(),
            id.name.as_str(),
        )
        .await?
        .ok_or(ApiError::RepoNotFound)?;
    decide_repo(state, auth, repo, need).await
}

/// The caller's access to `repo`, or why they have none.
async fn decide_repo(
    state: &AppState,
    auth: &Auth,
    repo: RepoRow,
    need: Access,
) -> ApiResult<RepoCtx> {
    let action = match need {
        Access::Admin => Action::AdminRepo,
        Access::Write => Action::WriteRepo,
        Access::Read | Access::None => Action::ReadRepo,
    };
    let standing = Standing::load_repo(&state.db, auth.principal(), &repo).await?;
    let have = access::decide(auth.principal(), &standing, action)?;
    Ok(RepoCtx { repo, access: have })
}

/// A resolved revision: the commit, and the full ref name when it came from one.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub commit: CommitRow,
    pub ref_name: Option<String>,
}

/// Resolves a branch, tag, full ref, 40-hex commit id or unambiguous short
/// commit id of a repo.
pub async fn resolve_revision(
    state: &AppState,
    repo_id: i64,
    rev: &Revision,
) -> ApiResult<Resolved> {
    let s = rev.as_str();
    if crate::domain::is_commit_oid(s) {
        if let Some(c) = db::git::commit(&state.db, repo_id, s).await? {
            return Ok(Resolved {
                commit: c,
                ref_name: None,
            });
        }
    }
    for name in rev.candidate_refs() {
        if let Some(r) = db::refs::get(&state.db, repo_id, &name).await? {
            let c = db::git::commit(&state.db, repo_id, &r.commit_oid)
                .await?
                .ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("ref {name} points at a missing commit"))
                })?;
            return Ok(Resolved {
                commit: c,
                ref_name: Some(name),
            });
        }
    }
    // A short commit id (the client's own rule: 5 to 40 hex digits), when
    // no branch or tag has that name and exactly one commit starts with it.
    if (5..40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let prefix = s.to_ascii_lowercase();
        if let [oid] = &db::git::commits_by_prefix(&state.db, repo_id, &prefix).await?[..] {
            if let Some(c) = db::git::commit(&state.db, repo_id, oid).await? {
                return Ok(Resolved {
                    commit: c,
                    ref_name: None,
                });
            }
        }
    }
    Err(ApiError::RevisionNotFound(s.to_string()))
}

/// Parses and resolves a revision string from a URL.
pub async fn resolve_str(state: &AppState, repo_id: i64, rev: &str) -> ApiResult<Resolved> {
    let rev = Revision::parse(rev).map_err(|_| ApiError::RevisionNotFound(rev.to_string()))?;
    resolve_revision(state, repo_id, &rev).await
}

/// Formats a timestamp the way the HF clients parse it (UTC, `Z`, milliseconds).
pub fn hf_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
