//! Making commits. Bytes are stored and verified first (content-addressed,
//! recorded as pending objects of the namespace: see `sweeper.rs`); then one
//! Postgres transaction locks the branch, applies the operations to the
//! head's tree, writes trees, blobs and the commit, claims the pending
//! objects and moves the ref by compare-and-swap. A refused commit (412 on a
//! stale `parentCommit`, 400, quota) releases its pending objects, deleting
//! bytes nothing else references; a crashed one leaves them to the collector.
//! Writers without a parent are serialised by the ref lock, so no
//! acknowledged commit is ever lost.

use super::path_stats::PathStats;
use super::worktree::{WorkFile, WorkTree};
use crate::auth::Principal;
use crate::card::{self, RepoMeta};
use crate::db;
use crate::db::repos::RepoRow;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::git::attributes::{self, LfsRules};
use crate::git::{self, build_trees, CommitObject, FlatFile, Mode, Signature};
use crate::heavy::Tenant;
use crate::registry::files::MAX_INTERPRETED;
use crate::state::AppState;
use crate::sweeper::{self, Pending};
use crate::validate;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Paths whose content the hub interprets at commit time.
const INTERPRETED: &[&str] = &["README.md", "config.json", ".gitattributes"];

/// The bytes of an added file, already stored and verified.
#[derive(Debug, Clone)]
pub enum AddContent {
    /// Sent inline in the commit (stored by this request, pending until the
    /// commit claims it).
    Inline {
        pending: Pending,
        sha256: String,
        size: u64,
        git_oid: String,
        /// Whether the first 512 bytes contain a NUL (the Hub's binary test).
        binary: bool,
        /// Kept for the few files the hub interprets.
        bytes: Option<Bytes>,
    },
    /// Uploaded before through LFS; size omitted for copies.
    Lfs { sha256: String, size: Option<u64> },
    /// A regular (not LFS) file already stored and committed to this repo:
    /// a merged pull request's change. `bytes` for the files the hub interprets.
    Stored {
        sha256: String,
        size: u64,
        git_oid: String,
        bytes: Option<Bytes>,
    },
}

#[derive(Debug, Clone)]
pub enum Op {
    Add { path: RepoPath, content: AddContent },
    Delete(RepoPath),
    DeleteFolder(RepoPath),
}

impl Op {
    /// The path the operation names.
    pub fn path(&self) -> &str {
        match self {
            Op::Add { path, .. } | Op::Delete(path) | Op::DeleteFolder(path) => path.as_str(),
        }
    }
}

/// A commit to make on a branch.
#[derive(Debug, Clone)]
pub struct CommitInput {
    pub summary: String,
    pub description: String,
    pub parent: Option<String>,
    pub ops: Vec<Op>,
    pub idempotency_key: Option<String>,
    /// A second parent: the commit is a merge of it (a pull request's head).
    pub merge_parent: Option<String>,
}

/// Whether a sample of a file looks binary (a NUL in its first 512 bytes).
pub fn looks_binary(sample: &[u8]) -> bool {
    sample.iter().take(512).any(|b| *b == 0)
}

/// The hub's rule for storing a file with LFS (shared by preupload and
/// commit); `rule` says whether an LFS rule of `.gitattributes` covers the path.
/// An empty file is always regular, as on the Hub (the client never uploads
/// one through LFS).
pub fn wants_lfs(rule: bool, size: u64, binary: bool, threshold: u64) -> bool {
    size > 0 && (size > threshold || binary || rule)
}

