//! History: `/commits/{rev}` (newest first, pages of 50) and the commit page
//! `/commit/{oid}` listing the paths the commit changed (`db::git::changes`).

use super::repo_view::{self, RepoHead};
use super::{page, text, Layout, PageResult};
use crate::auth::access::Access;
use crate::db;
use crate::db::git::CommitRow;
use crate::error::ApiError;
use crate::registry::repo_ref;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// Commits per page.
pub const PER_PAGE: i64 = 50;

/// A commit in a list.
pub struct CommitItem {
    pub oid: String,
    pub short: String,
    pub title: String,
    pub author: String,
    pub when: String,
    pub when_iso: String,
}

impl CommitItem {
    fn from_row(c: &CommitRow) -> Self {
        Self {
            oid: c.oid.clone(),
            short: text::short(&c.oid),
            title: c.title.clone(),
            author: c.author_name.clone(),
            when: text::ago(c.time()),
            when_iso: text::iso(c.time()),
        }
    }
}

#[derive(Template)]
#[template(path = "repo/commits.html")]
pub struct CommitsPage {
    pub l: Layout,
    pub h: RepoHead,
    pub picker_target: &'static str,
    pub commits: Vec<CommitItem>,
    pub page_no: i64,
    pub older: Option<String>,
    pub newer: Option<String>,
}

/// `GET /{ns}/{name}/commits/{rev}?p=N`.
pub async fn commits(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let rev = repo_view::rev_param(&req);
    let resolved = repo_view::resolve(&state, &p, &rev).await?;
    let page_no: i64 = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "p")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 100_000);
    let mut rows = db::git::history(
        &state.db,
        p.ctx.repo.id,
        &resolved.commit.oid,
        (page_no - 1) * PER_PAGE,
        PER_PAGE + 1,
    )
    .await?;
    let more = rows.len() as i64 > PER_PAGE;
    rows.truncate(PER_PAGE as usize);
    let h = repo_view::head(&state, &p, "commits", &rev, &resolved.commit).await?;
    let base = format!("{}/commits/{}", h.url, h.rev_seg);
    page(&CommitsPage {
        older: more.then(|| format!("{base}?p={}", page_no + 1)),
        newer: (page_no > 1).then(|| format!("{base}?p={}", page_no - 1)),
        commits: rows.iter().map(CommitItem::from_row).collect(),
        l: p.layout,
        h,
        picker_target: "commits",
        page_no,
    })
}

/// A changed path of a commit.
pub struct Change {
    pub path: String,
    pub kind: String,
    pub url: Option<String>,
}

#[derive(Template)]
#[template(path = "repo/commit.html")]
pub struct CommitPage {
    pub l: Layout,
    pub h: RepoHead,
    pub c: CommitItem,
    pub description: String,
    pub parents: Vec<(String, String)>,
    pub changes: Vec<Change>,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
}

/// `GET /{ns}/{name}/commit/{oid}` (a full id or an unambiguous prefix).
pub async fn commit(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let want = repo_ref::param(&req, "oid")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let not_found = || ApiError::RevisionNotFound(want.clone());
    if want.len() < 4 || want.len() > 40 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found().into());
    }
    let oid = match db::git::commits_by_prefix(&state.db, p.ctx.repo.id, &want).await?[..] {
        [ref one] => one.clone(),
        _ => return Err(not_found().into()),
    };
    let c = db::git::commit(&state.db, p.ctx.repo.id, &oid)
        .await?
        .ok_or_else(not_found)?;
    let h = repo_view::head(&state, &p, "commits", &oid, &c).await?;
    let changes: Vec<Change> = db::git::changes(&state.db, p.ctx.repo.id, &oid)
        .await?
        .into_iter()
        .map(|(path, kind)| Change {
            url: (kind != "deleted")
                .then(|| format!("{}/blob/{}/{}", h.url, oid, text::path(&path))),
            path,
            kind,
        })
        .collect();
    let count = |k: &str| changes.iter().filter(|c| c.kind == k).count();
    page(&CommitPage {
        added: count("added"),
        modified: count("modified"),
        deleted: count("deleted"),
        description: c.description().to_string(),
        parents: c
            .parent_oids
            .iter()
            .map(|p| (p.clone(), text::short(p)))
            .collect(),
        c: CommitItem::from_row(&c),
        l: p.layout,
        h,
        changes,
    })
}
