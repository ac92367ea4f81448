//! `git push` (`git-receive-pack`): the pushed pack is read with `gix-pack`
//! (indexed into a temporary directory, its checksum and every object id
//! verified, a thin pack's missing bases looked up among this repo's stored
//! objects), each object checked (commits and trees parse, trees are in
//! git's canonical form with regular files, executables and folders only,
//! LFS pointers name objects uploaded to this repo), regular blobs stored as
//! pending objects like an API commit's inline files, and then one
//! transaction writes trees, blobs and commits (with their exact bytes, so
//! ids stay git's), links the blobs under the storage quota
//! (`commit::link_with_quota`, the API's check), and moves each ref by
//! compare-and-swap (`db::refs`, whose log is the webhook event and whose
//! trigger bumps the resolve cache's version). Each pushed commit first
//! passes the API commit's rules on its paths (`push_rules`). A deletion
//! follows the API's branch and tag deletion (never the default branch) and
//! is a compare-and-swap on the id git sent. Anything refused leaves the
//! refs as they were and releases the stored bytes.

use crate::auth::Principal;
use crate::card;
use crate::db;
use crate::db::repos::RepoRow;
use crate::domain::Sha256;
use crate::error::{ApiError, ApiResult};
use crate::git::object::{sort_tree_entries, tree_body, tree_oid};
use crate::git::protocol::{RefUpdate, ZERO_ID};
use crate::git::tree::BuiltTree;
use crate::git::{lfs_pointer, CommitObject, Mode, Signature, TreeEntry};
use crate::heavy::Tenant;
use crate::registry::commit::{self, AddContent, Op};
use crate::registry::files::MAX_INTERPRETED;
use crate::registry::path_stats::PathStats;
use crate::registry::push_rules;
use crate::state::AppState;
use crate::sweeper::{self, Pending};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// A thin pack's base is read whole into memory: at most this many bytes.
const MAX_BASE: u64 = 64 << 20;

/// A commit read from the pack.
#[derive(Debug, Clone)]
pub struct PushedCommit {
    /// The exact object body.
    pub raw: Vec<u8>,
    pub object: CommitObject,
}

/// A blob read from the pack.
#[derive(Debug, Clone)]
pub enum PushedBlob {
    /// Stored (pending until the push's transaction claims it); `binary`:
    /// a NUL in its first 512 bytes (the API's test for storing with LFS).
    Regular {
        sha256: String,
        size: u64,
        binary: bool,
    },
    /// A Git LFS pointer (spec v1).
    Lfs {
        sha256: String,
        size: u64,
        pointer_size: usize,
    },
}

/// Everything a pack brought.
#[derive(Debug, Default)]
pub struct Ingested {
    pub commits: HashMap<String, PushedCommit>,
    pub trees: HashMap<String, BuiltTree>,
    pub blobs: HashMap<String, PushedBlob>,
    /// Annotated tags (not supported: refs name commits).
    pub tags: HashSet<String>,
    /// The bytes stored for regular blobs.
    pub pending: Vec<Pending>,
}

/// Parses a Git LFS pointer (spec v1): `version`, `oid sha256:<hex>`, `size`.
pub fn parse_lfs_pointer(data: &[u8]) -> Option<(String, u64)> {
    if data.len() > 1024 {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "version https://git-lfs.github.com/spec/v1" {
        return None;
    }
    let mut sha = None;
    let mut size = None;
    for l in lines {
        if let Some(o) = l.strip_prefix("oid sha256:") {
            sha = Some(o.to_string());
        } else if let Some(s) = l.strip_prefix("size ") {
            size = s.parse::<u64>().ok();
        }
    }
    let sha = sha?;
    let ok = sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some((sha, size?))
}

/// Which of the trees `oids` are reachable from this repo's commits (trees
/// are shared by content between repos: a push may only build on its own).
async fn repo_trees(
    db: impl sqlx::PgExecutor<'_>,
    repo_id: i64,
    oids: &[String],
) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "WITH RECURSIVE t(oid) AS (
            SELECT tree_oid FROM commits WHERE repo_id = $1
            UNION
            SELECT e.oid FROM t JOIN git_tree_entries e ON e.tree_oid = t.oid WHERE e.mode = '40000'
         )
         SELECT oid FROM t WHERE oid = ANY($2)",
    )
    .bind(repo_id)
    .bind(oids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Which of the blobs `oids` this repo holds: bytes linked to it (inline or
/// LFS), or named by a tree reachable from its commits (a new repo's first
/// `.gitattributes` is not linked).
async fn repo_blobs(
    db: &sqlx::PgPool,
    repo_id: i64,
    oids: &[String],
) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT g.oid FROM git_blobs g WHERE g.oid = ANY($2) AND (
            EXISTS (SELECT 1 FROM repo_blobs r WHERE r.repo_id = $1 AND r.sha256 = g.sha256)
            OR EXISTS (SELECT 1 FROM repo_lfs_objects l WHERE l.repo_id = $1 AND l.sha256 = g.sha256))",
    )
    .bind(repo_id)
    .bind(oids)
    .fetch_all(db)
    .await?;
    let mut found: HashSet<String> = rows.into_iter().map(|r| r.0).collect();
    let rest: Vec<&String> = oids.iter().filter(|o| !found.contains(*o)).collect();
    if rest.is_empty() {
        return Ok(found);
    }
    let rows: Vec<(String,)> = sqlx::query_as(
        "WITH RECURSIVE t(oid) AS (
            SELECT tree_oid FROM commits WHERE repo_id = $1
            UNION
            SELECT e.oid FROM t JOIN git_tree_entries e ON e.tree_oid = t.oid WHERE e.mode = '40000'
         )
         SELECT DISTINCT e.oid FROM git_tree_entries e JOIN t ON e.tree_oid = t.oid
         WHERE e.oid = ANY($2) AND e.mode <> '40000'",
    )
    .bind(repo_id)
    .bind(&rest)
    .fetch_all(db)
    .await?;
    found.extend(rows.into_iter().map(|r| r.0));
    Ok(found)
}