/// Validates weight files added by a commit and records their parameter counts.
/// Headers are streamed from storage into the validators, which run as heavy
/// work of `tenant` (bounded reads, memory and concurrency).
pub(crate) async fn validate_weights(
    state: &AppState,
    tenant: Tenant,
    ops: &[Op],
) -> ApiResult<()> {
    for op in ops {
        let Op::Add { path, content } = op else {
            continue;
        };
        let (sha, size) = match content {
            AddContent::Inline { sha256, size, .. } | AddContent::Stored { sha256, size, .. } => {
                (sha256.clone(), *size)
            }
            AddContent::Lfs { sha256, size } => match size {
                Some(s) => (sha256.clone(), *s),
                None => match db::lfs::blob_size(&state.db, sha256).await? {
                    Some(s) => (sha256.clone(), s as u64),
                    None => continue, // reported as missing later
                },
            },
        };
        let p = path.as_str();
        let lower = p.to_ascii_lowercase();
        let digest = Sha256::parse(&sha)?;
        let heavy = &state.tenancy.heavy;
        if lower.ends_with(".safetensors") {
            // Any bytes are accepted, as on the Hub (a registry stores what it
            // is given; huggingface_hub's Xet tests upload random bytes as
            // `.safetensors`). Only a valid header gets a `safetensors_meta`
            // row; an invalid file simply has no parameter counts, and a
            // worker refuses to load it (candle's header check, LoadError).
            let invalid = |reason: String| {
                tracing::info!(path = p, %reason, "not a valid safetensors file: stored without parameter counts");
            };
            if !state.storage.blob_exists(&digest).await? {
                continue; // reported as missing later
            }
            let first8 = state.storage.read_range(&digest, 0..8.min(size)).await?;
            let n = match validate::safetensors::header_len(&first8, size) {
                Ok(n) => n,
                Err(reason) => {
                    invalid(reason);
                    continue;
                }
            };
            let checked = heavy
                .run_reading(tenant, &state.storage, &digest, 8..8 + n, move |r| {
                    validate::safetensors::check_reader(r, n, size)
                })
                .await?;
            let summary = match checked {
                Ok(s) => s,
                Err(reason) => {
                    invalid(reason);
                    continue;
                }
            };
            let params = serde_json::to_value(&summary.parameters).map_err(ApiError::internal)?;
            db::git::insert_safetensors_meta(&state.db, &sha, &params, summary.total as i64)
                .await?;
        } else if lower.ends_with(".gguf") {
            if !state.storage.blob_exists(&digest).await? {
                continue;
            }
            let end = size.min(validate::gguf::MAX_HEADER_BYTES);
            heavy
                .run_reading(tenant, &state.storage, &digest, 0..end, move |r| {
                    validate::gguf::check_stream(r, size)
                })
                .await?
                .map_err(|reason| ApiError::InvalidGguf {
                    path: p.to_string(),
                    reason,
                })?;
        }
    }
    Ok(())
}

/// Checks every LFS object the commit references was uploaded to this repo;
/// fills in omitted sizes.
async fn check_lfs(state: &AppState, repo_id: i64, ops: &mut [Op]) -> ApiResult<()> {
    let shas: Vec<String> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Add {
                content: AddContent::Lfs { sha256, .. },
                ..
            } => Some(sha256.clone()),
            _ => None,
        })
        .collect();
    if shas.is_empty() {
        return Ok(());
    }
    let linked: HashMap<String, i64> = db::lfs::linked(&state.db, repo_id, &shas)
        .await?
        .into_iter()
        .collect();
    for op in ops.iter_mut() {
        if let Op::Add {
            path,
            content: AddContent::Lfs { sha256, size },
        } = op
        {
            let have = linked
                .get(sha256.as_str())
                .ok_or_else(|| ApiError::LfsObjectMissing(format!("{sha256} (for {path})")))?;
            match size {
                Some(s) if *s as i64 != *have => {
                    return Err(ApiError::DigestMismatch(format!(
                        "{path}: the commit declares {s} bytes but LFS object {sha256} has {have}"
                    )))
                }
                Some(_) => {}
                None => *size = Some(*have as u64),
            }
        }
    }
    Ok(())
}

/// Reads a stored small file (for interpreting `.gitattributes`, README, config).
async fn read_stored(state: &AppState, f: &WorkFile) -> ApiResult<Option<Bytes>> {
    if f.size as u64 > MAX_INTERPRETED {
        return Ok(None);
    }
    let sha = Sha256::parse(&f.sha256)?;
    Ok(Some(
        state.storage.read_range(&sha, 0..f.size as u64).await?,
    ))
}

/// A commit's storage-quota check, read before its links are made.
enum QuotaCheck {
    /// Blobs stored whole: the namespace's recorded usage (summed at `at`)
    /// and the bytes of the blobs the commit links that no repo of the
    /// namespace links yet.
    Grown {
        limit: i64,
        before: i64,
        at: chrono::DateTime<chrono::Utc>,
        grown: i64,
    },
    /// Some blob is stored through Xet: the namespace summed before.
    Summed { limit: i64, before: i64 },
}

