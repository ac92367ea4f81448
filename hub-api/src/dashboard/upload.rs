//! Creating repos (`/new`) and uploading files (`/{ns}/{name}/upload`). The
//! pages are forms; `upload.js` does the work in the browser through the
//! public API: preupload, the LFS batch API with multipart parts for large
//! files (hashed incrementally with `sha256.js`), then one NDJSON commit.

use super::repo_view::{self, RepoHead};
use super::{page, to_login, viewer, Layout, PageResult};
use crate::auth::access::{Access, Action, Standing};
use crate::db;
use crate::db::namespaces::Role;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// A namespace the viewer can create repos in.
pub struct Owner {
    pub name: String,
    pub is_org: bool,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "new_repo.html")]
pub struct NewRepoPage {
    pub l: Layout,
    pub owners: Vec<Owner>,
    pub dataset: bool,
}

/// The viewer's own namespace and the organizations where they may create
/// repos (`Action::CreateRepo`, as `POST /api/repos/create` decides it).
pub async fn writable_namespaces(
    state: &AppState,
    p: &crate::auth::Principal,
) -> PageResult<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let own = Standing::namespace(&p.name, Some(Role::Admin), "namespace");
    if own.allows(Some(p), Action::CreateRepo) {
        out.push((p.name.clone(), false));
    }
    for (ns, role) in db::namespaces::user_orgs(&state.db, p.user_id).await? {
        let standing = Standing::namespace(&ns.name, Some(role), "namespace");
        if standing.allows(Some(p), Action::CreateRepo) {
            out.push((ns.name, true));
        }
    }
    Ok(out)
}

/// `GET /new?type=dataset&owner=org`.
pub async fn new_repo(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let want_owner = get("owner").unwrap_or(&p.name).to_string();
    let owners = writable_namespaces(&state, p)
        .await?
        .into_iter()
        .map(|(name, is_org)| Owner {
            selected: name.eq_ignore_ascii_case(&want_owner),
            name,
            is_org,
        })
        .collect();
    page(&NewRepoPage {
        l: Layout::new(&state, &req, Some(p)),
        owners,
        dataset: get("type") == Some("dataset"),
    })
}

#[derive(Template)]
#[template(path = "repo/upload.html")]
pub struct UploadPage {
    pub l: Layout,
    pub h: RepoHead,
    /// The git path of the repo (`/{prefix}{id}`), for the LFS batch URL.
    pub lfs_batch: String,
    pub multipart_threshold: u64,
}

/// `GET /{ns}/{name}/upload`: writers only (readers get 403, others 404).
pub async fn upload(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    if auth.principal().is_none() {
        // Anonymous: a public repo would answer 403; ask to sign in instead.
        let p = repo_view::load(&state, &req, Access::Read).await?;
        drop(p);
        return Ok(to_login(&req));
    }
    let p = repo_view::load(&state, &req, Access::Write).await?;
    let rev = crate::registry::DEFAULT_BRANCH;
    let resolved = repo_view::resolve(&state, &p, rev).await?;
    let h = repo_view::head(&state, &p, "upload", rev, &resolved.commit).await?;
    page(&UploadPage {
        lfs_batch: format!("{}.git/info/lfs/objects/batch", h.url),
        multipart_threshold: state.limits.multipart_threshold,
        l: p.layout,
        h,
    })
}
