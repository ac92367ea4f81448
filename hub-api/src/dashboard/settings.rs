//! Repo settings (`/{ns}/{name}/settings`, repo admins): visibility, gating,
//! access requests to approve, and deletion (type the name to confirm). The
//! forms call `PUT /api/{type}/{repo}/settings`, the access-request API and
//! `DELETE /api/repos/delete`.

use super::repo_view::{self, RepoHead};
use super::{page, text, Layout, PageResult};
use crate::auth::access::Access;
use crate::db;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// An access request row.
pub struct Request {
    pub user: String,
    pub fullname: String,
    pub status: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "repo/settings.html")]
pub struct SettingsPage {
    pub l: Layout,
    pub h: RepoHead,
    pub gated: String,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub requests: Vec<Request>,
    /// The management API path of the repo's access requests.
    pub requests_api: String,
}

/// `GET /{ns}/{name}/settings`.
pub async fn settings(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Admin).await?;
    let rev = crate::registry::DEFAULT_BRANCH;
    let resolved = repo_view::resolve(&state, &p, rev).await?;
    let h = repo_view::head(&state, &p, "settings", rev, &resolved.commit).await?;
    let r = &p.ctx.repo;
    let requests = db::browse::access_requests(&state.db, r.id)
        .await?
        .into_iter()
        .map(|a| Request {
            user: a.user_name,
            fullname: a.fullname,
            status: a.status,
            when: text::ago(a.created_at),
        })
        .collect();
    page(&SettingsPage {
        gated: r.gated.clone().unwrap_or_default(),
        kind: r.kind().as_str(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        requests_api: format!(
            "/api/v1/repos/{}/{}/{}/access-requests",
            r.kind().plural(),
            r.namespace,
            r.name
        ),
        requests,
        l: p.layout,
        h,
    })
}