/// The first half of a commit's quota check, under the namespace's lock and
/// before `stored` (sha256, size, LFS) is linked.
async fn quota_before(
    tx: &mut sqlx::PgConnection,
    namespace_id: i64,
    limit: i64,
    stored: &[(String, i64, bool)],
) -> ApiResult<QuotaCheck> {
    let shas: Vec<&str> = stored.iter().map(|s| s.0.as_str()).collect();
    if crate::quota::any_xet_blob(&mut *tx, &shas).await? {
        let before = crate::quota::usage(&mut *tx, namespace_id).await?;
        return Ok(QuotaCheck::Summed { limit, before });
    }
    let (before, at) = crate::quota::usage_cached(&mut *tx, namespace_id).await?;
    let blobs: Vec<(String, i64)> = stored.iter().map(|s| (s.0.clone(), s.1)).collect();
    let grown = crate::quota::link_growth(&mut *tx, namespace_id, &blobs).await?;
    Ok(QuotaCheck::Grown {
        limit,
        before,
        at,
        grown,
    })
}

/// Links `stored` (sha256, size, LFS) to the repo inside the commit's
/// transaction, checking the namespace's storage quota under its lock: an
/// error leaves the transaction to be rolled back. Shared by API commits and
/// `git push` (`registry::git_push`).
pub(crate) async fn link_with_quota(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    namespace_id: i64,
    repo_id: i64,
    stored: &[(String, i64, bool)],
) -> ApiResult<()> {
    let mut quota = None;
    if !stored.is_empty() {
        if let Some(limit) = crate::quota::limit(state, &mut *tx, namespace_id).await? {
            crate::quota::lock_namespace(&mut *tx, namespace_id).await?;
            quota = Some(quota_before(&mut *tx, namespace_id, limit, stored).await?);
        }
    }
    db::lfs::record_stored(&mut *tx, repo_id, stored).await?;
    match quota {
        // Blobs stored whole: the recorded usage plus what this commit links
        // anew, recorded again (the links just made dropped the row).
        Some(QuotaCheck::Grown {
            limit,
            before,
            at,
            grown,
        }) => {
            if grown > 0 && before + grown > limit {
                return Err(crate::quota::exceeded(before, limit, grown));
            }
            crate::quota::record_usage(&mut *tx, namespace_id, before + grown, at).await?;
        }
        // Xet-stored blobs count by their xorbs: summed before and after.
        Some(QuotaCheck::Summed { limit, before }) => {
            let after = crate::quota::usage(&mut *tx, namespace_id).await?;
            if after > limit && after > before {
                return Err(crate::quota::exceeded(before, limit, after - before));
            }
        }
        None => {}
    }
    Ok(())
}

/// The identity commits are written with.
fn signature(p: &Principal, now: i64) -> Signature {
    Signature {
        name: p.name.clone(),
        email: format!("{}@users.noreply.paddock.local", p.name),
        time: now,
        tz: "+0000".into(),
    }
}

/// The outcome of a commit.
#[derive(Debug, Clone)]
pub struct Committed {
    pub oid: String,
}

/// The pending objects of a commit's inline files.
pub fn pending_of(ops: &[Op]) -> Vec<Pending> {
    ops.iter()
        .filter_map(|o| match o {
            Op::Add {
                content: AddContent::Inline { pending, .. },
                ..
            } => Some(pending.clone()),
            _ => None,
        })
        .collect()
}

/// Makes a commit on `branch_ref` (a full `refs/heads/...` name). Whatever
/// the outcome, the pending objects of `input` are settled: claimed by the
/// commit, or released (deleted unless something else needs them).
pub async fn commit(
    state: &AppState,
    repo: &RepoRow,
    branch_ref: &str,
    author: &Principal,
    input: CommitInput,
) -> ApiResult<Committed> {
    let mut pending = pending_of(&input.ops);
    let result = commit_claiming(state, repo, branch_ref, author, input, &mut pending).await;
    state.metrics.commit(&result);
    match result {
        Ok((done, true)) => Ok(done),
        Ok((done, false)) => {
            sweeper::release(state, &pending).await;
            Ok(done)
        }
        Err(e) => {
            sweeper::release(state, &pending).await;
            Err(e)
        }
    }
}

