//! What the hub may delete, and when: staging objects and part files left by
//! interrupted writes, expired upload sessions, and verified objects at final
//! keys that nothing references (bytes of refused or crashed commits, LFS
//! objects of deleted repos that no commit kept).
//!
//! **The pending-object protocol.** Every request path that makes bytes final
//! goes through [`store`]: the bytes are staged and verified, then a
//! `pending_objects` row (digest, size, namespace, time) is committed under
//! the blob's shared advisory lock, and only then is the object moved to its
//! content address. The transaction that references the object (a commit, an
//! LFS link) takes the same shared lock and deletes the row ([`claim`]); a
//! request that fails gives its rows back at once ([`release`]); rows of a
//! crashed request are collected once older than the grace period. Quotas
//! count pending rows, so refused commits cannot store bytes for free.
//!
//! **The collector** deletes an object only under the blob's exclusive lock,
//! after checking that no git blob, LFS link, inline-file link, pending row or
//! open upload session needs it. A writer either recorded its pending row
//! before the collector took the lock (the collector sees it and keeps the
//! object) or records it after the collector let go (and then writes the
//! object again itself), so a blob that becomes referenced is never deleted.
//! A commit slower than the grace period finds its row collected: [`claim`]
//! then checks the bytes are still there and otherwise answers 503, never a
//! commit that points at missing bytes.
//!
//! **Xet storage** (issue 12) is collected in the same pass, top down, so one
//! pass after a repo is deleted (its `xet_repo_files` and LFS links cascade;
//! its dedup sets stay until step 3) frees everything only that repo used
//! that no commit kept (a committed file's blob stays, like any committed
//! LFS object: `git_blobs` rows are never pruned):
//! 1. a Xet-stored blob (`blobs.xet_file`) nothing references, by the rules
//!    above and under the same blob lock: its recipe object and its row go
//!    (`Storage::delete_blob` deletes both);
//! 2. registered files (`xet_files`) that no blob stores and no repo
//!    registered (their `xet_file_xorbs` rows cascade);
//! 3. dedup sets whose xorbs no file uses, unless a dedup answer handed them
//!    out within the key expiry ([`Policy::dedup_hold`]), and ownerships
//!    (`xet_xorb_owners`) that nothing of the namespace uses any more after
//!    the grace period (the namespace stops paying for a xorb another
//!    tenant's file keeps);
//! 4. xorbs (object, `xet_xorbs` row, ownerships) that no file uses, older
//!    than [`Policy::xet_grace`] counted from their latest upload by any
//!    namespace (a client uploads every xorb before the shard that
//!    references them), not in a set handed out within the key expiry, and
//!    with no quota reservation in flight.
//!
//! Races are closed by one lock, the Xet index lock
//! (`db::xet_gc::lock_index`): whatever makes a xorb referable (a xorb upload
//! indexing it, a shard registering files over it, a dedup answer handing it
//! out) holds it shared in its transaction and re-checks there ([`guard_shard`]:
//! every xorb the shard names must still be stored and the namespace's); each
//! deletion of steps 2-4 holds it exclusively and re-checks its condition, a
//! xorb's object going before its row. So a registration either commits first
//! (and the collector's re-check sees the file) or waits and then finds the
//! xorb gone and is refused with 400 `invalid_xet_data` ("xorb ... is not
//! stored"): a registered file never points at a deleted xorb. A xorb upload
//! writes the object, indexes it under the shared lock (refreshing its
//! upload time), and writes the object again if a deletion slipped in between.
//! A client refused that way had deduplicated against a xorb from its local
//! shard cache (hf_xet keeps the shards it uploaded and its dedup answers)
//! that the hub collected because no file used it: uploading again after
//! deleting the client's shard cache (under `~/.cache/huggingface/xet`:
//! `$HF_HOME/xet` or `HF_XET_CACHE`) uploads the bytes afresh. Dedup answers
//! cannot cause it: their xorbs are kept until the answer's key expires. The
//! blob a registration makes of a file follows the pending-object rule above:
//! its recipe is written before the transaction (write-if-absent), and
//! [`guard_shard`] re-checks under the blob's shared lock that it survived
//! the collector (else 503, send it again).

