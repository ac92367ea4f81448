//! The Hub's discussion and pull request API, as `huggingface_hub` calls it
//! (`hf_api.py`: `get_repo_discussions`, `get_discussion_details`,
//! `create_discussion`, `create_pull_request`, `comment_discussion`,
//! `rename_discussion`, `change_discussion_status`, `merge_pull_request`,
//! `edit_discussion_comment`, `hide_discussion_comment`). The rules are in
//! `registry::discussions`.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db::discussions::{DiscussionRow, EventRow, Filter};
use crate::error::{ApiError, ApiResult};
use crate::registry::discussions as disc;
use crate::registry::repo_ref::param;
use crate::registry::{self, hf_date, RepoCtx, RepoRef};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

fn num_param(req: &HttpRequest) -> ApiResult<i32> {
    let raw = param(req, "num").unwrap_or_default();
    raw.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "discussion number {raw:?} is not a positive whole number"
        ))
    })
}

fn author_json(name: &Option<String>) -> Value {
    match name {
        Some(n) => json!({"name": n, "type": "user"}),
        None => json!({"name": "deleted", "type": "user"}),
    }
}

fn repo_json(ctx: &RepoCtx) -> Value {
    json!({"name": ctx.repo.full_id(), "type": ctx.repo.repo_type})
}

pub fn discussion_json(ctx: &RepoCtx, d: &DiscussionRow) -> Value {
    json!({
        "num": d.num,
        "title": d.title,
        "status": d.status,
        "createdAt": hf_date(d.created_at),
        "author": author_json(&d.author),
        "isPullRequest": d.is_pull_request,
        "repo": repo_json(ctx),
        "pinned": false,
    })
}

/// An event as the Hub sends it (`community.py::deserialize_event`).
pub fn event_json(e: &EventRow) -> Value {
    let data = &e.data.0;
    let data = match e.kind.as_str() {
        "comment" => {
            let hidden = data["hidden"].as_bool() == Some(true);
            let raw = if hidden {
                ""
            } else {
                data["raw"].as_str().unwrap_or("")
            };
            let history = data["history"].as_array().cloned().unwrap_or_default();
            let latest = history.first().cloned().unwrap_or(json!({}));
            json!({
                "edited": data["edited"].as_bool() == Some(true),
                "hidden": hidden,
                "hiddenBy": data.get("hiddenBy"),
                "numEdits": history.len().saturating_sub(1),
                "editors": history.iter().filter_map(|h| h["author"].as_str()).collect::<std::collections::BTreeSet<_>>(),
                "latest": {
                    "raw": raw,
                    "html": format!("<p>{}</p>", html_escape(raw)),
                    "updatedAt": latest["updatedAt"],
                    "author": {"name": latest["author"]},
                },
                "history": if hidden { json!([]) } else {
                    json!(history.iter().map(|h| json!({"raw": h["raw"], "updatedAt": h["updatedAt"], "author": {"name": h["author"]}})).collect::<Vec<_>>())
                },
            })
        }
        _ => data.clone(),
    };
    json!({
        "id": e.event_id,
        "type": e.kind,
        "createdAt": hf_date(e.created_at),
        "author": author_json(&e.author),
        "data": data,
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn read_ctx(state: &AppState, auth: &Auth, repo: &RepoRef) -> ApiResult<RepoCtx> {
    registry::load_repo(state, auth, repo.kind, &repo.id, Access::Read).await
}

/// The repo (read access) and the discussion number a thread route names.
async fn thread(
    state: &AppState,
    auth: &Auth,
    repo: &RepoRef,
    req: &HttpRequest,
) -> ApiResult<(RepoCtx, i32)> {
    let ctx = read_ctx(state, auth, repo).await?;
    Ok((ctx, num_param(req)?))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    p: Option<i64>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    search: Option<String>,
}

/// `GET /api/{type}s/{repo}/discussions?p=&type=&status=&author=`
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    q: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let ctx = read_ctx(&state, &auth, &repo).await?;
    let page = q.p.unwrap_or(0);
    if !(0..=100_000).contains(&page) {
        return Err(ApiError::InvalidRequest(format!(
            "p must be a page number from 0, not {page}"
        )));
    }
    let pull_requests = match q.kind.as_deref() {
        None | Some("all") => None,
        Some("discussion") => Some(false),
        Some("pull_request") => Some(true),
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "type must be all, discussion or pull_request, not {other:?}"
            )))
        }
    };
    let open = match q.status.as_deref() {
        None | Some("all") => None,
        Some("open") => Some(true),
        Some("closed") => Some(false),
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "status must be all, open or closed, not {other:?}"
            )))
        }
    };
    if q.search.is_some() {
        return Err(ApiError::InvalidRequest(
            "search is not supported on discussions; filter by type, status or author".into(),
        ));
    }
    let filter = Filter {
        pull_requests,
        open,
        author: q.author.clone(),
    };
    let mut conn = state.db.acquire().await?;
    let (rows, count) = crate::db::discussions::list(
        &mut conn,
        ctx.repo.id,
        &filter,
        page * disc::PAGE,
        disc::PAGE,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "discussions": rows.iter().map(|d| discussion_json(&ctx, d)).collect::<Vec<_>>(),
        "count": count,
        "start": page * disc::PAGE,
    })))
}

