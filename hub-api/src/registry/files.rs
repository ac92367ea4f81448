//! Reading a commit's files: listings, single entries, small file contents, and
//! the JSON shape of tree entries the HF clients parse.

use crate::db;
use crate::db::git::Entry;
use crate::domain::Sha256;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use bytes::Bytes;
use serde_json::{json, Value};

/// Largest file the hub reads into memory to interpret (README, config, .gitattributes).
pub const MAX_INTERPRETED: u64 = 4 * 1024 * 1024;

/// Every file (not folder) of a commit's tree.
pub async fn all_files(state: &AppState, tree_oid: &str) -> ApiResult<Vec<Entry>> {
    Ok(db::git::list_recursive(&state.db, tree_oid, "")
        .await?
        .into_iter()
        .filter(|e| !e.is_dir())
        .collect())
}

/// The entry at `path` in a tree (file or folder).
pub async fn entry_at(state: &AppState, tree_oid: &str, path: &str) -> ApiResult<Option<Entry>> {
    let mut conn = state.db.acquire().await?;
    Ok(db::git::lookup_path(&mut conn, tree_oid, path).await?)
}

/// The entries at `paths` in a tree, in order (paths naming nothing are
/// left out): one query per path depth, whatever the number of paths.
pub async fn entries_at(state: &AppState, tree_oid: &str, paths: &[&str]) -> ApiResult<Vec<Entry>> {
    let mut conn = state.db.acquire().await?;
    Ok(db::git::lookup_paths(&mut conn, tree_oid, paths).await?)
}

/// The `cursor` of the page after the entry at `path` (relative to the
/// listed folder): opaque to clients, who follow the next-page link.
pub fn encode_cursor(path: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path)
}

/// The path a `cursor` resumes after (400 `cursor is not valid` for
/// anything [`encode_cursor`] did not make; a path that is no entry of the
/// listing is refused by the listing).
pub fn decode_cursor(c: &str) -> ApiResult<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| crate::routes::query::QueryError::CursorNotValid.into())
}

/// Reads a small stored file completely (refuses anything over [`MAX_INTERPRETED`]).
pub async fn read_small(state: &AppState, sha256: &str, size: i64) -> ApiResult<Option<Bytes>> {
    if size as u64 > MAX_INTERPRETED {
        return Ok(None);
    }
    let sha = Sha256::parse(sha256)?;
    Ok(Some(state.storage.read_range(&sha, 0..size as u64).await?))
}

/// The content of `path` in a tree, when it is a small file.
pub async fn read_path(state: &AppState, tree_oid: &str, path: &str) -> ApiResult<Option<Bytes>> {
    match entry_at(state, tree_oid, path).await? {
        Some(Entry { blob: Some(b), .. }) => read_small(state, &b.sha256, b.size).await,
        _ => Ok(None),
    }
}

/// A tree entry as `list_repo_tree` / `paths-info` return it.
pub fn entry_json(e: &Entry) -> Value {
    match &e.blob {
        None => json!({"type": "directory", "oid": e.oid, "path": e.path, "size": 0}),
        Some(b) if b.is_lfs => {
            let mut v = json!({
                "type": "file",
                "oid": e.oid,
                "size": b.size,
                "path": e.path,
                "lfs": {"oid": b.sha256, "size": b.size, "pointerSize": b.pointer_size.unwrap_or(0)},
            });
            // Stored through Xet: `snapshot_download` downloads it over Xet
            // without a HEAD per file (xet-protocol §2.6).
            if let Some(x) = &b.xet_hash {
                v["xetHash"] = json!(x);
            }
            v
        }
        Some(b) => json!({"type": "file", "oid": e.oid, "size": b.size, "path": e.path}),
    }
}

/// A `siblings` item of repo info.
pub fn sibling_json(e: &Entry, with_blobs: bool) -> Value {
    let mut v = json!({"rfilename": e.path});
    if with_blobs {
        if let Some(b) = &e.blob {
            v["size"] = json!(b.size);
            v["blobId"] = json!(e.oid);
            if b.is_lfs {
                v["lfs"] = json!({"size": b.size, "sha256": b.sha256, "pointerSize": b.pointer_size.unwrap_or(0)});
            }
        }
    }
    v
}

/// Not-found for a path of a commit (carries `X-Repo-Commit`).
pub fn entry_not_found(path: &str, commit: &str) -> ApiError {
    ApiError::EntryNotFound {
        path: path.to_string(),
        commit: Some(commit.to_string()),
    }
}