use crate::db;
use crate::domain::Sha256;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::storage::StorageKey;
use crate::storage::{Staged, Storage, Written};
use bytes::Bytes;
use futures::StreamExt;
use hub_xet::hash::{self, XetHash};
use hub_xet::xorb::XorbIndex;
use sqlx::PgConnection;
use std::time::Duration;

/// How often the sweeper runs.
pub const INTERVAL: Duration = Duration::from_secs(600);

/// When each kind of leftover may be removed, and whether to scan the whole
/// store for objects no row knows about.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Age of staging objects and parts of sessions that are no longer open.
    pub staging_grace: chrono::Duration,
    /// Age of a pending row (a request that neither claimed nor released it:
    /// crashed, or slower than this).
    pub pending_grace: chrono::Duration,
    /// Age of an object at a final key that no row knows, found by the scan.
    pub scan_grace: chrono::Duration,
    /// Whether to list every final object this pass (costs one listing of
    /// the store; the pending rows cover everything written since).
    pub scan: bool,
    /// Age, since its latest upload, of a xorb no file uses before it is
    /// collected (the client uploads all xorbs, then the shards), and of an
    /// ownership nothing of its namespace uses before it is released.
    pub xet_grace: chrono::Duration,
    /// How long after a dedup answer handed a set out its xorbs are kept: the
    /// answer's key expiry (the client may reference them until then), plus
    /// a day for clocks.
    pub dedup_hold: chrono::Duration,
}

impl Policy {
    /// What the running hub uses; the full scan runs every [`SCAN_EVERY`] passes.
    pub fn production(scan: bool) -> Self {
        Self {
            staging_grace: chrono::Duration::hours(6),
            pending_grace: chrono::Duration::hours(1),
            scan_grace: chrono::Duration::hours(6),
            scan,
            xet_grace: chrono::Duration::hours(24),
            dedup_hold: chrono::Duration::seconds(
                crate::routes::xet::download::DEDUP_KEY_TTL_S as i64,
            ) + chrono::Duration::days(1),
        }
    }

    /// Everything eligible right now (tests, and an operator's one-off run).
    pub fn immediate() -> Self {
        Self {
            staging_grace: chrono::Duration::zero(),
            pending_grace: chrono::Duration::zero(),
            scan_grace: chrono::Duration::zero(),
            scan: true,
            xet_grace: chrono::Duration::zero(),
            dedup_hold: chrono::Duration::zero(),
        }
    }
}

/// The full scan runs every this many passes (6 h at the default interval),
/// the first time at start-up.
pub const SCAN_EVERY: u64 = 36;

/// Bytes made final by a request and not referenced yet.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub sha256: Sha256,
}

/// Records staged bytes as pending for `namespace_id`, then makes them final.
/// On failure nothing is left but what the collector removes.
pub async fn store(
    state: &AppState,
    namespace_id: i64,
    staged: Staged,
) -> ApiResult<(Written, Pending)> {
    let sha = staged.written.sha256.clone();
    let size = staged.written.size as i64;
    let recorded = async {
        let mut tx = state.db.begin().await?;
        db::lfs::lock_blob_shared(&mut tx, sha.as_str()).await?;
        let id = db::lfs::insert_pending(&mut *tx, sha.as_str(), size, namespace_id).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(id)
    }
    .await;
    let id = match recorded {
        Ok(id) => id,
        Err(e) => {
            state.storage.discard(staged).await;
            return Err(e.into());
        }
    };
    let pending = Pending { id, sha256: sha };
    match state.storage.promote(staged).await {
        Ok(w) => Ok((w, pending)),
        Err(e) => {
            release(state, std::slice::from_ref(&pending)).await;
            Err(e.into())
        }
    }
}

/// [`store`] for in-memory bytes (inline files), with their git blob id.
pub async fn store_bytes(
    state: &AppState,
    namespace_id: i64,
    bytes: Bytes,
) -> ApiResult<(Written, Pending)> {
    let staged = state.storage.stage_bytes(bytes).await?;
    store(state, namespace_id, staged).await
}

