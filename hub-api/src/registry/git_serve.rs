//! Serving git fetches (`git clone`, `git fetch`, shallow clones) from the
//! stored objects: which commits, trees and blobs a client lacks, and the
//! pack that carries them. Commits are rebuilt from their rows (exact git
//! fields; each id is checked), trees from `git_tree_entries` (each id is
//! checked), regular files' bytes are streamed from storage and deflated as
//! they arrive, and an LFS file travels as its pointer text (the bytes go
//! through git-lfs and the batch API).
//!
//! What the client has: the ancestors of its haves that this repo knows
//! (stopping at its shallow commits, whose parents it lacks). What it gets:
//! the ancestors of its wants it does not have (with `deepen N`, only the
//! first N generations, the last ones becoming shallow), and the trees and
//! blobs of those commits, less what the trees of the boundary commits it
//! has (the parents of sent commits, and its common haves) already hold.

use crate::db;
use crate::error::{ApiError, ApiResult, GitError};
use crate::gating::Download;
use crate::git::object::{object_oid, sort_tree_entries, tree_body};
use crate::git::pack::{Kind, PackWriter};
use crate::git::protocol::{self, FetchRequest};
use crate::git::{lfs_pointer, CommitObject, Mode, Signature, TreeEntry};
use crate::state::AppState;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use gix_packetline::Channel;
use std::collections::{HashMap, HashSet, VecDeque};

/// A regular blob up to this size is read whole (several at once); larger
/// ones are streamed.
const READ_WHOLE: i64 = 256 << 10;
/// Small blobs read ahead of the one being written (at most 16 MiB held).
const READ_AHEAD: usize = 64;
/// Pack bytes gathered before they are framed and sent.
const SEND_AT: usize = 256 * 1024;

/// A repo's commit graph: id -> (tree, parents).
pub struct Graph(HashMap<String, (String, Vec<String>)>);

impl Graph {
    pub async fn load(state: &AppState, repo_id: i64) -> ApiResult<Self> {
        let rows = db::git::commit_graph(&state.db, repo_id).await?;
        Ok(Self(
            rows.into_iter().map(|(o, t, p)| (o, (t, p))).collect(),
        ))
    }

    pub fn contains(&self, oid: &str) -> bool {
        self.0.contains_key(oid)
    }

    fn parents(&self, oid: &str) -> &[String] {
        self.0.get(oid).map(|c| c.1.as_slice()).unwrap_or(&[])
    }

    fn tree(&self, oid: &str) -> Option<&str> {
        self.0.get(oid).map(|c| c.0.as_str())
    }
}

/// What a fetch decided before any pack byte is written.
pub struct Plan {
    /// Haves this repo knows, in the client's order.
    pub common: Vec<String>,
    /// Commits that become shallow for the client, and client shallow
    /// commits that no longer are (with `deepen`).
    pub shallow: Vec<String>,
    pub unshallow: Vec<String>,
    /// What the pack holds.
    commits: Vec<String>,
    trees: Vec<(String, Vec<TreeEntry>)>,
    blobs: Vec<BlobRef>,
}

struct BlobRef {
    oid: String,
    is_lfs: bool,
    sha256: String,
    size: i64,
}

impl Plan {
    pub fn objects(&self) -> usize {
        self.commits.len() + self.trees.len() + self.blobs.len()
    }
}

/// The haves this repo knows.
pub fn common(graph: &Graph, req: &FetchRequest) -> Vec<String> {
    req.haves
        .iter()
        .filter(|h| graph.contains(h))
        .cloned()
        .collect()
}