/// The commit; bytes it stores itself are added to `pending`, and every
/// object of `pending` is claimed by the transaction. Answers whether they
/// were (not when an idempotent retry finds its earlier commit).
async fn commit_claiming(
    state: &AppState,
    repo: &RepoRow,
    branch_ref: &str,
    author: &Principal,
    mut input: CommitInput,
    pending: &mut Vec<Pending>,
) -> ApiResult<(Committed, bool)> {
    if input.summary.trim().is_empty() {
        return Err(ApiError::InvalidCommit(
            "the commit summary must not be empty".into(),
        ));
    }
    // Fail fast on a stale parent before any work (re-checked under the lock).
    if let Some(parent) = &input.parent {
        if let Some(head) = db::refs::get(&state.db, repo.id, branch_ref).await? {
            if !head.commit_oid.starts_with(&parent.to_ascii_lowercase()) {
                return Err(ApiError::ParentCommitMismatch);
            }
        }
    }
    let tenant = Tenant::User(author.user_id);
    check_lfs(state, repo.id, &mut input.ops).await?;
    validate_weights(state, tenant, &input.ops).await?;

    let started = std::time::Instant::now();
    let mut tx = state.db.begin().await?;
    if let Some(key) = &input.idempotency_key {
        let done: Option<(String,)> = sqlx::query_as(
            "SELECT commit_oid FROM commit_idempotency WHERE repo_id = $1 AND key = $2",
        )
        .bind(repo.id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((oid,)) = done {
            return Ok((Committed { oid }, false));
        }
    }
    let head = db::refs::get_for_update(&mut tx, repo.id, branch_ref)
        .await?
        .ok_or_else(|| {
            ApiError::RevisionNotFound(branch_ref.trim_start_matches("refs/heads/").to_string())
        })?;
    if let Some(parent) = &input.parent {
        let p = parent.to_ascii_lowercase();
        let valid = (5..=40).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(ApiError::InvalidCommit(format!(
                "parentCommit {parent:?} is not a commit id"
            )));
        }
        if !head.commit_oid.starts_with(&p) {
            return Err(ApiError::ParentCommitMismatch);
        }
    }
    let parent_commit = db::git::commit(&mut *tx, repo.id, &head.commit_oid)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("branch head commit is missing")))?;

    // The head's tree, read along the changed paths only.
    let op_paths: Vec<&str> = input.ops.iter().map(Op::path).collect();
    let mut files = WorkTree::load(&mut tx, &parent_commit.tree_oid, &op_paths).await?;

    // LFS rules: from the .gitattributes this commit adds, else the head's.
    let mut attributes_text: Option<String> = None;
    for op in &input.ops {
        if let Op::Add {
            path,
            content: AddContent::Inline { bytes: Some(b), .. },
        } = op
        {
            if path.as_str() == ".gitattributes" {
                attributes_text = Some(String::from_utf8_lossy(b).into_owned());
            }
        }
    }
    if attributes_text.is_none() {
        if let Some(f) = files.root_file(&mut tx, ".gitattributes").await? {
            attributes_text = read_stored(state, &f)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
        }
    }
    let attributes_text = attributes_text.unwrap_or_default();
    // Which added paths an LFS rule covers: tenant patterns, matched as heavy work.
    let added: Vec<String> = input
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Add { path, .. } => Some(path.as_str().to_string()),
            _ => None,
        })
        .collect();
    let text = attributes_text.clone();
    let rule_lfs: HashSet<String> = state
        .tenancy
        .heavy
        .run(tenant, move || {
            let rules = LfsRules::parse(&text)?;
            rules.check_budget(added.len())?;
            Ok::<_, ApiError>(added.into_iter().filter(|p| rules.is_lfs(p)).collect())
        })
        .await??;

    // Apply the operations in order.
    let mut new_blobs: Vec<db::git::NewBlob> = Vec::new();
    let mut stored: Vec<(String, i64, bool)> = Vec::new(); // (sha256, size, link as LFS)
    let mut lfs_paths: Vec<String> = Vec::new();
    let mut interpreted: HashMap<&'static str, Option<Bytes>> = HashMap::new();
    for op in &input.ops {
        match op {
            Op::Add { path, content } => {
                let p = path.as_str();
                if let Some(why) = files.clash(&mut tx, p).await? {
                    return Err(ApiError::InvalidCommit(format!("cannot add {p:?}: {why}")));
                }
                let (sha256, size, is_lfs, content_oid, bytes) = match content {
                    AddContent::Inline {
                        sha256,
                        size,
                        git_oid,
                        binary,
                        bytes,
                        ..
                    } => (
                        sha256.clone(),
                        *size,
                        wants_lfs(
                            rule_lfs.contains(p),
                            *size,
                            *binary,
                            state.limits.lfs_threshold,
                        ),
                        git_oid.clone(),
                        bytes.clone(),
                    ),
                    AddContent::Lfs { sha256, size } => {
                        (sha256.clone(), size.unwrap_or(0), true, String::new(), None)
                    }
                    AddContent::Stored {
                        sha256,
                        size,
                        git_oid,
                        bytes,
                    } => (sha256.clone(), *size, false, git_oid.clone(), bytes.clone()),
                };
                let (oid, pointer_size) = if is_lfs {
                    let pointer = git::lfs_pointer(&sha256, size);
                    (
                        git::blob_oid(pointer.as_bytes()),
                        Some(pointer.len() as i32),
                    )
                } else {
                    (content_oid, None)
                };
                if is_lfs && p != ".gitattributes" {
                    lfs_paths.push(p.to_string());
                }
                if let Some(name) = INTERPRETED.iter().find(|n| **n == p) {
                    interpreted.insert(name, if is_lfs { None } else { bytes });
                }
                new_blobs.push(db::git::NewBlob {
                    oid: oid.clone(),
                    is_lfs,
                    sha256: sha256.clone(),
                    size: size as i64,
                    pointer_size,
                });
                stored.push((sha256.clone(), size as i64, is_lfs));
                files
                    .insert(
                        &mut tx,
                        p,
                        WorkFile {
                            flat: FlatFile {
                                mode: Mode::File,
                                oid,
                            },
                            sha256,
                            size: size as i64,
                        },
                    )
                    .await?;
            }
            // Like the Hub, `deletedFile` on a folder deletes the folder: the
            // client sends it for `CommitOperationDelete("dir")` (no trailing
            // slash, so its `is_folder="auto"` guessed a file).
            Op::Delete(path) => {
                if !files.remove(&mut tx, path.as_str()).await?
                    && !files.remove_folder(&mut tx, path.as_str()).await?
                {
                    return Err(ApiError::EntryNotFound {
                        path: format!("A file with this name doesn't exist: {path}"),
                        commit: Some(head.commit_oid.clone()),
                    });
                }
            }
            Op::DeleteFolder(path) => {
                if !files.remove_folder(&mut tx, path.as_str()).await? {
                    return Err(ApiError::EntryNotFound {
                        path: format!("A folder with this name doesn't exist: {path}"),
                        commit: Some(head.commit_oid.clone()),
                    });
                }
            }
        }
    }

    // Case-fold and Unicode-form twins would alias on client file systems.
    if let Some((p, other)) = files.find_twin(&mut tx).await? {
        return Err(ApiError::InvalidPath(format!(
            "{p:?} and {other:?} differ only by case or Unicode form; they would collide on many file systems"
        )));
    }

    // Keep .gitattributes covering every LFS path.
    let new_attributes = attributes::with_lfs_paths(
        &attributes_text,
        lfs_paths.iter().map(String::as_str),
        |p| rule_lfs.contains(p),
    );
    if new_attributes != attributes_text && !(attributes_text.is_empty() && lfs_paths.is_empty()) {
        let bytes = Bytes::from(new_attributes.clone());
        let (w, p) = sweeper::store_bytes(state, repo.namespace_id, bytes.clone()).await?;
        pending.push(p);
        let oid = w.git_oid.clone().expect("asked for git oid");
        new_blobs.push(db::git::NewBlob {
            oid: oid.clone(),
            is_lfs: false,
            sha256: w.sha256.to_string(),
            size: w.size as i64,
            pointer_size: None,
        });
        stored.push((w.sha256.to_string(), w.size as i64, false));
        files
            .insert(
                &mut tx,
                ".gitattributes",
                WorkFile {
                    flat: FlatFile {
                        mode: Mode::File,
                        oid,
                    },
                    sha256: w.sha256.to_string(),
                    size: w.size as i64,
                },
            )
            .await?;
        interpreted.insert(".gitattributes", Some(bytes));
    }

    files.resolve_touched(&mut tx).await?;
    let applied_ms = started.elapsed().as_millis() as u64;
    // Trees (only those that changed) and changes.
    let (root, trees) = files.build();
    let changes = files.changes();

    // Metadata.
    let is_model = repo.repo_type == "model";
    let card_data = match (
        interpreted.get("README.md"),
        files.has_root_file("README.md"),
    ) {
        (Some(Some(b)), _) => {
            let text = String::from_utf8_lossy(b).into_owned();
            state
                .tenancy
                .heavy
                .run(tenant, move || card::parse_card(&text))
                .await?
                .map_err(ApiError::InvalidCommit)?
        }
        (Some(None), _) | (None, false) => serde_json::json!({}),
        (None, true) => parent_commit.card_data.0.clone(),
    };
    let config_info = match (
        interpreted.get("config.json"),
        files.has_root_file("config.json"),
    ) {
        (Some(Some(b)), _) => card::parse_config(b),
        (Some(None), _) | (None, false) => serde_json::json!({}),
        (None, true) => parent_commit.config_info.0.clone(),
    };
    let stats = PathStats::after_commit(&mut tx, repo.id, &parent_commit, &files).await?;
    let facts = stats.facts(files.root_file_names());
    let meta: RepoMeta = card::derive_from_facts(
        is_model,
        card_data,
        config_info,
        &facts,
        stats.safetensors(),
    );
    let path_stats = stats.to_json();

    // The commit object.
    let now = chrono::Utc::now().timestamp();
    let sig = signature(author, now);
    let object = CommitObject {
        tree: root.clone(),
        parents: std::iter::once(head.commit_oid.clone())
            .chain(input.merge_parent.clone())
            .collect(),
        author: sig.clone(),
        committer: sig,
        message: git::object::commit_message(input.summary.trim(), &input.description),
    };
    let oid = object.oid();

    let built_ms = started.elapsed().as_millis() as u64;
    db::git::insert_trees(&mut tx, &trees).await?;
    db::git::insert_blobs(&mut tx, &new_blobs).await?;
    // The bytes this request stored stop being pending (blob locks first,
    // in one order, then the namespace's quota lock).
    sweeper::claim_all(&mut tx, &state.storage, pending).await?;
    // The storage quota, checked again inside the transaction under the
    // namespace's lock (inline files were checked as they were read; this
    // catches concurrent pushes). `before` no longer counts this commit's own
    // pending objects, so its growth is measured against committed usage.
    link_with_quota(state, &mut tx, repo.namespace_id, repo.id, &stored).await?;
    db::git::insert_commit(
        &mut tx,
        &db::git::NewCommit {
            repo_id: repo.id,
            object: &object,
            oid: &oid,
            title: input.summary.trim(),
            depth: parent_commit.depth + 1,
            meta: &meta,
            author_id: Some(author.user_id),
            path_stats: Some(&path_stats),
            raw: None,
        },
    )
    .await?;
    db::git::insert_changes(&mut tx, repo.id, &oid, &changes).await?;
    if !db::refs::compare_and_swap(
        &mut tx,
        repo.id,
        branch_ref,
        &head.commit_oid,
        &oid,
        Some(author.user_id),
    )
    .await?
    {
        // Unreachable while the row lock is held; kept as the invariant's guard.
        return Err(ApiError::ParentCommitMismatch);
    }
    if branch_ref == format!("refs/heads/{}", super::DEFAULT_BRANCH) {
        db::repos::set_head_metadata(&mut *tx, repo.id, &meta).await?;
    } else {
        db::repos::touch(&mut *tx, repo.id).await?;
    }
    if let Some(key) = &input.idempotency_key {
        sqlx::query(
            "INSERT INTO commit_idempotency (repo_id, key, commit_oid) VALUES ($1, $2, $3)",
        )
        .bind(repo.id)
        .bind(key)
        .bind(&oid)
        .execute(&mut *tx)
        .await?;
    }
    let written_ms = started.elapsed().as_millis() as u64;
    tx.commit().await?;
    tracing::debug!(
        repo.id = repo.id,
        applied_ms,
        built_ms,
        written_ms,
        "commit transaction: operations applied, trees and metadata built, rows written (ms from its start)"
    );
    tracing::info!(repo.id = repo.id, commit = %oid, files = changes.len(), trees = trees.len(), tx_ms = started.elapsed().as_millis() as u64, "commit");
    Ok((Committed { oid }, true))
}