/// [`store`] for many in-memory files at once (the inline files of a commit,
/// a batch at a time): digests computed, then one transaction records a
/// pending row per distinct digest (under the blobs' shared locks) while the
/// objects are staged ([`Storage::stage_blobs`]), and only then are they made
/// final ([`Storage::promote_blobs`]). Answers
/// one `(Written, Pending)` per item, in order; items with the same bytes
/// share a row. On failure every row of the batch is released.
pub async fn store_many(
    state: &AppState,
    namespace_id: i64,
    items: Vec<Bytes>,
) -> ApiResult<Vec<(Written, Pending)>> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    let written = Storage::digest_bytes(items.clone()).await?;
    let mut distinct: std::collections::BTreeMap<&str, (usize, i64)> = Default::default();
    for (i, w) in written.iter().enumerate() {
        distinct
            .entry(w.sha256.as_str())
            .or_insert((i, w.size as i64));
    }
    let shas: Vec<&str> = distinct.keys().copied().collect();
    let sizes: Vec<i64> = distinct.values().map(|v| v.1).collect();
    let objects: Vec<(Sha256, Bytes)> = distinct
        .values()
        .map(|(i, _)| (written[*i].sha256.clone(), items[*i].clone()))
        .collect();
    drop(items);
    // The rows and the staged bytes at once: nothing is at a final key until
    // both are done.
    let record = async {
        let mut tx = state.db.begin().await?;
        db::lfs::lock_blobs_shared(&mut tx, &shas).await?;
        let rows = db::lfs::insert_pending_many(&mut *tx, &shas, &sizes, namespace_id).await?;
        tx.commit().await?;
        Ok::<std::collections::HashMap<String, i64>, sqlx::Error>(rows.into_iter().collect())
    };
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let ((ids, recorded_ms), (staged, written_ms)) =
        tokio::join!(async { (record.await, ms()) }, async {
            (state.storage.stage_blobs(objects).await, ms())
        });
    let staged_ms = started.elapsed().as_millis() as u64;
    let (ids, staged) = match (ids, staged) {
        (Ok(ids), Ok(staged)) => (ids, staged),
        (Ok(ids), Err(e)) => {
            release(state, &pending_rows(&written, &ids)).await;
            return Err(e.into());
        }
        (Err(e), Ok(staged)) => {
            state.storage.discard_blobs(staged).await;
            return Err(e.into());
        }
        (Err(e), Err(_)) => return Err(e.into()),
    };
    let pending = pending_rows(&written, &ids);
    if let Err(e) = state.storage.promote_blobs(staged).await {
        release(state, &pending).await;
        return Err(e.into());
    }
    tracing::debug!(
        files = written.len(),
        objects = ids.len(),
        recorded_ms,
        written_ms,
        promoted_ms = started.elapsed().as_millis() as u64 - staged_ms,
        "stored inline files"
    );
    Ok(written.into_iter().zip(pending).collect())
}

/// The pending row of each written item (items with the same digest share one).
fn pending_rows(written: &[Written], ids: &std::collections::HashMap<String, i64>) -> Vec<Pending> {
    written
        .iter()
        .map(|w| Pending {
            id: ids[w.sha256.as_str()],
            sha256: w.sha256.clone(),
        })
        .collect()
}

/// Inside the transaction that references the object: takes the blob's shared
/// lock (held to the end of the transaction) and deletes the pending row. If
/// the row was collected meanwhile the bytes must still be there (they cannot
/// go while the lock is held); if they are not, the request fails with 503.
pub async fn claim(tx: &mut PgConnection, storage: &Storage, p: &Pending) -> ApiResult<()> {
    claim_all(tx, storage, std::slice::from_ref(p)).await
}