/// A stored object's git body, as a thin pack's base: a commit of this
/// repo, a tree, or a blob whose bytes are linked to this repo.
async fn base_object(
    state: &AppState,
    repo_id: i64,
    oid: &str,
) -> ApiResult<Option<(gix_object::Kind, Vec<u8>)>> {
    if db::git::commit(&state.db, repo_id, oid).await?.is_some() {
        let mut bodies =
            super::git_serve::commit_bodies(state, repo_id, &[oid.to_string()]).await?;
        return Ok(bodies.pop().map(|b| (gix_object::Kind::Commit, b)));
    }
    if !repo_trees(&state.db, repo_id, &[oid.to_string()])
        .await?
        .is_empty()
    {
        let rows = db::git::entries_of_trees(&state.db, &[oid.to_string()]).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(mode) = Mode::parse(&r.mode) else {
                return Ok(None);
            };
            entries.push(TreeEntry {
                mode,
                name: r.name,
                oid: r.oid,
            });
        }
        sort_tree_entries(&mut entries);
        if tree_oid(&entries) != oid {
            return Ok(None);
        }
        return Ok(Some((gix_object::Kind::Tree, tree_body(&entries))));
    }
    let rows = db::git::blob_rows(&state.db, &[oid.to_string()]).await?;
    let Some((_, is_lfs, sha256, size)) = rows.into_iter().next() else {
        return Ok(None);
    };
    // Only bytes this repo holds (inline or LFS): a delta against another
    // tenant's blob must not reveal it.
    if repo_blobs(&state.db, repo_id, &[oid.to_string()])
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    if is_lfs {
        return Ok(Some((
            gix_object::Kind::Blob,
            lfs_pointer(&sha256, size as u64).into_bytes(),
        )));
    }
    if size as u64 > MAX_BASE {
        return Ok(None);
    }
    let sha = Sha256::parse(&sha256)?;
    let bytes = state.storage.read_range(&sha, 0..size as u64).await?;
    Ok(Some((gix_object::Kind::Blob, bytes.to_vec())))
}

/// The thin-pack lookup `gix-pack` calls (on a blocking thread) for a
/// ref-delta's base that is not in the pack.
struct Bases<'a> {
    state: &'a AppState,
    repo_id: i64,
    rt: tokio::runtime::Handle,
    used: Mutex<HashSet<gix_hash::ObjectId>>,
}

impl gix_object::Find for Bases<'_> {
    fn try_find<'a>(
        &self,
        id: &gix_hash::oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix_error::Result<Option<gix_object::Data<'a>>> {
        let hex = id.to_hex().to_string();
        let found = self
            .rt
            .block_on(base_object(self.state, self.repo_id, &hex));
        match found {
            Ok(Some((kind, bytes))) => {
                self.used
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_owned());
                buffer.clear();
                buffer.extend_from_slice(&bytes);
                Ok(Some(gix_object::Data {
                    kind,
                    object_hash: gix_hash::Kind::Sha1,
                    data: buffer,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(object = %hex, error = %e, "looking up a thin pack's base failed");
                Ok(None)
            }
        }
    }
}

/// A signature line's parts (`name <email> seconds tz`).
fn signature(s: gix_actor::SignatureRef<'_>) -> Signature {
    let mut t = s.time.split_whitespace();
    let time = t.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let tz = t.next().unwrap_or("+0000").to_string();
    Signature {
        name: String::from_utf8_lossy(s.name).into_owned(),
        email: String::from_utf8_lossy(s.email).into_owned(),
        time,
        tz,
    }
}

