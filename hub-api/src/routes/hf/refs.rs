//! Refs, history, and branch and tag management.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::domain::RefName;
use crate::error::{ApiError, ApiResult};
use crate::registry::repo_ref::param;
use crate::registry::{self, hf_date, RepoRef};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

pub async fn list_refs(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let refs = db::refs::list(&state.db, ctx.repo.id).await?;
    let item = |r: &db::refs::RefRow, prefix: &str| json!({"name": r.name.trim_start_matches(prefix), "ref": r.name, "targetCommit": r.commit_oid});
    let branches: Vec<_> = refs
        .iter()
        .filter(|r| r.name.starts_with("refs/heads/"))
        .map(|r| item(r, "refs/heads/"))
        .collect();
    let tags: Vec<_> = refs
        .iter()
        .filter(|r| r.name.starts_with("refs/tags/"))
        .map(|r| item(r, "refs/tags/"))
        .collect();
    let converts: Vec<_> = refs
        .iter()
        .filter(|r| r.name.starts_with("refs/convert/"))
        .map(|r| item(r, "refs/convert/"))
        .collect();
    let mut body = json!({"branches": branches, "converts": converts, "tags": tags});
    if req.query_string().contains("include_prs") {
        body["pullRequests"] = json!([]);
    }
    Ok(HttpResponse::Ok().json(body))
}

pub async fn list_commits(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let rev = param(&req, "rev").unwrap_or_default();
    let resolved = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let limit: i64 = get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(50)
        .min(500);
    let page: i64 = get("p")
        .and_then(|l| l.parse().ok())
        .filter(|p| *p >= 0)
        .unwrap_or(0);
    let formatted = q
        .iter()
        .any(|(k, v)| k.starts_with("expand") && v == "formatted");
    let rows = db::git::history(
        &state.db,
        ctx.repo.id,
        &resolved.commit.oid,
        page * limit,
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let out: Vec<_> = rows
        .iter()
        .take(limit as usize)
        .map(|c| {
            let mut v = json!({
                "id": c.oid,
                "title": c.title,
                "message": c.description(),
                "date": hf_date(c.time()),
                "authors": [{"user": c.author_name, "avatar": format!("{}/avatars/{}", state.public_url, c.author_name)}],
            });
            if formatted {
                v["formatted"] = json!({"title": c.title, "message": c.description()});
            }
            v
        })
        .collect();
    let mut resp = HttpResponse::Ok();
    if more {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| k != "p") {
            ser.append_pair(k, v);
        }
        ser.append_pair("p", &(page + 1).to_string());
        let next = format!("{}{}?{}", state.public_url, req.uri().path(), ser.finish());
        resp.insert_header(("Link", format!("<{next}>; rel=\"next\"")));
    }
    Ok(resp.json(out))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchBody {
    #[serde(default)]
    starting_point: Option<String>,
}

pub async fn create_branch(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<BranchBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let name = RefName::parse(&param(&req, "rev").unwrap_or_default())?;
    let start = body
        .starting_point
        .unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string());
    let resolved = registry::resolve_str(&state, ctx.repo.id, &start).await?;
    // A tag of the same name may exist, as on the Hub: a branch shadows it
    // (revisions resolve `refs/heads/` first).
    let mut tx = state.db.begin().await?;
    let actor = auth.principal().map(|p| p.user_id);
    if !db::refs::create(
        &mut tx,
        ctx.repo.id,
        &name.branch_ref(),
        &resolved.commit.oid,
        None,
        actor,
    )
    .await?
    {
        return Err(ApiError::Conflict(format!(
            "Reference {} already exists",
            name.branch_ref()
        )));
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

pub async fn delete_branch(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let name = RefName::parse(&param(&req, "rev").unwrap_or_default())?;
    if name.as_str() == registry::DEFAULT_BRANCH {
        return Err(ApiError::Forbidden(format!(
            "Cannot delete {}",
            name.branch_ref()
        )));
    }
    let mut tx = state.db.begin().await?;
    if !db::refs::delete(
        &mut tx,
        ctx.repo.id,
        &name.branch_ref(),
        auth.principal().map(|p| p.user_id),
    )
    .await?
    {
        return Err(ApiError::RevisionNotFound(name.as_str().to_string()));
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct TagBody {
    tag: String,
    #[serde(default)]
    message: Option<String>,
}

/// `POST .../tag/{revision}`: the URL names the revision to tag, the body the tag.
pub async fn create_tag(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<TagBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    // The revision first: a missing one is 404 even when the tag name is bad.
    let rev = param(&req, "rev").unwrap_or_default();
    let resolved = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    let name = RefName::parse(&body.tag)?;
    let mut tx = state.db.begin().await?;
    if db::refs::get(&mut *tx, ctx.repo.id, &name.branch_ref())
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "a branch named {} exists",
            name.as_str()
        )));
    }
    let actor = auth.principal().map(|p| p.user_id);
    if !db::refs::create(
        &mut tx,
        ctx.repo.id,
        &name.tag_ref(),
        &resolved.commit.oid,
        body.message.as_deref(),
        actor,
    )
    .await?
    {
        return Err(ApiError::Conflict(format!(
            "Reference {} already exists",
            name.tag_ref()
        )));
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

pub async fn delete_tag(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let name = RefName::parse(&param(&req, "rev").unwrap_or_default())?;
    let mut tx = state.db.begin().await?;
    if !db::refs::delete(
        &mut tx,
        ctx.repo.id,
        &name.tag_ref(),
        auth.principal().map(|p| p.user_id),
    )
    .await?
    {
        return Err(ApiError::RevisionNotFound(name.as_str().to_string()));
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct SquashBody {
    message: String,
}

/// `POST .../super-squash/{branch}` (`super_squash_history`): the branch
/// becomes one root commit with its current files.
pub async fn super_squash(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<SquashBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let p = auth.require()?;
    // A branch, or a pull request's ref (huggingface_hub squashes
    // `refs/pr/N` by its full name).
    let raw = param(&req, "rev").unwrap_or_default();
    let target = match raw.strip_prefix("refs/pr/") {
        Some(n) if n.parse::<u32>().is_ok() => raw.clone(),
        _ => RefName::parse(&raw)?.branch_ref(),
    };
    let done = registry::commit::super_squash(&state, &ctx.repo, &target, p, &body.message).await?;
    Ok(HttpResponse::Ok().json(json!({"commitOid": done.oid})))
}
