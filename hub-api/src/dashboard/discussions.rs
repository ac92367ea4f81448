//! The repo's Community tab: its discussions and pull requests, and one
//! thread with its comments, events and (pull requests) the diff of its text
//! files, a comment box, and the merge and close buttons for those who may.
//! The forms call the HF discussion API (`routes::hf::discussions`).

use super::repo_view::{self, RepoHead};
use super::{markdown, page, text, Layout, PageResult};
use crate::auth::access::Access;
use crate::db;
use crate::db::discussions::Filter;
use crate::registry::discussions as disc;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

pub struct Item {
    pub num: i32,
    pub title: String,
    pub status: String,
    pub is_pull_request: bool,
    pub author: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "repo/discussions.html")]
pub struct ListPage {
    pub l: Layout,
    pub h: RepoHead,
    pub items: Vec<Item>,
    pub count: i64,
    pub can_post: bool,
}

/// `GET /{ns}/{name}/discussions`: the newest 50.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let rev = crate::registry::DEFAULT_BRANCH;
    let resolved = repo_view::resolve(&state, &p, rev).await?;
    let h = repo_view::head(&state, &p, "community", rev, &resolved.commit).await?;
    let mut conn = state.db.acquire().await?;
    let (rows, count) =
        db::discussions::list(&mut conn, p.ctx.repo.id, &Filter::default(), 0, disc::PAGE).await?;
    let items = rows
        .into_iter()
        .map(|d| Item {
            num: d.num,
            title: d.title,
            status: d.status,
            is_pull_request: d.is_pull_request,
            author: d.author.unwrap_or_else(|| "deleted".into()),
            created: text::ago(d.created_at),
        })
        .collect();
    let can_post = disc::participant(&p.auth, &p.ctx).is_ok();
    page(&ListPage {
        l: p.layout,
        h,
        items,
        count,
        can_post,
    })
}

pub struct Event {
    pub kind: String,
    pub author: String,
    pub when: String,
    /// Comments: rendered Markdown (raw HTML escaped); empty when hidden.
    pub html: String,
    pub hidden: bool,
    pub edited: bool,
    /// Other events: what happened, as text.
    pub what: String,
    pub oid: String,
}

/// One line of a diff, with its kind for colouring.
pub struct DiffLine {
    pub class: &'static str,
    pub text: String,
}

#[derive(Template)]
#[template(path = "repo/discussion.html")]
pub struct ThreadPage {
    pub l: Layout,
    pub h: RepoHead,
    pub num: i32,
    pub title: String,
    pub status: String,
    pub is_pull_request: bool,
    pub author: String,
    pub created: String,
    pub target: String,
    pub events: Vec<Event>,
    pub diff: Vec<DiffLine>,
    /// Why no diff shows (gated repo, nothing changed).
    pub diff_note: String,
    pub conflicts: Vec<String>,
    pub merge_commit: String,
    pub can_post: bool,
    pub can_merge: bool,
    pub can_close: bool,
}

/// `GET /{ns}/{name}/discussions/{num}`.
pub async fn thread(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let num = crate::registry::repo_ref::param(&req, "num")
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 0)
        .ok_or(crate::error::ApiError::NotFound("discussion"))?;
    let d = disc::get(&state, &p.ctx, num).await?;
    let rev = crate::registry::DEFAULT_BRANCH;
    let resolved = repo_view::resolve(&state, &p, rev).await?;
    let h = repo_view::head(&state, &p, "community", rev, &resolved.commit).await?;
    let base = markdown::Base {
        repo_url: &h.url,
        rev: &h.rev_seg,
    };
    let events = db::discussions::events(&state.db, d.id)
        .await?
        .into_iter()
        .map(|e| {
            let data = &e.data.0;
            let hidden = data["hidden"].as_bool() == Some(true);
            let raw = data["raw"].as_str().unwrap_or("");
            let (html, what) = match e.kind.as_str() {
                "comment" if hidden => (String::new(), String::new()),
                "comment" => (markdown::render(raw, &base), String::new()),
                "status-change" => (
                    String::new(),
                    format!(
                        "changed the status to {}",
                        data["status"].as_str().unwrap_or("")
                    ),
                ),
                "title-change" => (
                    String::new(),
                    format!(
                        "renamed it from “{}” to “{}”",
                        data["from"].as_str().unwrap_or(""),
                        data["to"].as_str().unwrap_or("")
                    ),
                ),
                "commit" => (
                    String::new(),
                    format!("pushed “{}”", data["subject"].as_str().unwrap_or("")),
                ),
                _ => (String::new(), String::new()),
            };
            Event {
                kind: e.kind.clone(),
                author: e.author.clone().unwrap_or_else(|| "deleted".into()),
                when: text::ago(e.created_at),
                html,
                hidden,
                edited: data["edited"].as_bool() == Some(true),
                what,
                oid: data["oid"].as_str().map(text::short).unwrap_or_default(),
            }
        })
        .collect();
    let (mut diff, mut diff_note, mut conflicts) = (Vec::new(), String::new(), Vec::new());
    if d.is_pull_request {
        let may_read_files = p.ctx.repo.gated.is_none()
            || crate::gating::authorize(&state, &p.auth, p.ctx.clone())
                .await
                .is_ok();
        match disc::plan(&state, &p.ctx, &d).await {
            Ok(plan) => {
                if d.status != "merged" {
                    conflicts = plan.conflicts.clone();
                }
                if !may_read_files {
                    diff_note =
                        "The changes are shown to those with access to this gated repository."
                            .into();
                } else if plan.changes.is_empty() {
                    diff_note = "No changes yet.".into();
                } else {
                    diff = disc::diff(&state, &plan)
                        .await?
                        .lines()
                        .map(|l| DiffLine {
                            class: if l.starts_with("diff --git")
                                || l.starts_with("+++")
                                || l.starts_with("---")
                            {
                                "file"
                            } else if l.starts_with("@@") {
                                "hunk"
                            } else if l.starts_with('+') {
                                "add"
                            } else if l.starts_with('-') {
                                "del"
                            } else {
                                "ctx"
                            },
                            text: l.to_string(),
                        })
                        .collect();
                }
            }
            Err(_) => diff_note = "The target branch no longer exists.".into(),
        }
    }
    let viewer = p.auth.principal().map(|v| v.user_id);
    let can_post = disc::participant(&p.auth, &p.ctx).is_ok();
    let writer = p.ctx.access >= Access::Write;
    page(&ThreadPage {
        num: d.num,
        title: d.title.clone(),
        status: d.status.clone(),
        is_pull_request: d.is_pull_request,
        author: d.author.clone().unwrap_or_else(|| "deleted".into()),
        created: text::ago(d.created_at),
        target: d.target_branch.clone().unwrap_or_default(),
        events,
        diff,
        diff_note,
        merge_commit: d.merge_commit_oid.clone().unwrap_or_default(),
        can_merge: can_post && writer && d.status == "open" && conflicts.is_empty(),
        can_close: can_post && (writer || viewer == d.author_id) && d.status != "merged",
        conflicts,
        can_post,
        l: p.layout,
        h,
    })
}
