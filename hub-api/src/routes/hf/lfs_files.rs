//! `HfApi.list_lfs_files` (`GET /api/{type}s/{repo}/lfs-files`) and
//! `HfApi.permanently_delete_lfs_files`
//! (`POST /api/{type}s/{repo}/lfs-files/batch`).
//!
//! Listing needs write access to the repo; deleting needs admin access (it
//! cannot be undone). A permanent deletion takes the objects away from the
//! repo within the storage model (docs/ARCHITECTURE.md, "Storage model"):
//! 1. with `rewriteHistory` (the client's default), every branch whose head
//!    has files with those objects gets a commit deleting them. Commit ids
//!    never change on Paddock (pinned revisions and clients' caches stay
//!    valid), so history is not rewritten: older commits keep their pointers;
//! 2. the repo gives up the objects: its LFS link, its inline-blob link and
//!    its Xet registrations go. What the repo's commits still point at then
//!    fails cleanly: `/resolve` answers 404 `EntryNotFound` saying the object
//!    was permanently deleted, the LFS batch API and the Xet CAS refuse it as
//!    an object the repo does not hold, and a new commit must upload it again;
//! 3. under the blob's exclusive lock (as the collector deletes), the bytes
//!    and their `blobs` row are deleted unless another repo still holds the
//!    object (content addressing and Xet dedup share bytes across repos), a
//!    pending row or an open upload session needs them. A writer that needs
//!    the bytes concurrently either registered that need first (they stay) or
//!    finds them gone and uploads them again (`sweeper`'s pending protocol).

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult, QueryError};
use crate::registry::commit::{self, CommitInput, Op};
use crate::registry::files;
use crate::registry::{self, hf_date, RepoRef};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Objects per page of the listing.
const PAGE: i64 = 1000;
/// Objects per deletion call (the client sends batches of 1,000).
const MAX_DELETIONS: usize = 1000;

/// `GET .../lfs-files`: the LFS objects the repo holds, by sha256, a page at
/// a time (`Link: <...>; rel="next"`). `filename` and `ref` name a branch or
/// tag head that has the object (branches first); both are null when only
/// older commits (or no commit) reference it.
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let cursor = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| Sha256::parse(&v).map_err(|_| QueryError::Cursor))
        .transpose()?;
    let mut rows = db::lfs_files::held(
        &state.db,
        ctx.repo.id,
        cursor.as_ref().map(Sha256::as_str),
        PAGE + 1,
    )
    .await?;
    let mut resp = HttpResponse::Ok();
    if rows.len() as i64 > PAGE {
        rows.truncate(PAGE as usize);
        if let Some(last) = rows.last() {
            resp.insert_header((
                "Link",
                format!(
                    "<{}{}?cursor={}>; rel=\"next\"",
                    state.public_url,
                    req.path(),
                    last.sha256
                ),
            ));
        }
    }
    let wanted: BTreeSet<&str> = rows.iter().map(|r| r.sha256.as_str()).collect();
    let found = in_heads(&state, ctx.repo.id, &wanted).await?;
    let items: Vec<_> = rows
        .iter()
        .map(|r| {
            let (filename, ref_name) = match found.get(r.sha256.as_str()) {
                Some((p, r)) => (Some(p.as_str()), Some(r.as_str())),
                None => (None, None),
            };
            let mut item = json!({
                "oid": r.sha256,
                "fileOid": r.sha256,
                "size": r.size,
                "pushedAt": hf_date(r.created_at),
                "filename": filename,
                "ref": ref_name,
            });
            if let Some(raw) = r
                .xet_file
                .as_deref()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            {
                item["xetHash"] = json!(hub_xet::hash::hash_string(&hub_xet::hash::hash_from_raw(
                    raw
                )));
            }
            item
        })
        .collect();
    Ok(resp.json(items))
}

/// For each of `wanted`, a (path, full ref name) of a branch or tag head
/// whose tree has it as an LFS file; each distinct head tree is listed once.
async fn in_heads(
    state: &AppState,
    repo_id: i64,
    wanted: &BTreeSet<&str>,
) -> ApiResult<HashMap<String, (String, String)>> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let mut refs = db::refs::list(&state.db, repo_id).await?;
    // Branches first, then tags; `main` first of all.
    refs.sort_by_key(|r| {
        (
            r.name != "refs/heads/main",
            !r.name.starts_with("refs/heads/"),
            r.name.clone(),
        )
    });
    let mut seen_trees = BTreeSet::new();
    for r in refs {
        if found.len() == wanted.len() {
            break;
        }
        let Some((tree, hits)) =
            lfs_files_at(state, repo_id, &r.commit_oid, |s| wanted.contains(s)).await?
        else {
            continue;
        };
        if !seen_trees.insert(tree) {
            continue;
        }
        for (path, sha) in hits {
            found.entry(sha).or_insert_with(|| (path, r.name.clone()));
        }
    }
    Ok(found)
}

