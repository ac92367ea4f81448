//! Files at a revision: the folder listing (`/tree/{rev}/{path}`) with sizes,
//! LFS and safetensors badges, and the file view (`/blob/{rev}/{path}`): text
//! with line numbers, images, a binary summary, or a safetensors file's tensor
//! table read from its header alone (`tensors.rs`).

use super::repo_view::{self, RepoHead};
use super::tensors::{tensor_table, TensorTable};
use super::{page, text, Layout, PageResult};
use crate::auth::access::Access;
use crate::db;
use crate::error::ApiError;
use crate::registry::{files, repo_ref};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// Largest file shown as text.
pub const MAX_TEXT: i64 = 1024 * 1024;

/// A path segment of the breadcrumbs.
pub struct Crumb {
    pub name: String,
    pub url: String,
}

fn crumbs(h: &RepoHead, path: &str) -> Vec<Crumb> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(seg);
        out.push(Crumb {
            name: seg.to_string(),
            url: format!("{}/tree/{}/{}", h.url, h.rev_seg, text::path(&acc)),
        });
    }
    out
}

/// A row of a folder listing.
pub struct Row {
    pub name: String,
    pub is_dir: bool,
    pub url: String,
    pub download: String,
    pub size: String,
    pub lfs: bool,
    pub safetensors: bool,
    pub last_title: String,
    pub last_commit: String,
    pub last_when: String,
}

#[derive(Template)]
#[template(path = "repo/tree.html")]
pub struct TreePage {
    pub l: Layout,
    pub h: RepoHead,
    pub picker_target: &'static str,
    pub path: String,
    pub crumbs: Vec<Crumb>,
    pub rows: Vec<Row>,
    pub parent: Option<String>,
    /// The next page of a folder with more than [`FOLDER_PAGE`] entries.
    pub next: Option<String>,
}

/// Entries of a folder per page of the file browser.
pub const FOLDER_PAGE: usize = 500;

/// `GET /{ns}/{name}/tree/{rev}[/{path}]`.
pub async fn tree(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let rev = repo_view::rev_param(&req);
    let path = repo_ref::param(&req, "path").unwrap_or_default();
    let path = path.trim_matches('/').to_string();
    let resolved = repo_view::resolve(&state, &p, &rev).await?;
    let c = &resolved.commit;
    let tree_oid = if path.is_empty() {
        c.tree_oid.clone()
    } else {
        crate::domain::RepoPath::parse(&path)?;
        match files::entry_at(&state, &c.tree_oid, &path).await? {
            Some(e) if e.is_dir() => e.oid,
            Some(_) => {
                // A file: its page is the blob view.
                let h = repo_view::head(&state, &p, "files", &rev, c).await?;
                return Ok(HttpResponse::Found()
                    .insert_header((
                        "Location",
                        format!("{}/blob/{}/{}", h.url, h.rev_seg, text::path(&path)),
                    ))
                    .finish());
            }
            None => return Err(files::entry_not_found(&path, &c.oid).into()),
        }
    };
    let h = repo_view::head(&state, &p, "files", &rev, c).await?;
    // A page of the folder (by name, `?cursor=` for the next one): a folder
    // of 100,000 files costs its page, not its size.
    let after = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.0.into_iter().find(|(k, _)| k == "cursor").map(|(_, v)| v))
        .map(|c| files::decode_cursor(&c))
        .transpose()?;
    let mut conn = state.db.acquire().await?;
    let listed = db::git::list_page(
        &mut conn,
        &tree_oid,
        &path,
        false,
        after.as_deref(),
        FOLDER_PAGE,
    )
    .await?
    .ok_or(crate::routes::query::QueryError::CursorNotValid)
    .map_err(ApiError::from)?;
    drop(conn);
    let next = match (listed.more, listed.entries.last()) {
        (true, Some(last)) => {
            let name = last.path.rsplit('/').next().unwrap_or(&last.path);
            let here = if path.is_empty() {
                format!("{}/tree/{}", h.url, h.rev_seg)
            } else {
                format!("{}/tree/{}/{}", h.url, h.rev_seg, text::path(&path))
            };
            Some(format!("{here}?cursor={}", files::encode_cursor(name)))
        }
        _ => None,
    };
    let mut entries = listed.entries;
    // Folders first (within the page), as file browsers do.
    entries.sort_by_key(|e| !e.is_dir());
    let paths: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
    let last = db::git::last_commits(&state.db, p.ctx.repo.id, &c.oid, &paths).await?;
    let rows = entries
        .iter()
        .map(|e| {
            let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
            let lc = last.iter().find(|l| l.0 == e.path);
            let enc = text::path(&e.path);
            Row {
                is_dir: e.is_dir(),
                url: if e.is_dir() {
                    format!("{}/tree/{}/{enc}", h.url, h.rev_seg)
                } else {
                    format!("{}/blob/{}/{enc}", h.url, h.rev_seg)
                },
                download: format!("{}/resolve/{}/{enc}?download=true", h.url, h.commit),
                size: e
                    .blob
                    .as_ref()
                    .map(|b| text::size(b.size))
                    .unwrap_or_default(),
                lfs: e.blob.as_ref().is_some_and(|b| b.is_lfs),
                safetensors: name.ends_with(".safetensors"),
                last_title: lc.map(|l| l.2.clone()).unwrap_or_default(),
                last_commit: lc.map(|l| l.1.clone()).unwrap_or_default(),
                last_when: lc
                    .and_then(|l| chrono::DateTime::from_timestamp(l.3, 0))
                    .map(text::ago)
                    .unwrap_or_default(),
                name,
            }
        })
        .collect();
    let parent = (!path.is_empty()).then(|| match path.rsplit_once('/') {
        Some((up, _)) => format!("{}/tree/{}/{}", h.url, h.rev_seg, text::path(up)),
        None => format!("{}/tree/{}", h.url, h.rev_seg),
    });
    page(&TreePage {
        crumbs: crumbs(&h, &path),
        l: p.layout,
        h,
        picker_target: "tree",
        path,
        rows,
        parent,
        next,
    })
}

