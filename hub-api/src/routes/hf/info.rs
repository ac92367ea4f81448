//! Repo info (`model_info`, `dataset_info`) and listings (`list_models`, `list_datasets`).

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::db::repos::{ListQuery, RepoRow, SortKey};
use crate::domain::RepoType;
use crate::error::{ApiError, ApiResult, QueryError};
use crate::registry::files::{self, sibling_json};
use crate::registry::repo_ref::param;
use crate::registry::{self, hf_date, RepoRef};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Map, Value};

/// Query parameters of info and list calls (repeated keys allowed).
fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A boolean flag (absent: false); a value other than a boolean is a 400.
fn flag(pairs: &[(String, String)], key: &str) -> ApiResult<bool> {
    Ok(crate::registry::repo_ref::query_bool(key, first(pairs, key).as_deref())?.unwrap_or(false))
}

fn all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key || k == &format!("{key}[]"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn first(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// The common fields of a repo, from the repo row and (optionally) a commit's metadata.
fn base_json(row: &RepoRow, meta: Option<&db::git::CommitRow>) -> Map<String, Value> {
    let mut m = Map::new();
    let id = row.full_id();
    m.insert("_id".into(), json!(format!("{:024x}", row.id)));
    m.insert("id".into(), json!(id));
    if row.kind() == RepoType::Model {
        m.insert("modelId".into(), json!(id));
    }
    m.insert(
        "author".into(),
        json!(if row.namespace == crate::domain::names::ROOT_NAMESPACE {
            None
        } else {
            Some(&row.namespace)
        }),
    );
    m.insert("private".into(), json!(row.private));
    m.insert(
        "gated".into(),
        row.gated.as_ref().map(|g| json!(g)).unwrap_or(json!(false)),
    );
    m.insert("disabled".into(), json!(false));
    m.insert("downloads".into(), json!(row.downloads));
    m.insert("likes".into(), json!(row.likes));
    m.insert("createdAt".into(), json!(hf_date(row.created_at)));
    let (tags, pipeline, library, card, st) = match meta {
        Some(c) => (
            &c.tags,
            &c.pipeline_tag,
            &c.library_name,
            &c.card_data.0,
            c.safetensors.as_ref().map(|s| &s.0),
        ),
        None => (
            &row.tags,
            &row.pipeline_tag,
            &row.library_name,
            &row.card_data.0,
            row.safetensors.as_ref().map(|s| &s.0),
        ),
    };
    m.insert("tags".into(), json!(tags));
    if let Some(p) = pipeline {
        m.insert("pipeline_tag".into(), json!(p));
    }
    if let Some(l) = library {
        m.insert("library_name".into(), json!(l));
    }
    if card.as_object().is_some_and(|o| !o.is_empty()) {
        m.insert("cardData".into(), card.clone());
    }
    if let Some(st) = st {
        m.insert("safetensors".into(), st.clone());
    }
    m.insert(
        "lastModified".into(),
        json!(hf_date(meta.map(|c| c.time()).unwrap_or(row.last_modified))),
    );
    m
}

/// `GET /api/{type}s/{repo}` and `.../revision/{rev}`.
pub async fn repo_info(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    let rev = param(&req, "rev").unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string());
    let resolved = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    let pairs = query_pairs(&req);
    let blobs = flag(&pairs, "blobs")?;
    let mut m = base_json(&ctx.repo, Some(&resolved.commit));
    m.insert("sha".into(), json!(resolved.commit.oid));
    let entries = files::all_files(&state, &resolved.commit.tree_oid).await?;
    m.insert(
        "siblings".into(),
        json!(entries
            .iter()
            .map(|e| sibling_json(e, blobs))
            .collect::<Vec<_>>()),
    );
    if blobs {
        let used: i64 = entries
            .iter()
            .filter_map(|e| e.blob.as_ref().map(|b| b.size))
            .sum();
        m.insert("usedStorage".into(), json!(used));
    }
    if let Some(config) = resolved
        .commit
        .config_info
        .0
        .as_object()
        .filter(|o| !o.is_empty())
    {
        m.insert("config".into(), json!(config));
    }
    let expand = all(&pairs, "expand");
    if !expand.is_empty() {
        m.insert("xetEnabled".into(), json!(false));
        let keep: Vec<&str> = expand.iter().map(String::as_str).collect();
        m.retain(|k, _| k == "_id" || k == "id" || keep.contains(&k.as_str()));
    }
    Ok(HttpResponse::Ok().json(Value::Object(m)))
}

/// `GET /api/models` and `/api/datasets`: search, filters, sort, keyset pagination by `Link`.
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let kind = RepoType::parse(req.match_info().get("kind").unwrap_or("models"))?;
    let pairs = query_pairs(&req);
    let sort_s = first(&pairs, "sort").unwrap_or_else(|| "lastModified".into());
    let sort = SortKey::parse(&sort_s).ok_or_else(|| QueryError::Sort(sort_s.clone()))?;
    let full = flag(&pairs, "full")?;
    let limit = match first(&pairs, "limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| QueryError::LimitNotPositive(l.clone()))?
            .min(1000),
        None => 100,
    };
    let limit = if full { limit.min(100) } else { limit };
    let cursor = match first(&pairs, "cursor") {
        Some(c) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c.as_bytes())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or(QueryError::CursorNotValid)?,
        ),
        None => None,
    };
    let mut filters = all(&pairs, "filter");
    for key in [
        "language",
        "license",
        "task_categories",
        "task_ids",
        "size_categories",
    ] {
        for v in all(&pairs, key) {
            filters.push(if key == "language" {
                v
            } else {
                format!("{key}:{v}")
            });
        }
    }
    let q = ListQuery {
        repo_type: kind.as_str().to_string(),
        search: all(&pairs, "search")
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        author: first(&pairs, "author").filter(|a| !a.is_empty()),
        filters,
        pipeline_tag: first(&pairs, "pipeline_tag"),
        library: first(&pairs, "library"),
        license: None,
        gated: crate::registry::repo_ref::query_bool("gated", first(&pairs, "gated").as_deref())?,
        sort,
        limit: limit + 1,
        cursor,
        // Restricted tokens list like anonymous callers (private repos never show).
        viewer: crate::auth::access::list_viewer(auth.principal()),
    };
    let mut rows = db::repos::list(&state.db, &q).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut m = base_json(row, None);
        if full {
            if let Some(r) = db::refs::get(
                &state.db,
                row.id,
                &format!("refs/heads/{}", registry::DEFAULT_BRANCH),
            )
            .await?
            {
                m.insert("sha".into(), json!(r.commit_oid));
                if let Some(c) = db::git::commit(&state.db, row.id, &r.commit_oid).await? {
                    let entries = files::all_files(&state, &c.tree_oid).await?;
                    m.insert(
                        "siblings".into(),
                        json!(entries
                            .iter()
                            .map(|e| sibling_json(e, false))
                            .collect::<Vec<_>>()),
                    );
                }
            }
        }
        out.push(Value::Object(m));
    }
    let mut resp = HttpResponse::Ok();
    if more {
        if let Some(last) = rows.last() {
            let c = db::repos::cursor_after(last, sort);
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&c).map_err(ApiError::internal)?);
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs.iter().filter(|(k, _)| k != "cursor") {
                ser.append_pair(k, v);
            }
            ser.append_pair("cursor", &token);
            let next = format!("{}{}?{}", state.public_url, req.path(), ser.finish());
            resp.insert_header(("Link", format!("<{next}>; rel=\"next\"")));
        }
    }
    Ok(resp.json(out))
}

