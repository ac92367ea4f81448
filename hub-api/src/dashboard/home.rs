//! Browse pages: `/` and `/models` (models), `/datasets` (datasets): a search
//! box, filters (task, library, license, author, tag), sort and pages, over
//! `db::repos::list` with the viewer, exactly as `GET /api/models` lists.

use super::{page, text, viewer, Layout, PageResult};
use crate::db;
use crate::db::repos::{Cursor, ListQuery, RepoRow, SortKey};
use crate::domain::RepoType;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use base64::Engine;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the filter choices are reused.
pub const FACETS_TTL: Duration = Duration::from_secs(30);

/// The filter choices (tasks, libraries, licenses with counts) of public
/// repos, computed at most every [`FACETS_TTL`] per app (the cache lives in
/// [`AppState::facets`]): they are the same for every viewer (private repos
/// are not counted, so the counts show nothing private) and grouping every
/// repo on each page view is the most expensive part of the page at 10,000
/// repos.
#[derive(Default)]
pub struct FacetsCache(Mutex<Vec<(RepoType, Instant, db::browse::Facets)>>);

impl FacetsCache {
    /// The cached choices of a repo kind, if fresh.
    fn fresh(&self, kind: RepoType) -> Option<db::browse::Facets> {
        self.0
            .lock()
            .expect("facets cache")
            .iter()
            .find(|(k, at, _)| *k == kind && at.elapsed() < FACETS_TTL)
            .map(|(_, _, f)| f.clone())
    }

    fn put(&self, kind: RepoType, f: db::browse::Facets) {
        let mut c = self.0.lock().expect("facets cache");
        c.retain(|(k, _, _)| *k != kind);
        c.push((kind, Instant::now(), f));
    }
}

async fn facets(state: &AppState, kind: RepoType) -> PageResult<db::browse::Facets> {
    if let Some(f) = state.facets.fresh(kind) {
        return Ok(f);
    }
    let f = db::browse::facets(&state.db, kind.as_str(), None).await?;
    state.facets.put(kind, f.clone());
    Ok(f)
}

/// Repos per page.
pub const PAGE_SIZE: i64 = 30;

/// The browse page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub task: String,
    #[serde(default)]
    pub library: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub page: Option<u32>,
}

/// One repo in a list.
pub struct RepoCard {
    pub id: String,
    pub url: String,
    pub task: String,
    pub library: String,
    pub private: bool,
    pub gated: bool,
    pub updated: String,
    pub updated_iso: String,
    pub downloads: String,
    pub likes: String,
    pub params: String,
}

impl RepoCard {
    pub fn from_row(r: &RepoRow) -> Self {
        let id = r.full_id();
        Self {
            url: format!("/{}{}", r.kind().url_prefix(), id),
            id,
            task: r.pipeline_tag.clone().unwrap_or_default(),
            library: r.library_name.clone().unwrap_or_default(),
            private: r.private,
            gated: r.gated.is_some(),
            updated: text::ago(r.last_modified),
            updated_iso: text::iso(r.last_modified),
            downloads: text::count(r.downloads),
            likes: text::count(r.likes),
            params: r
                .safetensors
                .as_ref()
                .and_then(|s| s.0.get("total").and_then(|t| t.as_i64()))
                .map(text::params)
                .unwrap_or_default(),
        }
    }
}

/// A select's option.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn choices(list: &[(String, i64)], current: &str) -> Vec<Choice> {
    let mut out: Vec<Choice> = list
        .iter()
        .map(|(v, n)| Choice {
            value: v.clone(),
            label: format!("{v} ({})", text::count(*n)),
            selected: v == current,
        })
        .collect();
    if !current.is_empty() && !out.iter().any(|c| c.selected) {
        out.push(Choice {
            value: current.to_string(),
            label: current.to_string(),
            selected: true,
        });
    }
    out
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub l: Layout,
    pub kind_title: &'static str,
    pub kind_path: &'static str,
    pub q: BrowseQuery,
    pub sort: &'static str,
    pub repos: Vec<RepoCard>,
    pub tasks: Vec<Choice>,
    pub libraries: Vec<Choice>,
    pub licenses: Vec<Choice>,
    pub next: Option<String>,
    pub first: Option<String>,
    pub page_no: u32,
    pub filtered: bool,
}