/// The tree of commit `oid` and its LFS files (path, sha256) whose object
/// `pick` selects; None when the commit is missing.
async fn lfs_files_at(
    state: &AppState,
    repo_id: i64,
    oid: &str,
    pick: impl Fn(&str) -> bool,
) -> ApiResult<Option<(String, Vec<(String, String)>)>> {
    let Some(c) = db::git::commit(&state.db, repo_id, oid).await? else {
        return Ok(None);
    };
    let hits = files::all_files(state, &c.tree_oid)
        .await?
        .into_iter()
        .filter_map(|e| {
            let b = e.blob?;
            (b.is_lfs && pick(&b.sha256)).then_some((e.path, b.sha256))
        })
        .collect();
    Ok(Some((c.tree_oid, hits)))
}

#[derive(Debug, Deserialize)]
pub struct DeleteBody {
    deletions: Deletions,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletions {
    sha: Vec<String>,
    #[serde(default = "yes")]
    rewrite_history: bool,
}

fn yes() -> bool {
    true
}

/// `POST .../lfs-files/batch` with `{"deletions": {"sha": [...],
/// "rewriteHistory": bool}}`: see the module documentation. Every object must
/// be one the repo holds (else 400 and nothing changes).
pub async fn delete_batch(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<DeleteBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let p = auth.require()?;
    let d = body.deletions;
    if d.sha.len() > MAX_DELETIONS {
        return Err(ApiError::PayloadTooLarge(format!(
            "at most {MAX_DELETIONS} LFS objects per call"
        )));
    }
    let mut shas = BTreeSet::new();
    for s in &d.sha {
        shas.insert(Sha256::parse(s)?.to_string());
    }
    let list: Vec<String> = shas.iter().cloned().collect();
    let held: HashMap<String, i64> = db::lfs::linked(&state.db, ctx.repo.id, &list)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = list.iter().find(|s| !held.contains_key(s.as_str())) {
        return Err(ApiError::InvalidRequest(format!(
            "LFS object {missing} is not in this repository"
        )));
    }

    // 1. Each branch head drops the files (one commit per branch).
    let mut commits = BTreeMap::new();
    if d.rewrite_history {
        for r in db::refs::list(&state.db, ctx.repo.id).await? {
            if !r.name.starts_with("refs/heads/") {
                continue;
            }
            let Some((_, hits)) =
                lfs_files_at(&state, ctx.repo.id, &r.commit_oid, |s| shas.contains(s)).await?
            else {
                continue;
            };
            let ops = hits
                .iter()
                .map(|(path, _)| Ok(Op::Delete(RepoPath::parse(path)?)))
                .collect::<ApiResult<Vec<_>>>()?;
            if ops.is_empty() {
                continue;
            }
            let input = CommitInput {
                summary: "Permanently delete LFS files".into(),
                description: format!("{} LFS object(s) permanently deleted", shas.len()),
                parent: Some(r.commit_oid.clone()),
                ops,
                idempotency_key: None,
                merge_parent: None,
            };
            let done = commit::commit(&state, &ctx.repo, &r.name, p, input).await?;
            commits.insert(r.name, done.oid);
        }
    }

    // 2 and 3. The repo gives the objects up; bytes nothing else needs go.
    let mut deleted_bytes = 0usize;
    for sha in &list {
        let digest = Sha256::parse(sha)?;
        let mut tx = state.db.begin().await?;
        db::lfs::lock_blob(&mut tx, sha).await?;
        db::lfs_files::unlink(&mut tx, ctx.repo.id, sha).await?;
        if !db::lfs_files::held_elsewhere(&mut *tx, sha).await? {
            // Bytes first, as the collector does: if the transaction then
            // fails, the link stays and a retry finishes.
            state.storage.delete_blob(&digest).await?;
            db::lfs::delete_blob_row(&mut *tx, sha).await?;
            deleted_bytes += 1;
        }
        tx.commit().await?;
    }
    crate::audit::record(
        &state.db,
        Some(p),
        ctx.repo.namespace_id,
        "lfs.purged",
        &format!("{}:{}", repo.kind.as_str(), ctx.repo.full_id()),
        json!({"sha256": list, "rewriteHistory": d.rewrite_history, "commits": commits, "bytesDeleted": deleted_bytes}),
    )
    .await?;
    tracing::info!(repo = %ctx.repo.full_id(), objects = list.len(), bytes_deleted = deleted_bytes, "LFS objects permanently deleted");
    Ok(HttpResponse::Ok().json(json!({})))
}
