//! What every repo page shares: finding the repo the viewer may read (through
//! `registry::load_repo`, so private repos of others are a 404), resolving the
//! revision in the URL, and the header with its tabs and branch picker.

use super::{text, viewer, wants_html, Layout, PageError, PageResult};
use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::db::git::CommitRow;
use crate::error::ApiError;
use crate::registry::{self, RepoCtx, RepoRef, Resolved};
use crate::state::AppState;
use actix_web::HttpRequest;

/// The header of a repo page.
pub struct RepoHead {
    pub id: String,
    /// `/{ns}/{name}` or `/datasets/{ns}/{name}`.
    pub url: String,
    /// `models` or `datasets` (API paths).
    pub plural: &'static str,
    pub is_model: bool,
    pub private: bool,
    pub gated: bool,
    pub downloads: String,
    pub likes: String,
    pub can_write: bool,
    pub can_admin: bool,
    pub signed_in: bool,
    pub tab: &'static str,
    /// The revision as the URL names it, and URL-encoded as one segment.
    pub rev: String,
    pub rev_seg: String,
    pub commit: String,
    pub commit_short: String,
    pub branches: Vec<String>,
    pub tags: Vec<String>,
}

/// A repo page's loaded context.
pub struct RepoPage {
    pub auth: Auth,
    pub ctx: RepoCtx,
    pub layout: Layout,
}

/// Finds the repo of the request path for the viewer (404 page otherwise).
pub async fn load(state: &AppState, req: &HttpRequest, need: Access) -> PageResult<RepoPage> {
    let repo = RepoRef::from_request_parts(req).map_err(|e| {
        // A path like /api/unknown lands here: API clients keep their JSON 404.
        if wants_html(req) {
            PageError::from(e)
        } else {
            PageError::json(ApiError::NotFound("route"))
        }
    })?;
    let (auth, _) = viewer(req).await?;
    let ctx = registry::load_repo(state, &auth, repo.kind, &repo.id, need).await?;
    let layout = Layout::new(state, req, auth.principal());
    Ok(RepoPage { auth, ctx, layout })
}

/// The revision of the URL (`{rev}`), or the default branch.
pub fn rev_param(req: &HttpRequest) -> String {
    registry::repo_ref::param(req, "rev").unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string())
}

/// Resolves a revision of the repo.
pub async fn resolve(state: &AppState, p: &RepoPage, rev: &str) -> PageResult<Resolved> {
    Ok(registry::resolve_str(state, p.ctx.repo.id, rev).await?)
}

/// Builds the header for a tab at a commit.
pub async fn head(
    state: &AppState,
    p: &RepoPage,
    tab: &'static str,
    rev: &str,
    commit: &CommitRow,
) -> PageResult<RepoHead> {
    let r = &p.ctx.repo;
    let refs = db::refs::list(&state.db, r.id).await?;
    let mut branches = Vec::new();
    let mut tags = Vec::new();
    for rf in refs {
        if let Some(b) = rf.name.strip_prefix("refs/heads/") {
            branches.push(b.to_string());
        } else if let Some(t) = rf.name.strip_prefix("refs/tags/") {
            tags.push(t.to_string());
        }
    }
    let id = r.full_id();
    Ok(RepoHead {
        url: format!("/{}{}", r.kind().url_prefix(), id),
        id,
        plural: r.kind().plural(),
        is_model: r.kind() == crate::domain::RepoType::Model,
        private: r.private,
        gated: r.gated.is_some(),
        downloads: text::count(r.downloads),
        likes: text::count(r.likes),
        can_write: p.ctx.access >= Access::Write,
        can_admin: p.ctx.access >= Access::Admin,
        signed_in: p.auth.principal().is_some(),
        tab,
        rev: rev.to_string(),
        rev_seg: text::segment(rev),
        commit: commit.oid.clone(),
        commit_short: text::short(&commit.oid),
        branches,
        tags,
    })
}