/// The entries of a pushed tree, checked: regular files, executables and
/// folders only, and in git's canonical form (it hashes back to `oid`).
fn read_tree(oid: &str, data: &[u8]) -> Result<BuiltTree, String> {
    let t = gix_object::TreeRef::from_bytes(data, gix_hash::Kind::Sha1)
        .map_err(|e| format!("tree {oid} does not parse: {e}"))?;
    let mut entries = Vec::with_capacity(t.entries.len());
    for e in &t.entries {
        let name = std::str::from_utf8(e.filename)
            .map_err(|_| format!("tree {oid} has a name that is not UTF-8"))?;
        let mode = match e.mode.kind() {
            gix_object::tree::EntryKind::Tree => Mode::Tree,
            gix_object::tree::EntryKind::Blob => Mode::File,
            gix_object::tree::EntryKind::BlobExecutable => Mode::Executable,
            gix_object::tree::EntryKind::Link => {
                return Err(format!(
                    "{name:?} is a symbolic link, which the hub does not store"
                ))
            }
            gix_object::tree::EntryKind::Commit => {
                return Err(format!(
                    "{name:?} is a submodule, which the hub does not store"
                ))
            }
        };
        entries.push(TreeEntry {
            mode,
            name: name.to_string(),
            oid: e.oid.to_hex().to_string(),
        });
    }
    if tree_oid(&entries) != oid {
        return Err(format!("tree {oid} is not in git's canonical form"));
    }
    // A name twice (a file and a folder, say) is what `git fsck` calls
    // duplicateEntries: no checkout could hold both.
    let mut names = HashSet::with_capacity(entries.len());
    if let Some(e) = entries.iter().find(|e| !names.insert(e.name.as_str())) {
        return Err(format!("tree {oid} has two entries named {:?}", e.name));
    }
    Ok(BuiltTree {
        oid: oid.to_string(),
        entries,
    })
}

fn read_commit(oid: &str, data: &[u8]) -> Result<PushedCommit, String> {
    let c = gix_object::CommitRef::from_bytes(data, gix_hash::Kind::Sha1)
        .map_err(|e| format!("commit {oid} does not parse: {e}"))?;
    let author = c
        .author()
        .map_err(|e| format!("commit {oid}: bad author: {e}"))?;
    let committer = c
        .committer()
        .map_err(|e| format!("commit {oid}: bad committer: {e}"))?;
    Ok(PushedCommit {
        raw: data.to_vec(),
        object: CommitObject {
            tree: c.tree().to_hex().to_string(),
            parents: c.parents().map(|p| p.to_hex().to_string()).collect(),
            author: signature(author),
            committer: signature(committer),
            message: String::from_utf8_lossy(c.message).into_owned(),
        },
    })
}

/// Reads and checks the pack at `pack` (on a blocking thread): indexes it
/// into `dir`, completing a thin pack from the repo's objects, then reads
/// every object. Regular blobs are stored as pending objects of the
/// namespace (in `out.pending` even when an error follows).
pub fn ingest(
    state: &AppState,
    repo: &RepoRow,
    pack: &Path,
    dir: &Path,
    out: &mut Ingested,
) -> Result<(), String> {
    let rt = tokio::runtime::Handle::current();
    let file = std::fs::File::open(pack).map_err(|e| format!("reading the pack: {e}"))?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    let bases = Bases {
        state,
        repo_id: repo.id,
        rt: rt.clone(),
        used: Mutex::new(HashSet::new()),
    };
    let options = gix_pack::bundle::write::Options {
        thread_limit: Some(1),
        iteration_mode: gix_pack::data::input::Mode::Verify,
        index_version: gix_pack::index::Version::default(),
        // Every object is decoded in memory: none may be larger than an API
        // commit's inline file can be (larger files go through git-lfs, whose
        // pointers are small), so a push holds at most that much per object.
        alloc_limit_bytes: Some(state.limits.commit_line),
        ..Default::default()
    };
    let interrupt = std::sync::atomic::AtomicBool::new(false);
    let outcome = gix_pack::Bundle::write_to_directory(
        &mut reader,
        Some(dir),
        &mut gix_utils::progress::Discard,
        &interrupt,
        Some(&bases),
        gix_hash::Kind::Sha1,
        options,
    )
    .map_err(|e| {
        let e = e.to_string();
        if e.contains("too large to fit in memory") {
            format!(
                "an object in the pack is larger than {} bytes: track large files with git-lfs",
                state.limits.commit_line
            )
        } else {
            format!("the pack is invalid: {e}")
        }
    })?;
    let Some(index_path) = outcome.index_path else {
        return Ok(()); // no objects
    };
    let bundle = gix_pack::Bundle::at(&index_path, gix_hash::Kind::Sha1)
        .map_err(|e| format!("reading the pack's index: {e}"))?;
    let used = bases.used.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut inflate = gix_zlib::Inflate::default();
    let mut buf = Vec::new();
    let ids: Vec<gix_hash::ObjectId> = bundle.index.iter().map(|e| e.oid).collect();
    for id in ids {
        if used.contains(&id) {
            continue; // a base the repo has
        }
        let oid = id.to_hex().to_string();
        let (data, _) = bundle
            .find(&id, &mut buf, &mut inflate, &mut gix_pack::cache::Never)
            .map_err(|e| format!("object {oid} cannot be read: {e}"))?
            .ok_or_else(|| format!("object {oid} is missing from its own pack"))?;
        match data.kind {
            gix_object::Kind::Commit => {
                out.commits
                    .insert(oid.clone(), read_commit(&oid, data.data)?);
            }
            gix_object::Kind::Tree => {
                out.trees.insert(oid.clone(), read_tree(&oid, data.data)?);
            }
            gix_object::Kind::Tag => {
                out.tags.insert(oid);
            }
            gix_object::Kind::Blob => {
                if let Some((sha256, size)) = parse_lfs_pointer(data.data) {
                    out.blobs.insert(
                        oid,
                        PushedBlob::Lfs {
                            sha256,
                            size,
                            pointer_size: data.data.len(),
                        },
                    );
                    continue;
                }
                let binary = commit::looks_binary(data.data);
                let bytes = Bytes::copy_from_slice(data.data);
                let (w, p) = rt
                    .block_on(sweeper::store_bytes(state, repo.namespace_id, bytes))
                    .map_err(|e| format!("storing blob {oid}: {e}"))?;
                out.pending.push(p);
                if w.git_oid.as_deref() != Some(oid.as_str()) {
                    return Err(format!("blob {oid} was stored with another id"));
                }
                out.blobs.insert(
                    oid,
                    PushedBlob::Regular {
                        sha256: w.sha256.to_string(),
                        size: w.size,
                        binary,
                    },
                );
            }
        }
    }
    Ok(())
}