/// [`claim`] for many objects in three statements: every blob's shared lock
/// (in key order), then every pending row deleted at once; only the objects
/// whose row was collected meanwhile are checked in storage.
pub async fn claim_all(
    tx: &mut PgConnection,
    storage: &Storage,
    pending: &[Pending],
) -> ApiResult<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let shas: Vec<&str> = pending.iter().map(|p| p.sha256.as_str()).collect();
    db::lfs::lock_blobs_shared(&mut *tx, &shas).await?;
    let mut ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let deleted: std::collections::HashSet<i64> = db::lfs::delete_pending_many(&mut *tx, &ids)
        .await?
        .into_iter()
        .collect();
    let mut checked = std::collections::HashSet::new();
    for p in pending {
        if deleted.contains(&p.id) || !checked.insert(p.id) {
            continue;
        }
        if !storage.blob_exists(&p.sha256).await? {
            return Err(ApiError::Unavailable(format!(
                "the bytes of {} were collected before this request finished; send it again",
                p.sha256
            )));
        }
    }
    Ok(())
}

/// How many objects [`release`] gives back per transaction.
const RELEASE_CHUNK: usize = 1000;

/// Gives back the pending rows of a request that failed, deleting each object
/// nothing else needs. Best effort: what fails here the collector does later.
/// A transaction per [`RELEASE_CHUNK`] objects, as [`collect_one`] does for
/// one: the blobs' exclusive locks (in key order), the rows removed, the
/// objects nothing needs deleted (bytes first, concurrently) with their
/// `blobs` rows.
pub async fn release(state: &AppState, pending: &[Pending]) {
    let mut seen = std::collections::HashSet::new();
    let todo: Vec<&Pending> = pending.iter().filter(|p| seen.insert(p.id)).collect();
    for chunk in todo.chunks(RELEASE_CHUNK) {
        if let Err(e) = release_chunk(state, chunk).await {
            tracing::warn!(objects = chunk.len(), error = %e, "releasing pending objects failed; the collector will retry");
        }
    }
}

async fn release_chunk(state: &AppState, chunk: &[&Pending]) -> anyhow::Result<()> {
    let mut tx = state.db.begin().await?;
    let mut shas: Vec<String> = chunk.iter().map(|p| p.sha256.to_string()).collect();
    shas.sort();
    shas.dedup();
    db::lfs::lock_blobs(&mut tx, &shas).await?;
    let ids: Vec<i64> = chunk.iter().map(|p| p.id).collect();
    db::lfs::delete_pending_many(&mut *tx, &ids).await?;
    let needed: std::collections::HashSet<String> = db::lfs::needed_of(&mut *tx, &shas)
        .await?
        .into_iter()
        .collect();
    let mut seen = std::collections::HashSet::new();
    let gone: Vec<Sha256> = chunk
        .iter()
        .filter(|p| !needed.contains(p.sha256.as_str()) && seen.insert(p.sha256.as_str()))
        .map(|p| p.sha256.clone())
        .collect();
    // Bytes first: if the transaction then fails, the rows stay and the
    // collector finishes (deleting a missing object is not an error).
    let deleted = futures::stream::iter(&gone)
        .map(|s| state.storage.delete_blob(s))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    if let Some(e) = deleted.into_iter().find_map(Result::err) {
        return Err(e.into());
    }
    let gone: Vec<String> = gone.iter().map(|s| s.to_string()).collect();
    db::lfs::delete_blob_rows(&mut *tx, &gone).await?;
    tx.commit().await?;
    if !gone.is_empty() {
        tracing::info!(objects = gone.len(), "released unreferenced objects");
    }
    Ok(())
}

/// Which pending rows a collection removes before deciding.
enum Removal {
    /// Rows created before this time (their requests crashed or stalled).
    Before(chrono::DateTime<chrono::Utc>),
    /// None (objects no row knows about).
    Nothing,
}