/// `super_squash_history`: the branch moves to one new root commit with the
/// head's tree, metadata and `message`; the old commits stay reachable from
/// other refs that point at them. No bytes change, so no quota or storage work.
pub async fn super_squash(
    state: &AppState,
    repo: &RepoRow,
    branch_ref: &str,
    author: &Principal,
    message: &str,
) -> ApiResult<Committed> {
    let message = message.trim();
    if message.is_empty() {
        return Err(ApiError::InvalidCommit(
            "the commit message must not be empty".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    let head = db::refs::get_for_update(&mut tx, repo.id, branch_ref)
        .await?
        .ok_or_else(|| {
            ApiError::RevisionNotFound(branch_ref.trim_start_matches("refs/heads/").to_string())
        })?;
    let c = db::git::commit(&mut *tx, repo.id, &head.commit_oid)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("branch head commit is missing")))?;
    let (summary, description) = message.split_once('\n').unwrap_or((message, ""));
    let summary = summary.trim();
    let sig = signature(author, chrono::Utc::now().timestamp());
    let object = CommitObject {
        tree: c.tree_oid.clone(),
        parents: vec![],
        author: sig.clone(),
        committer: sig,
        message: git::object::commit_message(summary, description.trim()),
    };
    let oid = object.oid();
    let meta = RepoMeta {
        card_data: c.card_data.0.clone(),
        config_info: c.config_info.0.clone(),
        tags: c.tags.clone(),
        pipeline_tag: c.pipeline_tag.clone(),
        library_name: c.library_name.clone(),
        license: c.license.clone(),
        safetensors: c.safetensors.as_ref().map(|j| j.0.clone()),
    };
    // Same tree, same path counts.
    let path_stats = db::git::path_stats(&mut *tx, repo.id, &head.commit_oid).await?;
    if db::git::commit(&mut *tx, repo.id, &oid).await?.is_none() {
        db::git::insert_commit(
            &mut tx,
            &db::git::NewCommit {
                repo_id: repo.id,
                object: &object,
                oid: &oid,
                title: summary,
                depth: 1,
                meta: &meta,
                author_id: Some(author.user_id),
                path_stats: path_stats.as_ref(),
                raw: None,
            },
        )
        .await?;
    }
    if !db::refs::compare_and_swap(
        &mut tx,
        repo.id,
        branch_ref,
        &head.commit_oid,
        &oid,
        Some(author.user_id),
    )
    .await?
    {
        return Err(ApiError::ParentCommitMismatch);
    }
    db::repos::touch(&mut *tx, repo.id).await?;
    tx.commit().await?;
    tracing::info!(repo.id = repo.id, commit = %oid, "super-squash");
    Ok(Committed { oid })
}

/// The bytes of a new repo's first commit (the default `.gitattributes`),
/// stored before the repo's transaction begins, so that transaction needs no
/// second pool connection while it holds the new name's row: requests creating
/// the same name wait on that row, each holding a connection, and a winner
/// asking the pool for another starved it (503s for 40 concurrent creations).
pub struct InitialFiles {
    written: crate::storage::Written,
    pending: Pending,
}

impl InitialFiles {
    /// Stores the bytes (pending until [`initial_commit`] claims them).
    pub async fn store(state: &AppState, namespace_id: i64) -> ApiResult<Self> {
        let text = attributes::DEFAULT_GITATTRIBUTES;
        let (written, pending) =
            sweeper::store_bytes(state, namespace_id, Bytes::from_static(text.as_bytes())).await?;
        Ok(Self { written, pending })
    }

    /// Gives the bytes back: the repo was not created.
    pub async fn release(self, state: &AppState) {
        sweeper::release(state, std::slice::from_ref(&self.pending)).await;
    }
}

/// Writes a new repo's first commit in `tx` from its stored [`InitialFiles`]
/// (released by the caller if the transaction does not commit).
pub async fn initial_commit(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    repo_id: i64,
    author: &Principal,
    is_model: bool,
    files: &InitialFiles,
) -> ApiResult<String> {
    initial_commit_claiming(
        state,
        tx,
        repo_id,
        author,
        is_model,
        &files.written,
        &files.pending,
    )
    .await
}

async fn initial_commit_claiming(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    repo_id: i64,
    author: &Principal,
    is_model: bool,
    w: &crate::storage::Written,
    pending: &Pending,
) -> ApiResult<String> {
    sweeper::claim(&mut *tx, &state.storage, pending).await?;
    let oid = w.git_oid.clone().expect("asked for git oid");
    let mut flat = BTreeMap::new();
    flat.insert(
        ".gitattributes".to_string(),
        FlatFile {
            mode: Mode::File,
            oid: oid.clone(),
        },
    );
    let (root, trees) = build_trees(&flat);
    let now = chrono::Utc::now().timestamp();
    let sig = signature(author, now);
    let object = CommitObject {
        tree: root,
        parents: vec![],
        author: sig.clone(),
        committer: sig,
        message: git::object::commit_message("initial commit", ""),
    };
    let commit_oid = object.oid();
    let meta = card::derive(
        is_model,
        serde_json::json!({}),
        serde_json::json!({}),
        &[".gitattributes"],
        None,
    );
    db::git::insert_trees(tx, &trees).await?;
    db::git::insert_blobs(
        tx,
        &[db::git::NewBlob {
            oid,
            is_lfs: false,
            sha256: w.sha256.to_string(),
            size: w.size as i64,
            pointer_size: None,
        }],
    )
    .await?;
    db::lfs::insert_blob(&mut *tx, w.sha256.as_str(), w.size as i64).await?;
    db::git::insert_commit(
        tx,
        &db::git::NewCommit {
            repo_id,
            object: &object,
            oid: &commit_oid,
            title: "initial commit",
            depth: 1,
            meta: &meta,
            author_id: Some(author.user_id),
            path_stats: Some(&PathStats::empty().to_json()),
            raw: None,
        },
    )
    .await?;
    db::git::insert_changes(
        tx,
        repo_id,
        &commit_oid,
        &[(".gitattributes".to_string(), "added")],
    )
    .await?;
    db::refs::create(
        tx,
        repo_id,
        &format!("refs/heads/{}", super::DEFAULT_BRANCH),
        &commit_oid,
        None,
        Some(author.user_id),
    )
    .await?;
    db::repos::set_head_metadata(&mut *tx, repo_id, &meta).await?;
    Ok(commit_oid)
}

/// Stores inline files of a commit (pending for `namespace_id` until the
/// commit claims or releases them; see `sweeper::store_many`) and describes
/// them, in order.
pub async fn store_inline(
    state: &AppState,
    namespace_id: i64,
    files: Vec<(RepoPath, Bytes)>,
) -> ApiResult<Vec<Op>> {
    let bytes: Vec<Bytes> = files.iter().map(|(_, b)| b.clone()).collect();
    let stored = sweeper::store_many(state, namespace_id, bytes).await?;
    Ok(files
        .into_iter()
        .zip(stored)
        .map(|((path, bytes), (w, pending))| {
            let keep =
                INTERPRETED.contains(&path.as_str()) && bytes.len() as u64 <= MAX_INTERPRETED;
            Op::Add {
                path,
                content: AddContent::Inline {
                    pending,
                    sha256: w.sha256.to_string(),
                    size: w.size,
                    git_oid: w.git_oid.expect("asked for git oid"),
                    binary: looks_binary(&bytes),
                    bytes: keep.then_some(bytes),
                },
            }
        })
        .collect())
}