/// `GET /api/{type}s/{a}/refs`, `.../auth-check` and `.../lfs-files`
/// (routes::build): the action on the single-segment repo `a`, or the info of
/// a two-segment repo `a/refs` (...) when the caller can read one (the paths have the
/// same shape; such a repo's info is what the path always meant, and a repo
/// the caller cannot see changes nothing, so nothing leaks).
async fn readable_twin(
    state: &AppState,
    auth: &Auth,
    repo: &RepoRef,
    word: &str,
) -> Option<RepoRef> {
    if repo.id.namespace.is_some() {
        return None;
    }
    let id = crate::domain::RepoId::from_parts(Some(repo.id.name.as_str()), word).ok()?;
    registry::load_repo(state, auth, repo.kind, &id, Access::Read)
        .await
        .ok()?;
    Some(RepoRef {
        kind: repo.kind,
        id,
    })
}

/// `GET /api/{type}s/{name}/refs` (see [`readable_twin`]).
pub async fn refs_or_info(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    match readable_twin(&state, &auth, &repo, "refs").await {
        Some(twin) => repo_info(state, auth, twin, req).await,
        None => super::refs::list_refs(state, auth, repo, req).await,
    }
}

/// `GET /api/{type}s/{name}/auth-check` (see [`readable_twin`]).
pub async fn auth_check_or_info(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    match readable_twin(&state, &auth, &repo, "auth-check").await {
        Some(twin) => repo_info(state, auth, twin, req).await,
        None => super::access::auth_check(state, auth, repo).await,
    }
}

/// `GET /api/{type}s/{name}/lfs-files` (see [`readable_twin`]).
pub async fn lfs_files_or_info(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    match readable_twin(&state, &auth, &repo, "lfs-files").await {
        Some(twin) => repo_info(state, auth, twin, req).await,
        None => super::lfs_files::list(state, auth, repo, req).await,
    }
}