/// The outcome of one ref update: None when it was made, else git's reason.
pub type Status = Option<String>;

/// A ref update that passed its checks, waiting for the transaction.
struct Planned {
    idx: usize,
    update: RefUpdate,
    /// The pushed commits it brings, parents first.
    new_commits: Vec<String>,
}

/// Which ref names may be pushed.
fn check_name(name: &str) -> Result<(), String> {
    let short = if let Some(b) = name.strip_prefix("refs/heads/") {
        b
    } else if let Some(t) = name.strip_prefix("refs/tags/") {
        t
    } else {
        return Err("only branches (refs/heads/) and tags (refs/tags/) can be pushed".into());
    };
    crate::domain::RefName::parse(short)
        .map(|_| ())
        .map_err(|e| format!("invalid ref name: {e}"))
}

/// The commit graph the checks walk: the repo's and the pushed.
struct Graph {
    parents: HashMap<String, Vec<String>>,
    stored: HashSet<String>,
}

impl Graph {
    async fn load(state: &AppState, repo_id: i64, pushed: &Ingested) -> ApiResult<Self> {
        let mut parents = HashMap::new();
        let mut stored = HashSet::new();
        for (oid, _, p) in db::git::commit_graph(&state.db, repo_id).await? {
            stored.insert(oid.clone());
            parents.insert(oid, p);
        }
        for (oid, c) in &pushed.commits {
            parents
                .entry(oid.clone())
                .or_insert_with(|| c.object.parents.clone());
        }
        Ok(Self { parents, stored })
    }

    /// Whether `ancestor` is `tip` or reachable from it.
    fn reaches(&self, tip: &str, ancestor: &str) -> bool {
        let mut seen = HashSet::new();
        let mut todo = vec![tip.to_string()];
        while let Some(c) = todo.pop() {
            if c == ancestor {
                return true;
            }
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(ps) = self.parents.get(&c) {
                todo.extend(ps.iter().cloned());
            }
        }
        false
    }

    /// The pushed commits reachable from `tip` and not stored, parents
    /// first; an error names a commit that is neither pushed nor stored.
    fn new_commits(&self, pushed: &Ingested, tip: &str) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        // Iterative post-order: parents before children.
        let mut stack = vec![(tip.to_string(), false)];
        while let Some((c, expanded)) = stack.pop() {
            if self.stored.contains(&c) {
                continue;
            }
            if expanded {
                order.push(c);
                continue;
            }
            if !seen.insert(c.clone()) {
                continue;
            }
            let Some(pc) = pushed.commits.get(&c) else {
                return Err(format!("missing necessary objects: commit {c}"));
            };
            stack.push((c.clone(), true));
            for p in &pc.object.parents {
                stack.push((p.clone(), false));
            }
        }
        Ok(order)
    }
}