/// Decides what to send for `req`.
pub async fn plan(
    state: &AppState,
    graph: &Graph,
    req: &FetchRequest,
    with_objects: bool,
) -> ApiResult<Plan> {
    if req.wants.is_empty() {
        return Err(GitError::Protocol("the request wants nothing".into()).into());
    }
    for w in &req.wants {
        if !graph.contains(w) {
            return Err(GitError::Protocol(format!(
                "not our ref {w}: no commit of this repo has that id"
            ))
            .into());
        }
    }
    let common = common(graph, req);
    let client_shallow: HashSet<&str> = req
        .shallow
        .iter()
        .filter(|s| graph.contains(s))
        .map(String::as_str)
        .collect();

    // Everything the client has: ancestors of its common haves and shallow
    // commits, not past a shallow commit.
    let mut had: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = common
        .iter()
        .map(String::as_str)
        .chain(client_shallow.iter().copied())
        .collect();
    while let Some(c) = stack.pop() {
        if !had.insert(c) || client_shallow.contains(c) {
            continue;
        }
        stack.extend(graph.parents(c).iter().map(String::as_str));
    }

    // The commits to send, oldest generations last.
    let mut commits: Vec<String> = Vec::new();
    let mut shallow = Vec::new();
    let mut unshallow = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let relative = req.has_cap("deepen-relative");
    let mut queue: VecDeque<(&str, u32)> = req.wants.iter().map(|w| (w.as_str(), 1)).collect();
    while let Some((c, depth)) = queue.pop_front() {
        if !seen.insert(c) {
            continue;
        }
        let parents = graph.parents(c);
        match req.deepen {
            Some(limit) if !relative => {
                let boundary = depth >= limit && !parents.is_empty();
                if boundary {
                    if !client_shallow.contains(c) {
                        shallow.push(c.to_string());
                    }
                } else if client_shallow.contains(c) && !parents.is_empty() {
                    unshallow.push(c.to_string());
                }
                if !had.contains(c) {
                    commits.push(c.to_string());
                }
                if !boundary {
                    queue.extend(parents.iter().map(|p| (p.as_str(), depth + 1)));
                }
            }
            _ => {
                if had.contains(c) {
                    continue;
                }
                commits.push(c.to_string());
                queue.extend(parents.iter().map(|p| (p.as_str(), depth + 1)));
            }
        }
    }
    // `deepen-relative` (`git fetch --deepen N`): N more generations under
    // the client's shallow commits, which stop being shallow.
    if let (Some(limit), true) = (req.deepen, relative) {
        let mut queue: VecDeque<(&str, u32)> = client_shallow.iter().map(|c| (*c, 0)).collect();
        let mut below: HashSet<&str> = HashSet::new();
        while let Some((c, depth)) = queue.pop_front() {
            if !below.insert(c) {
                continue;
            }
            let parents = graph.parents(c);
            if depth == 0 {
                if !parents.is_empty() {
                    unshallow.push(c.to_string());
                }
            } else if !had.contains(c) && !seen.contains(c) {
                commits.push(c.to_string());
            }
            if depth >= limit {
                if !parents.is_empty() {
                    shallow.push(c.to_string());
                }
                continue;
            }
            queue.extend(parents.iter().map(|p| (p.as_str(), depth + 1)));
        }
    }

    if !with_objects {
        return Ok(Plan {
            common,
            shallow,
            unshallow,
            commits,
            trees: Vec::new(),
            blobs: Vec::new(),
        });
    }
    // Trees the client has: those of the boundary commits it has.
    let mut edge: Vec<String> = common
        .iter()
        .filter_map(|c| graph.tree(c).map(str::to_string))
        .collect();
    for c in &commits {
        for p in graph.parents(c) {
            if had.contains(p.as_str()) {
                if let Some(t) = graph.tree(p) {
                    edge.push(t.to_string());
                }
            }
        }
    }
    let mut known: HashSet<String> = HashSet::new();
    walk_trees(state, edge, &mut known, None).await?;

    let roots: Vec<String> = commits
        .iter()
        .filter_map(|c| graph.tree(c).map(str::to_string))
        .collect();
    let mut trees = Vec::new();
    let blob_oids = walk_trees(state, roots, &mut known, Some(&mut trees)).await?;
    let mut blobs = Vec::with_capacity(blob_oids.len());
    for chunk in blob_oids.chunks(5000) {
        let rows = db::git::blob_rows(&state.db, chunk).await?;
        let mut by_oid: HashMap<String, (bool, String, i64)> = rows
            .into_iter()
            .map(|(o, l, s, n)| (o, (l, s, n)))
            .collect();
        for oid in chunk {
            let (is_lfs, sha256, size) = by_oid
                .remove(oid)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("git blob {oid} has no row")))?;
            blobs.push(BlobRef {
                oid: oid.clone(),
                is_lfs,
                sha256,
                size,
            });
        }
    }
    Ok(Plan {
        common,
        shallow,
        unshallow,
        commits,
        trees,
        blobs,
    })
}

