//! `list_repo_tree` (`GET .../tree/{rev}[/{path}]`) and `get_paths_info`
//! (`POST .../paths-info/{rev}`). Listings are paginated as on the Hub: a
//! `Link: <...>; rel="next"` header whose URL carries an opaque `cursor` (the
//! last path of the page), so each page costs its own entries (keyset reads,
//! `db::git::list_page`) whatever the size of the repo. A commit's listing
//! never changes, so a cursor stays valid for its commit.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::db::git::Entry;
use crate::domain::RepoPath;
use crate::error::{clip, ApiError, ApiResult, BodyError, QueryError};
use crate::registry::files::{self, entry_json, entry_not_found};
use crate::registry::repo_ref::{param, query_bool};
use crate::registry::{self, hf_date, RepoRef};
use crate::routes::body::read_limited;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

const PAGE: usize = 1000;
const PAGE_EXPANDED: usize = 100;

/// Adds `lastCommit` to entries (for `expand=true`).
async fn expand(
    state: &AppState,
    repo_id: i64,
    commit: &str,
    entries: &mut [Value],
    items: &[Entry],
) -> ApiResult<()> {
    let paths: Vec<String> = items.iter().map(|e| e.path.clone()).collect();
    let last = db::git::last_commits(&state.db, repo_id, commit, &paths).await?;
    let by_path: std::collections::HashMap<_, _> = last
        .into_iter()
        .map(|(p, id, title, t)| (p, (id, title, t)))
        .collect();
    for (v, e) in entries.iter_mut().zip(items) {
        if let Some((id, title, t)) = by_path.get(&e.path) {
            let date = chrono::DateTime::from_timestamp(*t, 0)
                .map(hf_date)
                .unwrap_or_default();
            v["lastCommit"] = json!({"id": id, "title": title, "date": date});
        }
    }
    Ok(())
}

pub async fn tree(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let rev = param(&req, "rev").unwrap_or_default();
    let resolved = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    let commit = &resolved.commit;
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let recursive = query_bool("recursive", get("recursive"))?.unwrap_or(false);
    let with_expand = query_bool("expand", get("expand"))?.unwrap_or(false);
    let path = param(&req, "path").unwrap_or_default();
    let path = path.trim_matches('/');
    let (tree_oid, prefix) = if path.is_empty() {
        (commit.tree_oid.clone(), String::new())
    } else {
        let p = RepoPath::parse(path).map_err(|_| entry_not_found(path, &commit.oid))?;
        match files::entry_at(&state, &commit.tree_oid, p.as_str()).await? {
            Some(e) if e.is_dir() => (e.oid, p.to_string()),
            _ => return Err(entry_not_found(path, &commit.oid)),
        }
    };
    let page = if with_expand { PAGE_EXPANDED } else { PAGE };
    let limit = match get("limit") {
        None => page,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| QueryError::LimitNotWhole(clip(l, 40)))?
            .min(page),
    };
    let after = get("cursor").map(files::decode_cursor).transpose()?;
    let mut conn = state.db.acquire().await?;
    let listed = db::git::list_page(
        &mut conn,
        &tree_oid,
        &prefix,
        recursive,
        after.as_deref(),
        limit,
    )
    .await?
    .ok_or(QueryError::CursorNotValid)?;
    drop(conn);
    let items = listed.entries;
    let mut out: Vec<Value> = items.iter().map(entry_json).collect();
    if with_expand {
        expand(&state, ctx.repo.id, &commit.oid, &mut out, &items).await?;
    }
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("X-Repo-Commit", commit.oid.as_str()));
    if let (true, Some(last)) = (listed.more, items.last()) {
        let rel = last
            .path
            .strip_prefix(&prefix)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(&last.path);
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| k != "cursor") {
            ser.append_pair(k, v);
        }
        ser.append_pair("cursor", &files::encode_cursor(rel));
        let next = format!("{}{}?{}", state.public_url, req.uri().path(), ser.finish());
        resp.insert_header(("Link", format!("<{next}>; rel=\"next\"")));
    }
    Ok(resp.json(out))
}

#[derive(serde::Deserialize)]
struct PathsJson {
    paths: Vec<String>,
    #[serde(default)]
    expand: Option<bool>,
}

pub async fn paths_info(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let rev = param(&req, "rev").unwrap_or_default();
    let resolved = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    let body = read_limited(&req, &mut payload.into_inner(), state.limits.json_body).await?;
    let is_json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let (paths, with_expand) = if is_json {
        let b: PathsJson = serde_json::from_slice(&body).map_err(BodyError::Json)?;
        (b.paths, b.expand.unwrap_or(false))
    } else {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        (
            pairs
                .iter()
                .filter(|(k, _)| k == "paths")
                .map(|(_, v)| v.clone())
                .collect(),
            query_bool(
                "expand",
                pairs
                    .iter()
                    .find(|(k, _)| k == "expand")
                    .map(|(_, v)| v.as_str()),
            )?
            .unwrap_or(false),
        )
    };
    if paths.len() > 10_000 {
        return Err(ApiError::PayloadTooLarge(
            "at most 10000 paths per request".into(),
        ));
    }
    let mut wanted = Vec::with_capacity(paths.len());
    for p in &paths {
        let trimmed = p.trim_matches('/');
        if trimmed.is_empty() {
            continue;
        }
        wanted.push(RepoPath::parse(trimmed)?);
    }
    let wanted: Vec<&str> = wanted.iter().map(RepoPath::as_str).collect();
    let items = files::entries_at(&state, &resolved.commit.tree_oid, &wanted).await?;
    let mut out: Vec<Value> = items.iter().map(entry_json).collect();
    if with_expand {
        expand(&state, ctx.repo.id, &resolved.commit.oid, &mut out, &items).await?;
    }
    Ok(HttpResponse::Ok()
        .insert_header(("X-Repo-Commit", resolved.commit.oid.as_str()))
        .json(out))
}