/// A discussion with its events; a pull request also with its changes,
/// conflicts and (`?diff=1`) its diff.
async fn details(
    state: &AppState,
    ctx: &RepoCtx,
    d: &DiscussionRow,
    with_diff: bool,
) -> ApiResult<Value> {
    let events = crate::db::discussions::events(&state.db, d.id).await?;
    let mut v = discussion_json(ctx, d);
    v["events"] = json!(events.iter().map(event_json).collect::<Vec<_>>());
    if d.is_pull_request {
        let target = d.target_branch.clone().unwrap_or_default();
        v["changes"] =
            json!({"base": format!("refs/heads/{target}"), "mergeCommitId": d.merge_commit_oid});
        let plan = disc::plan(state, ctx, d).await;
        let (conflicts, diff) = match plan {
            Ok(plan) => {
                let diff = if with_diff {
                    Some(disc::diff(state, &plan).await?)
                } else {
                    None
                };
                (
                    if d.status == "merged" {
                        vec![]
                    } else {
                        plan.conflicts
                    },
                    diff,
                )
            }
            // The target branch is gone: nothing can merge.
            Err(ApiError::RevisionNotFound(_)) => (vec![], None),
            Err(e) => return Err(e),
        };
        v["filesWithConflicts"] = json!(conflicts);
        if let Some(diff) = diff {
            v["diff"] = json!(diff);
        }
    } else {
        v["filesWithConflicts"] = json!([]);
    }
    Ok(v)
}

/// `GET /api/{type}s/{repo}/discussions/{num}[?diff=1]`
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let d = disc::get(&state, &ctx, num).await?;
    let with_diff = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "diff" && (v == "1" || v == "true"));
    // A diff shows file contents: on a gated repo, only to callers who pass
    // the gate (the others get the discussion without it, as the client
    // takes a missing diff).
    let may_read_files = ctx.repo.gated.is_none()
        || crate::gating::authorize(&state, &auth, ctx.clone())
            .await
            .is_ok();
    let body = details(&state, &ctx, &d, with_diff && may_read_files).await?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "pullRequest")]
    pull_request: bool,
}

/// `POST /api/{type}s/{repo}/discussions` `{title, description, pullRequest}`:
/// a pull request starts as a draft on the default branch.
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<HttpResponse> {
    let ctx = read_ctx(&state, &auth, &repo).await?;
    let p = disc::participant(&auth, &ctx)?;
    let pull = body
        .pull_request
        .then_some((registry::DEFAULT_BRANCH, None, "draft"));
    let d = disc::create(
        &state,
        &ctx,
        p,
        &body.title,
        body.description.as_deref().unwrap_or(""),
        pull,
        true,
    )
    .await?;
    Ok(HttpResponse::Ok().json(details(&state, &ctx, &d, false).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    comment: String,
}

/// `POST .../discussions/{num}/comment` `{comment}` → `{newMessage}`
pub async fn comment(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<CommentBody>,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let p = disc::participant(&auth, &ctx)?;
    let e = disc::comment(&state, &ctx, p, num, &body.comment).await?;
    Ok(HttpResponse::Ok().json(json!({"newMessage": event_json(&e)})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleBody {
    title: String,
}

/// `POST .../discussions/{num}/title` `{title}` → `{newTitle}`
pub async fn title(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<TitleBody>,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let p = disc::participant(&auth, &ctx)?;
    let e = disc::rename(&state, &ctx, p, num, &body.title).await?;
    Ok(HttpResponse::Ok().json(json!({"newTitle": event_json(&e)})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: String,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST .../discussions/{num}/status` `{status: open|closed, comment?}` → `{newStatus}`
pub async fn status(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<StatusBody>,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let p = disc::participant(&auth, &ctx)?;
    let e = disc::set_status(&state, &ctx, p, num, &body.status, body.comment.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({"newStatus": event_json(&e)})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    #[serde(default)]
    comment: Option<String>,
}

/// `POST .../discussions/{num}/merge` `[{comment}]`: writers merge an open
/// pull request (409 with the conflicting files when it cannot).
pub async fn merge(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<MergeBody>,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let p = disc::participant(&auth, &ctx)?;
    let oid = disc::merge(&state, &ctx, p, num, body.comment.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({"mergeCommitId": oid})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    content: String,
}

/// `POST .../discussions/{num}/comment/{id}/edit` `{content}` → `{updatedComment}`
pub async fn edit_comment(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<EditBody>,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let p = disc::participant(&auth, &ctx)?;
    let id = param(&req, "comment").unwrap_or_default();
    let e = disc::edit_comment(&state, &ctx, p, num, &id, &body.content).await?;
    Ok(HttpResponse::Ok().json(json!({"updatedComment": event_json(&e)})))
}

/// `POST .../discussions/{num}/comment/{id}/hide` → `{updatedComment}`
pub async fn hide_comment(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (ctx, num) = thread(&state, &auth, &repo, &req).await?;
    let p = disc::participant(&auth, &ctx)?;
    let id = param(&req, "comment").unwrap_or_default();
    let e = disc::hide_comment(&state, &ctx, p, num, &id).await?;
    Ok(HttpResponse::Ok().json(json!({"updatedComment": event_json(&e)})))
}