/// Walks trees breadth-first from `roots` (one query per level), skipping
/// objects in `known` and adding what it visits. With `out`, collects the
/// trees visited (entries in git order, id checked) and answers the blobs.
async fn walk_trees(
    state: &AppState,
    roots: Vec<String>,
    known: &mut HashSet<String>,
    mut out: Option<&mut Vec<(String, Vec<TreeEntry>)>>,
) -> ApiResult<Vec<String>> {
    let mut blobs = Vec::new();
    let mut level: Vec<String> = Vec::new();
    for r in roots {
        if known.insert(r.clone()) {
            level.push(r);
        }
    }
    while !level.is_empty() {
        let mut by_tree: HashMap<String, Vec<TreeEntry>> =
            level.iter().map(|t| (t.clone(), Vec::new())).collect();
        for chunk in level.chunks(2000) {
            for row in db::git::entries_of_trees(&state.db, chunk).await? {
                let mode = Mode::parse(&row.mode).ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("tree entry mode {:?}", row.mode))
                })?;
                if let Some(v) = by_tree.get_mut(&row.tree_oid) {
                    v.push(TreeEntry {
                        mode,
                        name: row.name,
                        oid: row.oid,
                    });
                }
            }
        }
        let mut next = Vec::new();
        for t in level {
            let mut entries = by_tree.remove(&t).unwrap_or_default();
            sort_tree_entries(&mut entries);
            for e in &entries {
                if known.insert(e.oid.clone()) {
                    if e.mode == Mode::Tree {
                        next.push(e.oid.clone());
                    } else {
                        blobs.push(e.oid.clone());
                    }
                }
            }
            if let Some(out) = out.as_deref_mut() {
                if object_oid("tree", &tree_body(&entries)) != t {
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "stored tree {t} does not hash to its id"
                    )));
                }
                out.push((t, entries));
            }
        }
        level = next;
    }
    Ok(blobs)
}

/// How pack bytes are framed in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Side-band channel 1, then a flush (v2, and v0 with side-band).
    Band,
    /// Raw bytes (v0 without side-band).
    Raw,
}

fn frame(framing: Framing, bytes: &[u8]) -> Bytes {
    match framing {
        Framing::Raw => Bytes::copy_from_slice(bytes),
        Framing::Band => {
            let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 65515 * 5 + 5);
            protocol::band(&mut out, Channel::Data, bytes);
            Bytes::from(out)
        }
    }
}

/// The commit objects of the plan, in its order, each id checked.
pub(crate) async fn commit_bodies(
    state: &AppState,
    repo_id: i64,
    oids: &[String],
) -> ApiResult<Vec<Vec<u8>>> {
    let mut by_oid = HashMap::new();
    for chunk in oids.chunks(5000) {
        for c in db::git::commits_by_oids(&state.db, repo_id, chunk).await? {
            by_oid.insert(c.oid.clone(), c);
        }
    }
    let mut out = Vec::with_capacity(oids.len());
    for oid in oids {
        let c = by_oid
            .remove(oid)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("commit {oid} is missing")))?;
        if let Some(raw) = c.raw {
            // Pushed with git: served as pushed, still checked.
            if crate::git::object::object_oid("commit", &raw) != *oid {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "stored commit {oid} does not hash to its id"
                )));
            }
            out.push(raw);
            continue;
        }
        let sig = Signature {
            name: c.author_name,
            email: c.author_email,
            time: c.author_time,
            tz: c.author_tz,
        };
        let object = CommitObject {
            tree: c.tree_oid,
            parents: c.parent_oids,
            author: sig.clone(),
            committer: sig,
            message: c.message,
        };
        if object.oid() != *oid {
            return Err(ApiError::internal(anyhow::anyhow!(
                "stored commit {oid} does not hash to its id"
            )));
        }
        out.push(object.body().into_bytes());
    }
    Ok(out)
}