/// What the file view shows.
pub enum View {
    Text { lines: Vec<String> },
    Image,
    Tensors(TensorTable),
    Binary { reason: String },
    Gated,
}

#[derive(Template)]
#[template(path = "repo/blob.html")]
pub struct BlobPage {
    pub l: Layout,
    pub h: RepoHead,
    pub picker_target: &'static str,
    pub path: String,
    pub crumbs: Vec<Crumb>,
    pub size: String,
    pub lfs: bool,
    pub sha256: String,
    pub git_oid: String,
    pub view: View,
    pub raw_url: String,
    pub download_url: String,
    pub link_url: String,
}

fn is_image(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [
        ".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".avif", ".ico",
    ]
    .iter()
    .any(|e| p.ends_with(e))
}

/// `GET /{ns}/{name}/blob/{rev}/{path}`.
pub async fn blob(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let rev = repo_view::rev_param(&req);
    let path = repo_ref::param(&req, "path").unwrap_or_default();
    crate::domain::RepoPath::parse(&path)?;
    let resolved = repo_view::resolve(&state, &p, &rev).await?;
    let c = &resolved.commit;
    let entry = files::entry_at(&state, &c.tree_oid, &path)
        .await?
        .ok_or_else(|| files::entry_not_found(&path, &c.oid))?;
    let h = repo_view::head(&state, &p, "files", &rev, c).await?;
    let Some(b) = entry.blob.clone() else {
        return Ok(HttpResponse::Found()
            .insert_header((
                "Location",
                format!("{}/tree/{}/{}", h.url, h.rev_seg, text::path(&path)),
            ))
            .finish());
    };
    // File contents are downloads: the same read-and-gate decision as
    // `/resolve` (a gated repo shows the file's facts, not its contents).
    let dl = match crate::gating::authorize(&state, &p.auth, p.ctx.clone()).await {
        Ok(dl) => Some(dl),
        Err(ApiError::GatedRepo(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let view = if let Some(dl) = &dl {
        file_view(
            &state,
            dl,
            crate::heavy::Tenant::of(&p.auth, &req),
            &path,
            &b,
        )
        .await?
    } else {
        View::Gated
    };
    let enc = text::path(&path);
    page(&BlobPage {
        crumbs: crumbs(&h, &path),
        raw_url: format!("{}/resolve/{}/{enc}", h.url, h.commit),
        download_url: format!("{}/resolve/{}/{enc}?download=true", h.url, h.commit),
        link_url: format!("{}{}/resolve/{}/{enc}", state.public_url, h.url, h.rev_seg),
        l: p.layout,
        h,
        picker_target: "tree",
        path,
        size: text::size(b.size),
        lfs: b.is_lfs,
        sha256: b.sha256,
        git_oid: entry.oid,
        view,
    })
}

/// What the file view shows of a file the viewer may read.
async fn file_view(
    state: &AppState,
    dl: &crate::gating::Download,
    tenant: crate::heavy::Tenant,
    path: &str,
    b: &db::git::BlobInfo,
) -> Result<View, ApiError> {
    // A permanently deleted LFS object (`routes::hf::lfs_files`) is not the
    // repo's any more, in any revision, even if another repo keeps the bytes.
    if b.is_lfs
        && db::lfs::linked(&state.db, dl.repo().id, std::slice::from_ref(&b.sha256))
            .await?
            .is_empty()
    {
        return Ok(View::Binary {
            reason: "This file's LFS object was permanently deleted from the repository.".into(),
        });
    }
    Ok(if path.ends_with(".safetensors") {
        match tensor_table(dl, state, tenant, &b.sha256, b.size as u64).await {
            Ok(t) => View::Tensors(t),
            Err(reason) => View::Binary {
                reason: format!("Not a readable safetensors file: {reason}"),
            },
        }
    } else if is_image(path) {
        View::Image
    } else if b.size > MAX_TEXT {
        View::Binary {
            reason: format!(
                "This file is too large to display ({}).",
                text::size(b.size)
            ),
        }
    } else {
        let bytes = dl
            .read_small(state, &b.sha256, b.size)
            .await?
            .unwrap_or_default();
        let head = &bytes[..bytes.len().min(8000)];
        match std::str::from_utf8(&bytes) {
            Ok(s) if !head.contains(&0) => View::Text {
                lines: s.lines().map(str::to_string).collect(),
            },
            _ => View::Binary {
                reason: "This is a binary file.".into(),
            },
        }
    })
}

/// `GET /{ns}/{name}/tree?rev=...` (the revision picker without script).
pub async fn pick_revision(req: HttpRequest) -> HttpResponse {
    let rev = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "rev")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| crate::registry::DEFAULT_BRANCH.into());
    let base = req.path().trim_end_matches("/tree");
    HttpResponse::Found()
        .insert_header(("Location", format!("{base}/tree/{}", text::segment(&rev))))
        .finish()
}