fn sort_name(s: SortKey) -> &'static str {
    match s {
        SortKey::Downloads => "downloads",
        SortKey::Likes => "likes",
        SortKey::CreatedAt => "created",
        SortKey::LastModified => "updated",
    }
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The link to another page of the same listing.
fn page_link(path: &str, q: &BrowseQuery, sort: &str, cursor: Option<&str>, page: u32) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("q", &q.q),
        ("task", &q.task),
        ("library", &q.library),
        ("license", &q.license),
        ("author", &q.author),
        ("tag", &q.tag),
    ] {
        if !v.is_empty() {
            parts.push(format!("{k}={}", text::query_escape(v)));
        }
    }
    if sort != "updated" {
        parts.push(format!("sort={sort}"));
    }
    if let Some(c) = cursor {
        parts.push(format!("cursor={c}&page={page}"));
    }
    if parts.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

async fn browse(
    state: &AppState,
    req: &HttpRequest,
    kind: RepoType,
    q: BrowseQuery,
) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(req).await?;
    let p = auth.principal();
    let viewer = crate::auth::access::list_viewer(p);
    let sort = SortKey::parse(&q.sort)
        .or(match q.sort.as_str() {
            "created" => Some(SortKey::CreatedAt),
            _ => None,
        })
        .unwrap_or(SortKey::LastModified);
    let cursor: Option<Cursor> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(q.cursor.as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let list = ListQuery {
        repo_type: kind.as_str().to_string(),
        search: q.q.split_whitespace().take(8).map(str::to_string).collect(),
        author: opt(&q.author),
        filters: opt(&q.tag).into_iter().collect(),
        pipeline_tag: opt(&q.task),
        library: opt(&q.library),
        license: opt(&q.license),
        gated: None,
        sort,
        limit: PAGE_SIZE + 1,
        cursor,
        viewer,
    };
    let mut rows = db::repos::list(&state.db, &list).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let facets = facets(state, kind).await?;
    let path = if kind == RepoType::Dataset {
        "/datasets"
    } else {
        "/models"
    };
    let page_no = q.page.unwrap_or(1).max(1);
    let next = match (more, rows.last()) {
        (true, Some(last)) => {
            let c = serde_json::to_vec(&db::repos::cursor_after(last, sort))
                .map_err(crate::error::ApiError::internal)?;
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c);
            Some(page_link(
                path,
                &q,
                sort_name(sort),
                Some(&token),
                page_no + 1,
            ))
        }
        _ => None,
    };
    let first = (page_no > 1).then(|| page_link(path, &q, sort_name(sort), None, 1));
    let mut l = Layout::new(state, req, p);
    l.q = q.q.clone();
    let filtered = [&q.q, &q.task, &q.library, &q.license, &q.author, &q.tag]
        .iter()
        .any(|v| !v.is_empty());
    page(&HomePage {
        l,
        kind_title: if kind == RepoType::Dataset {
            "Datasets"
        } else {
            "Models"
        },
        kind_path: path,
        sort: sort_name(sort),
        repos: rows.iter().map(RepoCard::from_row).collect(),
        tasks: choices(&facets.tasks, &q.task),
        libraries: choices(&facets.libraries, &q.library),
        licenses: choices(&facets.licenses, &q.license),
        next,
        first,
        page_no,
        filtered,
        q,
    })
}

/// The query string, parsed here rather than by an extractor so that a bad
/// one (`?page=x`) is the friendly error page, not the API's JSON error.
fn query(req: &HttpRequest) -> PageResult<BrowseQuery> {
    web::Query::<BrowseQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| crate::error::ApiError::from(crate::error::QueryError::malformed(e)).into())
}

/// `GET /` and `GET /models`.
pub async fn models(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    browse(&state, &req, RepoType::Model, query(&req)?).await
}

/// `GET /datasets`.
pub async fn datasets(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    browse(&state, &req, RepoType::Dataset, query(&req)?).await
}