/// Checks that every object the pushed commits name is pushed or stored,
/// and every LFS pointer names an object uploaded to this repo.
async fn check_objects(
    state: &AppState,
    repo_id: i64,
    pushed: &Ingested,
    commits: &[String],
    checked: &mut HashSet<String>,
) -> Result<(), String> {
    let mut trees: Vec<String> = commits
        .iter()
        .filter_map(|c| pushed.commits.get(c))
        .map(|c| c.object.tree.clone())
        .collect();
    let mut missing_trees: Vec<String> = Vec::new();
    let mut blobs: Vec<String> = Vec::new();
    while let Some(t) = trees.pop() {
        if !checked.insert(t.clone()) {
            continue;
        }
        let Some(tree) = pushed.trees.get(&t) else {
            missing_trees.push(t);
            continue;
        };
        for e in &tree.entries {
            match e.mode {
                Mode::Tree => trees.push(e.oid.clone()),
                _ => blobs.push(e.oid.clone()),
            }
        }
    }
    let internal = |e: sqlx::Error| format!("internal error: {e}");
    if !missing_trees.is_empty() {
        let found = repo_trees(&state.db, repo_id, &missing_trees)
            .await
            .map_err(internal)?;
        if let Some(t) = missing_trees.iter().find(|t| !found.contains(*t)) {
            return Err(format!("missing necessary objects: tree {t}"));
        }
    }
    blobs.sort();
    blobs.dedup();
    blobs.retain(|b| checked.insert(b.clone()));
    let mut lfs: Vec<(String, u64)> = Vec::new();
    let mut stored: Vec<String> = Vec::new();
    for b in &blobs {
        match pushed.blobs.get(b) {
            Some(PushedBlob::Lfs { sha256, size, .. }) => lfs.push((sha256.clone(), *size)),
            Some(PushedBlob::Regular { .. }) => {}
            None => stored.push(b.clone()),
        }
    }
    if !stored.is_empty() {
        let found = repo_blobs(&state.db, repo_id, &stored)
            .await
            .map_err(internal)?;
        if let Some(b) = stored.iter().find(|b| !found.contains(*b)) {
            return Err(format!("missing necessary objects: blob {b}"));
        }
    }
    if !lfs.is_empty() {
        let shas: Vec<String> = lfs.iter().map(|l| l.0.clone()).collect();
        let linked: HashMap<String, i64> = db::lfs::linked(&state.db, repo_id, &shas)
            .await
            .map_err(internal)?
            .into_iter()
            .collect();
        for (sha, size) in &lfs {
            match linked.get(sha) {
                None => {
                    return Err(format!(
                        "LFS object {sha} was not uploaded to this repo (run git lfs push)"
                    ))
                }
                Some(have) if *have as u64 != *size => {
                    return Err(format!(
                        "LFS pointer declares {size} bytes but object {sha} has {have}"
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// A file of a tree listing, by path.
pub type Listing = BTreeMap<String, (String, String, i64, bool)>; // path -> (blob oid, sha256, size, is_lfs)

async fn listing(tx: &mut sqlx::PgConnection, tree: Option<&str>) -> ApiResult<Listing> {
    let Some(tree) = tree else {
        return Ok(Listing::new());
    };
    Ok(db::git::list_recursive(&mut *tx, tree, "")
        .await?
        .into_iter()
        .filter(|e| !e.is_dir())
        .filter_map(|e| {
            let b = e.blob?;
            Some((e.path, (e.oid, b.sha256, b.size, b.is_lfs)))
        })
        .collect())
}

/// Reads a small regular file of a listing (README.md, config.json).
async fn interpreted(state: &AppState, files: &Listing, path: &str) -> ApiResult<Option<Bytes>> {
    let Some((_, sha, size, is_lfs)) = files.get(path) else {
        return Ok(None);
    };
    if *is_lfs || *size as u64 > MAX_INTERPRETED {
        return Ok(None);
    }
    let sha = Sha256::parse(sha)?;
    Ok(Some(state.storage.read_range(&sha, 0..*size as u64).await?))
}

/// Applies a push: checks each update, then writes objects and moves refs
/// in one transaction. Answers a status per update, in order, and whether
/// the transaction was committed (it then claimed `pushed.pending`; if not,
/// the caller releases them).
pub async fn apply(
    state: &AppState,
    repo: &RepoRow,
    pusher: &Principal,
    pushed: &Ingested,
    updates: &[RefUpdate],
    atomic: bool,
) -> ApiResult<(Vec<Status>, bool)> {
    let mut status: Vec<Status> = vec![None; updates.len()];
    let graph = Graph::load(state, repo.id, pushed).await?;
    let current: HashMap<String, String> = db::refs::list(&state.db, repo.id)
        .await?
        .into_iter()
        .map(|r| (r.name, r.commit_oid))
        .collect();
    let main = format!("refs/heads/{}", super::DEFAULT_BRANCH);
    let mut planned: Vec<Planned> = Vec::new();
    let mut checked = HashSet::new();
    for (idx, u) in updates.iter().enumerate() {
        let r: Result<Vec<String>, String> = async {
            check_name(&u.name)?;
            if u.new == ZERO_ID {
                // The API's branch and tag deletion: any but the default
                // branch, by whoever may write; here also only from the id
                // the pusher saw (compare-and-swap, again under the lock).
                if u.name == main {
                    return Err(format!(
                        "cannot delete {main}: it is the repo's default branch"
                    ));
                }
                return match current.get(&u.name) {
                    None => Err("stale info: the ref does not exist".into()),
                    Some(cur) if *cur != u.old => Err(format!(
                        "stale info: the ref is at {cur}, not {} (fetch first)",
                        u.old
                    )),
                    Some(_) => Ok(Vec::new()),
                };
            }
            if pushed.tags.contains(&u.new) {
                return Err("annotated tags are not supported: push a lightweight tag".into());
            }
            if !pushed.commits.contains_key(&u.new) && !graph.stored.contains(&u.new) {
                return Err(format!(
                    "missing necessary objects: {} is not a commit",
                    u.new
                ));
            }
            match current.get(&u.name) {
                None if u.old != ZERO_ID => return Err("stale info: the ref does not exist".into()),
                Some(cur) if *cur != u.old => return Err("fetch first".into()),
                Some(_) if u.name.starts_with("refs/tags/") && u.old != u.new => {
                    return Err("already exists: tags cannot be moved".into())
                }
                Some(_) if !graph.reaches(&u.new, &u.old) => return Err("non-fast-forward".into()),
                _ => {}
            }
            if u.name.starts_with("refs/heads/") {
                let short = &u.name["refs/heads/".len()..];
                if current.contains_key(&format!("refs/tags/{short}")) {
                    return Err(format!("{short:?} is a tag"));
                }
            }
            let new_commits = graph.new_commits(pushed, &u.new)?;
            check_objects(state, repo.id, pushed, &new_commits, &mut checked).await?;
            Ok(new_commits)
        }
        .await;
        match r {
            Ok(new_commits) => planned.push(Planned {
                idx,
                update: u.clone(),
                new_commits,
            }),
            Err(reason) => status[idx] = Some(reason),
        }
    }
    if atomic && status.iter().any(Option::is_some) {
        for s in status.iter_mut().filter(|s| s.is_none()) {
            *s = Some("atomic push failed".into());
        }
        return Ok((status, false));
    }
    // A commit refused inside the transaction (by the API's rules on its
    // paths) refuses the updates that bring it; without `atomic` the others
    // are written again without them.
    loop {
        if planned.is_empty() {
            return Ok((status, false));
        }
        match write(state, repo, pusher, pushed, &planned).await {
            Ok(Written::Done) => return Ok((status, true)),
            Ok(Written::Moved(refused)) => {
                // Nothing was written: the others are not moved either.
                for p in &planned {
                    status[p.idx] =
                        Some("not updated: another ref of this push moved meanwhile".into());
                }
                for (idx, reason) in refused {
                    status[idx] = Some(reason);
                }
                return Ok((status, false));
            }
            Ok(Written::Refused { commit, reason }) => {
                let (bad, rest): (Vec<Planned>, Vec<Planned>) = planned
                    .into_iter()
                    .partition(|p| p.new_commits.contains(&commit));
                let reason = format!("commit {commit}: {reason}");
                for p in &bad {
                    status[p.idx] = Some(reason.clone());
                }
                if atomic {
                    for p in &rest {
                        status[p.idx] = Some("atomic push failed".into());
                    }
                    return Ok((status, false));
                }
                planned = rest;
            }
            Err(e) => {
                let reason = match &e {
                    ApiError::InvalidCommit(m) => m.clone(),
                    other => other.to_string(),
                };
                for p in &planned {
                    status[p.idx] = Some(reason.clone());
                }
                return Ok((status, false));
            }
        }
    }
}

/// What the transaction did.
enum Written {
    /// Committed.
    Done,
    /// Rolled back: these updates' refs moved since they were checked.
    Moved(Vec<(usize, String)>),
    /// Rolled back: a pushed commit breaks a rule of API commits.
    Refused { commit: String, reason: String },
}

/// The pushed trees and blobs the commits `order` name (what is not pushed
/// is stored already).
fn reachable<'a>(
    pushed: &'a Ingested,
    order: &[&str],
) -> (Vec<&'a BuiltTree>, Vec<(&'a String, &'a PushedBlob)>) {
    let mut todo: Vec<&str> = order
        .iter()
        .filter_map(|c| pushed.commits.get(*c))
        .map(|c| c.object.tree.as_str())
        .collect();
    let mut seen = HashSet::new();
    let mut trees = Vec::new();
    let mut blobs = Vec::new();
    while let Some(t) = todo.pop() {
        if !seen.insert(t) {
            continue;
        }
        let Some(tree) = pushed.trees.get(t) else {
            continue;
        };
        trees.push(tree);
        for e in &tree.entries {
            if e.mode == Mode::Tree {
                todo.push(&e.oid);
            } else if let Some((oid, b)) = pushed.blobs.get_key_value(&e.oid) {
                if seen.insert(oid.as_str()) {
                    blobs.push((oid, b));
                }
            }
        }
    }
    (trees, blobs)
}

/// The transaction: objects, commits and the ref moves. A ref whose head
/// moved since it was checked is refused (`fetch first`), and a commit that
/// breaks a rule of API commits (`push_rules`) refuses the push; either way
/// the whole transaction is rolled back so nothing is half-written, and the
/// refs stay as they were. Only the pushed objects the planned commits name
/// are written.
async fn write(
    state: &AppState,
    repo: &RepoRow,
    pusher: &Principal,
    pushed: &Ingested,
    planned: &[Planned],
) -> ApiResult<Written> {
    let tenant = Tenant::User(pusher.user_id);
    let mut order: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for p in planned {
        for c in &p.new_commits {
            if seen.insert(c.as_str()) {
                order.push(c);
            }
        }
    }
    let (trees, blobs) = reachable(pushed, &order);
    // Weight files get their parameter counts as in an API commit.
    let mut weights: Vec<Op> = Vec::new();
    let mut weight_seen = HashSet::new();
    for t in &trees {
        for e in &t.entries {
            let lower = e.name.to_ascii_lowercase();
            if !(lower.ends_with(".safetensors") || lower.ends_with(".gguf")) {
                continue;
            }
            if !weight_seen.insert(e.oid.clone()) {
                continue;
            }
            let content = match pushed.blobs.get(&e.oid) {
                Some(PushedBlob::Regular { sha256, size, .. }) => AddContent::Stored {
                    sha256: sha256.clone(),
                    size: *size,
                    git_oid: e.oid.clone(),
                    bytes: None,
                },
                Some(PushedBlob::Lfs { sha256, size, .. }) => AddContent::Lfs {
                    sha256: sha256.clone(),
                    size: Some(*size),
                },
                None => continue,
            };
            let Ok(path) = crate::domain::RepoPath::parse(&e.name) else {
                continue;
            };
            weights.push(Op::Add { path, content });
        }
    }
    commit::validate_weights(state, tenant, &weights).await?;

    let mut tx = state.db.begin().await?;
    // Lock the refs (in name order, as concurrent pushes do) and re-check
    // their heads.
    let mut names: Vec<&str> = planned.iter().map(|p| p.update.name.as_str()).collect();
    names.sort();
    names.dedup();
    let mut heads: HashMap<&str, Option<String>> = HashMap::new();
    for n in names {
        let head = db::refs::get_for_update(&mut tx, repo.id, n).await?;
        heads.insert(n, head.map(|h| h.commit_oid));
    }
    let mut refused = Vec::new();
    for p in planned {
        let expected = (p.update.old != ZERO_ID).then(|| p.update.old.clone());
        if heads.get(p.update.name.as_str()) != Some(&expected) {
            refused.push((p.idx, "fetch first".to_string()));
        }
    }
    if !refused.is_empty() {
        return Ok(Written::Moved(refused));
    }

    // Trees and blobs.
    let trees: Vec<BuiltTree> = trees.into_iter().cloned().collect();
    db::git::insert_trees(&mut tx, &trees).await?;
    let mut new_blobs = Vec::new();
    let mut stored: Vec<(String, i64, bool)> = Vec::new();
    let mut used: HashSet<&str> = HashSet::new();
    for (oid, b) in blobs {
        match b {
            PushedBlob::Regular { sha256, size, .. } => {
                used.insert(sha256);
                new_blobs.push(db::git::NewBlob {
                    oid: oid.clone(),
                    is_lfs: false,
                    sha256: sha256.clone(),
                    size: *size as i64,
                    pointer_size: None,
                });
                stored.push((sha256.clone(), *size as i64, false));
            }
            PushedBlob::Lfs {
                sha256,
                size,
                pointer_size,
            } => {
                new_blobs.push(db::git::NewBlob {
                    oid: oid.clone(),
                    is_lfs: true,
                    sha256: sha256.clone(),
                    size: *size as i64,
                    pointer_size: Some(*pointer_size as i32),
                });
                stored.push((sha256.clone(), *size as i64, true));
            }
        }
    }
    db::git::insert_blobs(&mut tx, &new_blobs).await?;
    // The bytes of blobs no written commit names stay pending: the caller
    // releases them.
    let claimed: Vec<Pending> = pushed
        .pending
        .iter()
        .filter(|p| used.contains(p.sha256.as_str()))
        .cloned()
        .collect();
    sweeper::claim_all(&mut tx, &state.storage, &claimed).await?;
    commit::link_with_quota(state, &mut tx, repo.namespace_id, repo.id, &stored).await?;

    // Commits, parents first, each with the API's metadata.
    let is_model = repo.repo_type == "model";
    let mut metas: HashMap<String, card::RepoMeta> = HashMap::new();
    let mut rules = push_rules::RulesCache::default();
    for oid in order {
        let c = &pushed.commits[oid];
        let parent = match c.object.parents.first() {
            Some(p) => db::git::commit(&mut *tx, repo.id, p).await?,
            None => None,
        };
        let before = listing(&mut tx, parent.as_ref().map(|p| p.tree_oid.as_str())).await?;
        let after = listing(&mut tx, Some(&c.object.tree)).await?;
        for path in after.keys() {
            crate::domain::RepoPath::parse(path).map_err(|e| {
                ApiError::InvalidCommit(format!("commit {oid}: invalid path {path:?}: {e}"))
            })?;
        }
        if let Err(reason) =
            push_rules::check_commit(state, tenant, pushed, &before, &after, &mut rules).await?
        {
            return Ok(Written::Refused {
                commit: oid.to_string(),
                reason,
            });
        }
        let mut changes: Vec<(String, &'static str)> = Vec::new();
        for (path, f) in &after {
            match before.get(path) {
                None => changes.push((path.clone(), "added")),
                Some(b) if b.0 != f.0 => changes.push((path.clone(), "modified")),
                Some(_) => {}
            }
        }
        for path in before.keys() {
            if !after.contains_key(path) {
                changes.push((path.clone(), "deleted"));
            }
        }
        let card_data = match interpreted(state, &after, "README.md").await? {
            Some(b) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                state
                    .tenancy
                    .heavy
                    .run(tenant, move || card::parse_card(&text))
                    .await?
                    .map_err(|e| ApiError::InvalidCommit(format!("README.md: {e}")))?
            }
            None => serde_json::json!({}),
        };
        let config_info = match interpreted(state, &after, "config.json").await? {
            Some(b) => card::parse_config(&b),
            None => serde_json::json!({}),
        };
        let stats = PathStats::recount(&mut tx, &c.object.tree).await?;
        let facts = stats.facts(
            after
                .keys()
                .filter(|p| !p.contains('/'))
                .map(String::as_str),
        );
        let meta = card::derive_from_facts(
            is_model,
            card_data,
            config_info,
            &facts,
            stats.safetensors(),
        );
        let path_stats = stats.to_json();
        let depth = parent.as_ref().map(|p| p.depth).unwrap_or(0) + 1;
        let title = c
            .object
            .message
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        db::git::insert_commit(
            &mut tx,
            &db::git::NewCommit {
                repo_id: repo.id,
                object: &c.object,
                oid,
                title: &title,
                depth,
                meta: &meta,
                author_id: Some(pusher.user_id),
                path_stats: Some(&path_stats),
                raw: Some(&c.raw),
            },
        )
        .await?;
        db::git::insert_changes(&mut tx, repo.id, oid, &changes).await?;
        metas.insert(oid.to_string(), meta);
    }

    // The refs.
    let main = format!("refs/heads/{}", super::DEFAULT_BRANCH);
    for p in planned {
        let u = &p.update;
        if u.new == ZERO_ID {
            if !db::refs::delete_at(&mut tx, repo.id, &u.name, &u.old, Some(pusher.user_id)).await?
            {
                // Unreachable while the row lock is held.
                return Ok(Written::Moved(vec![(p.idx, "fetch first".to_string())]));
            }
            db::repos::touch(&mut *tx, repo.id).await?;
            continue;
        }
        let moved = if u.old == ZERO_ID {
            db::refs::create(
                &mut tx,
                repo.id,
                &u.name,
                &u.new,
                None,
                Some(pusher.user_id),
            )
            .await?
        } else {
            db::refs::compare_and_swap(
                &mut tx,
                repo.id,
                &u.name,
                &u.old,
                &u.new,
                Some(pusher.user_id),
            )
            .await?
        };
        if !moved {
            // Unreachable while the row locks are held (a created ref may race).
            return Ok(Written::Moved(vec![(p.idx, "fetch first".to_string())]));
        }
        if u.name == main {
            let meta = match metas.get(&u.new) {
                Some(m) => m.clone(),
                None => {
                    let c = db::git::commit(&mut *tx, repo.id, &u.new)
                        .await?
                        .ok_or_else(|| {
                            ApiError::internal(anyhow::anyhow!("pushed head missing"))
                        })?;
                    card::RepoMeta {
                        card_data: c.card_data.0.clone(),
                        config_info: c.config_info.0.clone(),
                        tags: c.tags.clone(),
                        pipeline_tag: c.pipeline_tag.clone(),
                        library_name: c.library_name.clone(),
                        license: c.license.clone(),
                        safetensors: c.safetensors.as_ref().map(|j| j.0.clone()),
                    }
                }
            };
            db::repos::set_head_metadata(&mut *tx, repo.id, &meta).await?;
        } else {
            db::repos::touch(&mut *tx, repo.id).await?;
        }
    }
    tx.commit().await?;
    tracing::info!(
        repo.id = repo.id,
        refs = planned.len(),
        commits = seen.len(),
        "git push"
    );
    Ok(Written::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfs_pointers() {
        let sha = "a".repeat(64);
        let p = lfs_pointer(&sha, 12);
        assert_eq!(parse_lfs_pointer(p.as_bytes()), Some((sha, 12)));
        assert_eq!(parse_lfs_pointer(b"hello"), None);
        assert_eq!(
            parse_lfs_pointer(
                b"version https://git-lfs.github.com/spec/v1\noid sha256:zz\nsize 1\n"
            ),
            None
        );
    }
}