/// Under the blob's exclusive lock: removes the given pending rows, then the
/// object (and its `blobs` row) if nothing needs it. Whether it was deleted.
async fn collect_one(state: &AppState, sha: &Sha256, removal: Removal) -> anyhow::Result<bool> {
    let mut tx = state.db.begin().await?;
    db::lfs::lock_blob(&mut tx, sha.as_str()).await?;
    match removal {
        Removal::Before(cutoff) => {
            db::lfs::delete_stale_pending(&mut *tx, sha.as_str(), cutoff).await?;
        }
        Removal::Nothing => {}
    }
    if db::lfs::blob_needed(&mut *tx, sha.as_str()).await? {
        tx.commit().await?;
        return Ok(false);
    }
    // Bytes first: if the transaction then fails, the rows stay and the next
    // pass finishes (deleting a missing object is not an error).
    state.storage.delete_blob(sha).await?;
    db::lfs::delete_blob_row(&mut *tx, sha.as_str()).await?;
    tx.commit().await?;
    tracing::info!(sha256 = %sha, "collected an unreferenced object");
    Ok(true)
}

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Staging objects and part files.
    pub leftovers: usize,
    /// Expired upload sessions.
    pub sessions: usize,
    /// Unreferenced objects at final keys (Xet-stored blobs' recipes too).
    pub blobs: usize,
    /// Registered Xet files no blob stores and no repo registered.
    pub xet_files: usize,
    /// Xet dedup sets no file needs, and ownerships no namespace file uses.
    pub xet_sets: usize,
    /// Xorbs no file uses (objects and rows).
    pub xorbs: usize,
}

/// One pass of the sweeper.
pub async fn sweep_once(state: &AppState, policy: &Policy) -> anyhow::Result<Swept> {
    let now = chrono::Utc::now();
    let mut out = Swept::default();

    for path in state
        .storage
        .list_stale("staging", now - policy.staging_grace)
        .await?
    {
        state.storage.delete_path(&path).await?;
        out.leftovers += 1;
    }
    // Parts stay while their session is open, however old (a multipart upload
    // may take as long as its session lives).
    for path in state
        .storage
        .list_stale("uploads", now - policy.staging_grace)
        .await?
    {
        let session = path
            .parts()
            .nth(1)
            .and_then(|p| uuid::Uuid::parse_str(p.as_ref()).ok());
        if let Some(id) = session {
            if db::lfs::session_open(&state.db, id).await? {
                continue;
            }
        }
        state.storage.delete_path(&path).await?;
        out.leftovers += 1;
    }

    for s in db::lfs::expired_sessions(&state.db).await? {
        match &s.store_upload {
            Some(upload) => {
                if s.completed_at.is_none() {
                    state.storage.abort_parts(s.id, upload).await;
                    state.storage.discard_parts_object(s.id).await;
                }
            }
            None => state.storage.delete_parts(s.id).await,
        }
        db::lfs::delete_session(&state.db, s.id).await?;
        out.sessions += 1;
    }

    // Shared rate-limit buckets idle for an hour are full again: forget them.
    sqlx::query("DELETE FROM rate_buckets WHERE at < now() - interval '1 hour'")
        .execute(&state.db)
        .await?;

    let cutoff = now - policy.pending_grace;
    loop {
        let stale = db::lfs::stale_pending(&state.db, cutoff, 500).await?;
        if stale.is_empty() {
            break;
        }
        for sha in &stale {
            let sha = Sha256::parse(sha).map_err(|e| anyhow::anyhow!("{e}"))?;
            if collect_one(state, &sha, Removal::Before(cutoff)).await? {
                out.blobs += 1;
            }
        }
        if stale.len() < 500 {
            break;
        }
    }

    if policy.scan {
        out.blobs += scan(state, now - policy.scan_grace).await?;
    }
    sweep_xet(state, policy, now, &mut out).await?;
    Ok(out)
}

/// Inside a xorb upload: makes the validated, stored-form xorb final and
/// indexes it for `namespace_id` (giving back its quota `reservation`, also
/// when it fails), under the Xet index lock (see the module doc). Whether it
/// was new to the index.
pub async fn store_xorb(
    state: &AppState,
    name: &str,
    index: &XorbIndex,
    namespace_id: i64,
    bytes: Bytes,
    reservation: Option<i64>,
) -> ApiResult<bool> {
    let stored = store_xorb_inner(state, name, index, namespace_id, bytes, reservation).await;
    if let (Err(_), Some(id)) = (&stored, reservation) {
        if let Err(e) = crate::quota::release_xorb(&state.db, id).await {
            tracing::warn!(error = %e, "giving back a xorb reservation failed; the sweeper will");
        }
    }
    stored
}

