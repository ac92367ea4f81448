//! Organization pages (`/organizations/{org}`, members only; outsiders get
//! 404): members and roles, invite by user name, storage quota and usage,
//! and the audit log (`/organizations/{org}/audit`, admins). Changes go
//! through `/api/v1/orgs/{org}/members`.

use super::{page, text, to_login, viewer, Layout, PageResult};
use crate::auth::access::{self, Action, Standing};
use crate::db;
use crate::db::namespaces::{Namespace, Role};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// A member row.
pub struct Member {
    pub name: String,
    pub fullname: String,
    pub role: String,
}

#[derive(Template)]
#[template(path = "org.html")]
pub struct OrgPage {
    pub l: Layout,
    pub org: String,
    pub fullname: String,
    pub role: &'static str,
    pub is_admin: bool,
    pub members: Vec<Member>,
    pub used: String,
    pub quota: String,
    pub percent: i64,
    pub repos: Vec<super::home::RepoCard>,
}

/// The signed-in viewer's organization, their role in it, and whether they
/// administer it (`Action::ReadNamespace` / `AdminNamespace`, as
/// `/api/v1/orgs/{org}/...` decides: a token restricted elsewhere, or a
/// non-member, gets the same 404 as a missing organization). Anonymous
/// visitors are sent to sign in.
async fn load(
    state: &AppState,
    req: &HttpRequest,
) -> PageResult<Result<(crate::auth::Auth, Namespace, Role, bool), HttpResponse>> {
    let (auth, _) = viewer(req).await?;
    let Some(p) = auth.principal() else {
        return Ok(Err(to_login(req)));
    };
    let name = req.match_info().get("org").unwrap_or_default();
    let org = db::namespaces::by_name(&state.db, name)
        .await?
        .filter(|n| n.kind == "org")
        .ok_or(ApiError::NotFound("organization"))?;
    let standing = Standing::load_namespace(&state.db, Some(p), &org, "organization").await?;
    access::decide(Some(p), &standing, Action::ReadNamespace).map_err(ApiError::from)?;
    let role = standing.role().ok_or(ApiError::NotFound("organization"))?;
    let admin = standing.allows(Some(p), Action::AdminNamespace);
    Ok(Ok((auth, org, role, admin)))
}

/// `GET /organizations/{org}`.
pub async fn org(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, org, role, admin) = match load(&state, &req).await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let members = db::browse::members(&state.db, org.id)
        .await?
        .into_iter()
        .map(|(name, fullname, role)| Member {
            name,
            fullname,
            role,
        })
        .collect();
    let used = crate::quota::usage(&state.db, org.id).await?;
    let mut conn = state.db.acquire().await?;
    let limit = crate::quota::limit(&state, &mut conn, org.id).await?;
    drop(conn);
    let p = auth.principal();
    let repos = db::repos::list(
        &state.db,
        &db::repos::ListQuery {
            repo_type: "model".into(),
            search: vec![],
            author: Some(org.name.clone()),
            filters: vec![],
            pipeline_tag: None,
            library: None,
            license: None,
            gated: None,
            sort: db::repos::SortKey::LastModified,
            limit: 20,
            cursor: None,
            viewer: crate::auth::access::list_viewer(p),
        },
    )
    .await?;
    page(&OrgPage {
        l: Layout::new(&state, &req, p),
        fullname: org.fullname.clone(),
        org: org.name,
        role: role.as_str(),
        is_admin: admin,
        members,
        used: text::size(used),
        quota: limit.map(text::size).unwrap_or_else(|| "unlimited".into()),
        percent: limit
            .filter(|l| *l > 0)
            .map(|l| (used * 100 / l).clamp(0, 100))
            .unwrap_or(0),
        repos: repos.iter().map(super::home::RepoCard::from_row).collect(),
    })
}

/// An audit log line.
pub struct AuditItem {
    pub when: String,
    pub when_iso: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "org_audit.html")]
pub struct AuditPage {
    pub l: Layout,
    pub org: String,
    pub items: Vec<AuditItem>,
    pub older: Option<String>,
}

/// `GET /organizations/{org}/audit?before=ID` (org admins).
pub async fn audit(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, org, _, admin) = match load(&state, &req).await? {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    if !admin {
        return Err(ApiError::Forbidden("the audit log is for organization admins".into()).into());
    }
    let before = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "before")
        .and_then(|(_, v)| v.parse::<i64>().ok());
    let mut rows = crate::audit::list(&state.db, org.id, before, 101).await?;
    let more = rows.len() > 100;
    rows.truncate(100);
    let older = match (more, rows.last()) {
        (true, Some(last)) => Some(format!(
            "/organizations/{}/audit?before={}",
            org.name, last.id
        )),
        _ => None,
    };
    page(&AuditPage {
        l: Layout::new(&state, &req, auth.principal()),
        items: rows
            .into_iter()
            .map(|a| AuditItem {
                when: text::ago(a.at),
                when_iso: text::iso(a.at),
                actor: a.actor_name.unwrap_or_else(|| "system".into()),
                action: a.action,
                target: a.target,
                details: a.details.0.to_string(),
            })
            .collect(),
        org: org.name,
        older,
    })
}