/// The pack of `plan` as a stream of response chunks, framed. Commits and
/// trees are written first (their rows are read before the first byte);
/// blobs follow, small ones read a few at a time, large ones streamed. A
/// failure after the first byte ends the stream with a side-band error
/// (channel 3), which git reports.
pub async fn pack_stream(
    state: AppState,
    dl: Download,
    plan: Plan,
    framing: Framing,
) -> ApiResult<impl Stream<Item = Result<Bytes, actix_web::Error>>> {
    let commits = commit_bodies(&state, dl.repo().id, &plan.commits).await?;
    let count = u32::try_from(plan.objects())
        .map_err(|_| GitError::Protocol("too many objects for one pack".into()))?;
    let Plan { trees, blobs, .. } = plan;
    Ok(async_stream::stream! {
        let (mut w, header) = PackWriter::new(count);
        let mut buf = header;
        for c in &commits {
            w.object(Kind::Commit, c, &mut buf);
            if buf.len() >= SEND_AT {
                yield Ok(frame(framing, &std::mem::take(&mut buf)));
            }
        }
        for (_, entries) in &trees {
            w.object(Kind::Tree, &tree_body(entries), &mut buf);
            if buf.len() >= SEND_AT {
                yield Ok(frame(framing, &std::mem::take(&mut buf)));
            }
        }
        drop(trees);
        // Small regular blobs are read ahead, a few at once (or their
        // deflated entries taken from the cache); others are None.
        let small = futures::stream::iter(blobs.into_iter().map(|b| {
            let state = state.clone();
            let dl = dl.clone();
            async move {
                let whole = if !b.is_lfs && b.size <= READ_WHOLE {
                    Some(match state.pack_entries.get(dl.repo().id, &b.oid) {
                        Some(z) => Ok(Whole::Deflated(z)),
                        None => read_whole(&state, &dl, &b).await.map(Whole::Bytes),
                    })
                } else {
                    None
                };
                (b, whole)
            }
        }))
        .buffered(READ_AHEAD);
        futures::pin_mut!(small);
        let mut failed: Option<String> = None;
        'blobs: while let Some((b, whole)) = small.next().await {
            match whole {
                Some(Ok(Whole::Deflated(z))) => w.deflated(Kind::Blob, b.size as u64, &z, &mut buf),
                Some(Ok(Whole::Bytes(bytes))) => {
                    let z = w.deflate(&bytes);
                    w.deflated(Kind::Blob, bytes.len() as u64, &z, &mut buf);
                    state.pack_entries.put(dl.repo().id, b.oid, Bytes::from(z));
                }
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                None if b.is_lfs => {
                    let pointer = lfs_pointer(&b.sha256, b.size as u64);
                    if crate::git::blob_oid(pointer.as_bytes()) != b.oid {
                        failed = Some(format!("the LFS pointer of {} does not hash to its id", b.oid));
                        break;
                    }
                    w.object(Kind::Blob, pointer.as_bytes(), &mut buf);
                }
                None => {
                    let sha = match crate::domain::Sha256::parse(&b.sha256) {
                        Ok(s) => s,
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    };
                    let mut body = match dl.stream(&state, &sha, None).await {
                        Ok(s) => s,
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    };
                    let (mut obj, h) = w.start(Kind::Blob, b.size as u64);
                    buf.extend(h);
                    while let Some(chunk) = body.next().await {
                        let out = match chunk.map_err(|e| e.to_string()).and_then(|c| obj.push(&c)) {
                            Ok(out) => out,
                            Err(e) => {
                                failed = Some(format!("blob {}: {e}", b.oid));
                                break 'blobs;
                            }
                        };
                        w.account(&out);
                        buf.extend(out);
                        if buf.len() >= SEND_AT {
                            yield Ok(frame(framing, &std::mem::take(&mut buf)));
                        }
                    }
                    match obj.finish() {
                        Ok(out) => {
                            w.account(&out);
                            buf.extend(out);
                        }
                        Err(e) => {
                            failed = Some(format!("blob {}: {e}", b.oid));
                            break;
                        }
                    }
                }
            }
            if buf.len() >= SEND_AT {
                yield Ok(frame(framing, &std::mem::take(&mut buf)));
            }
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "git pack stream failed");
            if !buf.is_empty() {
                yield Ok(frame(framing, &std::mem::take(&mut buf)));
            }
            let mut out = Vec::new();
            if framing == Framing::Band {
                protocol::band(&mut out, Channel::Error, format!("error: {e}\n").as_bytes());
            }
            yield Ok(Bytes::from(out));
            return;
        }
        match w.finish() {
            Ok(trailer) => buf.extend(trailer),
            Err(e) => {
                tracing::error!(error = %e, "git pack stream");
                return;
            }
        }
        let mut last = frame(framing, &buf).to_vec();
        if framing == Framing::Band {
            protocol::flush(&mut last);
        }
        yield Ok(Bytes::from(last));
    })
}

/// A small regular blob: its bytes (checked against its git id), or its
/// deflated entry from the cache.
enum Whole {
    Bytes(Bytes),
    Deflated(Bytes),
}

/// A small regular blob's bytes, checked against its git id.
async fn read_whole(state: &AppState, dl: &Download, b: &BlobRef) -> Result<Bytes, String> {
    if b.size == 0 {
        return Ok(Bytes::new());
    }
    let sha = crate::domain::Sha256::parse(&b.sha256).map_err(|e| e.to_string())?;
    let bytes = dl
        .read_range(state, &sha, 0..b.size as u64)
        .await
        .map_err(|e| format!("blob {}: {e}", b.oid))?;
    if bytes.len() as i64 != b.size || crate::git::blob_oid(&bytes) != b.oid {
        return Err(format!("blob {} does not match its stored bytes", b.oid));
    }
    Ok(bytes)
}