async fn store_xorb_inner(
    state: &AppState,
    name: &str,
    index: &XorbIndex,
    namespace_id: i64,
    bytes: Bytes,
    reservation: Option<i64>,
) -> ApiResult<bool> {
    // Object first, then the row: a row always names a stored object.
    state.storage.put_xorb(name, bytes.clone()).await?;
    let mut tx = state.db.begin().await?;
    db::xet_gc::lock_index_shared(&mut tx).await?;
    let inserted = db::xet::insert_xorb(&mut tx, index, namespace_id).await?;
    db::xet_gc::touch_owner(&mut *tx, &index.hash, namespace_id).await?;
    if let Some(id) = reservation {
        crate::quota::release_xorb(&mut *tx, id).await?;
    }
    tx.commit().await?;
    // A collection of an older copy between our write and our row deleted
    // the object; the row is fresh now (kept for the grace period): write again.
    if state.storage.xorb_size(name).await?.is_none() {
        state.storage.put_xorb(name, bytes).await?;
    }
    Ok(inserted)
}

/// Inside a shard registration's transaction, before it writes: takes the
/// Xet index lock shared and re-checks that every xorb the shard names is
/// still stored and uploaded by the namespace (the first check ran before
/// the transaction, and the collector may have deleted one since); then, for
/// each file that becomes a blob, takes the blob's shared lock and checks its
/// bytes (object or recipe) are still there: the recipe was written before
/// the transaction, write-if-absent, so an older unreferenced copy the
/// collector deleted since would leave a blob row without bytes. That answers
/// 503 (send it again), as [`claim`] does.
pub async fn guard_shard(
    tx: &mut PgConnection,
    storage: &Storage,
    namespace_id: i64,
    xorbs: &[XetHash],
    files: &[hub_xet::shard::FileSummary],
) -> ApiResult<()> {
    db::xet_gc::lock_index_shared(&mut *tx).await?;
    let gone = db::xet_gc::unowned_of(&mut *tx, namespace_id, xorbs).await?;
    if let Some(x) = gone.first() {
        return Err(hub_xet::shard::ShardError::UnknownXorb {
            xorb: hash::hash_string(x),
        }
        .into());
    }
    let shas: Vec<&str> = files.iter().filter_map(|f| f.sha256.as_deref()).collect();
    // All at once, in key order (as every transaction locking several blobs).
    db::lfs::lock_blobs_shared(&mut *tx, &shas).await?;
    for sha in shas {
        let sha = Sha256::parse(sha)?;
        if !storage.blob_exists(&sha).await? {
            return Err(ApiError::Unavailable(format!(
                "the bytes of {sha} were collected before this shard was registered; send it again"
            )));
        }
    }
    Ok(())
}

/// Steps 1-4 of the module doc's Xet collection.
async fn sweep_xet(
    state: &AppState,
    policy: &Policy,
    now: chrono::DateTime<chrono::Utc>,
    out: &mut Swept,
) -> anyhow::Result<()> {
    let grace = now - policy.xet_grace;
    let served = now - policy.dedup_hold;
    db::xet_gc::delete_stale_reservations(&state.db, now - policy.pending_grace).await?;
    loop {
        let shas = db::xet_gc::unneeded_xet_blobs(&state.db, 500).await?;
        let mut removed = 0;
        for sha in &shas {
            let sha = Sha256::parse(sha).map_err(|e| anyhow::anyhow!("{e}"))?;
            if collect_one(state, &sha, Removal::Nothing).await? {
                removed += 1;
            }
        }
        out.blobs += removed;
        // A page where nothing could go (all raced back into use) ends the pass.
        if shas.len() < 500 || removed == 0 {
            break;
        }
    }
    {
        let mut tx = state.db.begin().await?;
        db::xet_gc::lock_index(&mut tx).await?;
        out.xet_files += db::xet_gc::delete_orphan_files(&mut *tx).await? as usize;
        out.xet_sets +=
            db::xet_gc::delete_stale_dedup_sets(&mut *tx, grace, served).await? as usize;
        out.xet_sets +=
            db::xet_gc::release_idle_ownerships(&mut *tx, grace, served).await? as usize;
        tx.commit().await?;
    }
    loop {
        let page = db::xet_gc::collectable_xorbs(&state.db, grace, served, 500).await?;
        let mut removed = 0;
        for x in &page {
            let mut tx = state.db.begin().await?;
            db::xet_gc::lock_index(&mut tx).await?;
            if !db::xet_gc::xorb_collectable(&mut *tx, x, grace, served).await? {
                tx.commit().await?;
                continue;
            }
            let name = hash::hash_string(x);
            // Bytes first: if the transaction then fails, the row stays and
            // the next pass finishes (a missing object is not an error).
            state
                .storage
                .delete_path(&StorageKey::Xorb(name.clone()).path())
                .await?;
            db::xet_gc::delete_xorb_if_collectable(&mut *tx, x, grace, served).await?;
            tx.commit().await?;
            tracing::info!(xorb = %name, "collected an unreferenced xorb");
            removed += 1;
        }
        out.xorbs += removed;
        if page.len() < 500 || removed == 0 {
            break;
        }
    }
    if policy.scan {
        out.xorbs += scan_xorbs(state, now - policy.scan_grace).await?;
        out.blobs += scan_recipes(state, now - policy.scan_grace).await?;
    }
    Ok(())
}

/// Xorb objects older than `cutoff` that no row indexes (an upload that
/// crashed between its write and its row).
async fn scan_xorbs(
    state: &AppState,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<usize> {
    let mut removed = 0;
    for path in state.storage.list_stale("xorbs/default", cutoff).await? {
        let Some(x) = path.filename().and_then(|n| hash::parse_hash(n).ok()) else {
            continue;
        };
        if StorageKey::Xorb(hash::hash_string(&x)).path() != path {
            continue;
        }
        let mut tx = state.db.begin().await?;
        db::xet_gc::lock_index(&mut tx).await?;
        if !db::xet_gc::xorb_indexed(&mut *tx, &x).await? {
            state.storage.delete_path(&path).await?;
            removed += 1;
        }
        tx.commit().await?;
    }
    Ok(removed)
}

/// Recipe objects older than `cutoff` of blobs nothing needs (a shard
/// registration that crashed between writing the recipe and its rows).
async fn scan_recipes(
    state: &AppState,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<usize> {
    let mut removed = 0;
    for path in state.storage.list_stale("xet/recipes", cutoff).await? {
        let Some(sha) = path.filename().and_then(|n| Sha256::parse(n).ok()) else {
            continue;
        };
        if collect_one(state, &sha, Removal::Nothing).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Lists every final object and collects those older than `cutoff` that
/// nothing needs (objects written before pending rows existed, LFS objects of
/// deleted repos).
async fn scan(state: &AppState, cutoff: chrono::DateTime<chrono::Utc>) -> anyhow::Result<usize> {
    let mut pages = state.storage.list_blobs().chunks(500);
    let mut removed = 0;
    while let Some(page) = pages.next().await {
        let mut old = Vec::new();
        for item in page {
            let (sha, modified) = item?;
            if modified < cutoff {
                old.push(sha.to_string());
            }
        }
        if old.is_empty() {
            continue;
        }
        let needed: std::collections::HashSet<String> = db::lfs::needed_of(&state.db, &old)
            .await?
            .into_iter()
            .collect();
        for sha in old.iter().filter(|s| !needed.contains(*s)) {
            let sha = Sha256::parse(sha).map_err(|e| anyhow::anyhow!("{e}"))?;
            if collect_one(state, &sha, Removal::Nothing).await? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Runs the sweeper every [`INTERVAL`]; the full scan every [`SCAN_EVERY`]
/// passes, starting with the first.
pub fn spawn(state: AppState) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        let mut pass: u64 = 0;
        loop {
            tick.tick().await;
            let policy = Policy::production(pass.is_multiple_of(SCAN_EVERY));
            pass += 1;
            match sweep_once(&state, &policy).await {
                Ok(s) if s != Swept::default() => tracing::info!(
                    leftovers = s.leftovers,
                    sessions = s.sessions,
                    blobs = s.blobs,
                    xet_files = s.xet_files,
                    xet_sets = s.xet_sets,
                    xorbs = s.xorbs,
                    "sweeper removed leftovers"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeper failed"),
            }
        }
    });
}
