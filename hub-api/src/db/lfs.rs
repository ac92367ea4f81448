//! Verified blobs, which repo has proven it holds which LFS object, LFS
//! upload sessions with their parts, and objects stored but not yet
//! referenced (`pending_objects`) with the per-blob locks that keep the
//! collector and the writers apart.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// Advisory lock class of per-blob locks (two-key form; the key is the first
/// 32 bits of the sha256, so unrelated blobs rarely share a lock).
const BLOB_LOCK_CLASS: i32 = 0x626c_6f62; // "blob"

fn blob_lock_key(sha256: &str) -> i32 {
    u32::from_str_radix(sha256.get(..8).unwrap_or("0"), 16).unwrap_or(0) as i32
}

/// Takes the blob's lock in shared mode until the transaction ends: writers
/// (recording a pending object, referencing one) hold it so the collector
/// cannot decide about the blob meanwhile.
pub async fn lock_blob_shared(tx: &mut PgConnection, sha256: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(BLOB_LOCK_CLASS)
        .bind(blob_lock_key(sha256))
        .execute(tx)
        .await?;
    Ok(())
}

/// [`lock_blob_shared`] for many blobs in one statement, in key order (each
/// lock once).
pub async fn lock_blobs_shared<S: AsRef<str>>(
    tx: &mut PgConnection,
    shas: &[S],
) -> sqlx::Result<()> {
    lock_many(tx, shas, "pg_advisory_xact_lock_shared").await
}

/// [`lock_blob`] for many blobs, in key order (as [`lock_blobs_shared`], so
/// two transactions locking several blobs cannot deadlock).
pub async fn lock_blobs<S: AsRef<str>>(tx: &mut PgConnection, shas: &[S]) -> sqlx::Result<()> {
    lock_many(tx, shas, "pg_advisory_xact_lock").await
}

/// Takes `lock_fn` (shared or exclusive advisory transaction lock) of each
/// blob once, in key order: the sorted subquery is read in order.
async fn lock_many<S: AsRef<str>>(
    tx: &mut PgConnection,
    shas: &[S],
    lock_fn: &'static str,
) -> sqlx::Result<()> {
    let mut keys: Vec<i32> = shas.iter().map(|s| blob_lock_key(s.as_ref())).collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "SELECT {lock_fn}($1, k) FROM (SELECT k FROM unnest($2::int4[]) AS k ORDER BY k) AS keys"
    ))
    .bind(BLOB_LOCK_CLASS)
    .bind(&keys)
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes the blob's lock exclusively until the transaction ends (the collector).
pub async fn lock_blob(tx: &mut PgConnection, sha256: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(BLOB_LOCK_CLASS)
        .bind(blob_lock_key(sha256))
        .execute(tx)
        .await?;
    Ok(())
}

/// Records bytes about to reach their final key for a namespace; returns the row id.
pub async fn insert_pending(
    db: impl PgExecutor<'_>,
    sha256: &str,
    size: i64,
    namespace_id: i64,
) -> sqlx::Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO pending_objects (sha256, size, namespace_id) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(sha256)
    .bind(size)
    .bind(namespace_id)
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// [`insert_pending`] for many objects (distinct digests) in one statement;
/// answers `(digest, row id)`.
pub async fn insert_pending_many(
    db: impl PgExecutor<'_>,
    shas: &[&str],
    sizes: &[i64],
    namespace_id: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "INSERT INTO pending_objects (sha256, size, namespace_id)
         SELECT s, z, $3 FROM UNNEST($1::text[], $2::int8[]) AS x(s, z)
         RETURNING sha256, id",
    )
    .bind(shas)
    .bind(sizes)
    .bind(namespace_id)
    .fetch_all(db)
    .await
}

/// Deletes pending rows; answers the ids that were there.
pub async fn delete_pending_many(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("DELETE FROM pending_objects WHERE id = ANY($1) RETURNING id")
            .bind(ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Deletes a blob's pending rows created before `cutoff`; how many.
pub async fn delete_stale_pending(
    db: impl PgExecutor<'_>,
    sha256: &str,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM pending_objects WHERE sha256 = $1 AND created_at < $2")
        .bind(sha256)
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}

/// Digests with pending rows created before `cutoff` (oldest first).
pub async fn stale_pending(
    db: impl PgExecutor<'_>,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT sha256 FROM pending_objects WHERE created_at < $1
         GROUP BY sha256 ORDER BY min(created_at) LIMIT $2",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// SQL: whether a repo link (LFS or inline), a pending row or an open upload
/// session holds the blob `$1`: every holder of its bytes but commits (shared
/// by [`blob_needed`] and `db::lfs_files::held_elsewhere`).
macro_rules! blob_holders_but_commits {
    () => {
        "(EXISTS (SELECT 1 FROM repo_lfs_objects WHERE sha256 = $1)
             OR EXISTS (SELECT 1 FROM repo_blobs WHERE sha256 = $1)
             OR EXISTS (SELECT 1 FROM pending_objects WHERE sha256 = $1)
             OR EXISTS (SELECT 1 FROM upload_sessions
                        WHERE sha256 = $1 AND completed_at IS NULL AND expires_at > now()))"
    };
}
pub(crate) use blob_holders_but_commits;

/// Whether anything still needs a blob's bytes: a git blob (any commit), an
/// LFS link, an inline-file link, a pending row, or an open upload session
/// for the same content.
pub async fn blob_needed(db: impl PgExecutor<'_>, sha256: &str) -> sqlx::Result<bool> {
    let (needed,): (bool,) = sqlx::query_as(concat!(
        "SELECT EXISTS (SELECT 1 FROM git_blobs WHERE sha256 = $1) OR ",
        blob_holders_but_commits!()
    ))
    .bind(sha256)
    .fetch_one(db)
    .await?;
    Ok(needed)
}

/// Of `shas`, those something still needs (see [`blob_needed`]); one query
/// for a page of the collector's scan.
pub async fn needed_of(db: impl PgExecutor<'_>, shas: &[String]) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT s FROM unnest($1::text[]) AS s
         WHERE EXISTS (SELECT 1 FROM git_blobs WHERE sha256 = s)
            OR EXISTS (SELECT 1 FROM repo_lfs_objects WHERE sha256 = s)
            OR EXISTS (SELECT 1 FROM repo_blobs WHERE sha256 = s)
            OR EXISTS (SELECT 1 FROM pending_objects WHERE sha256 = s)
            OR EXISTS (SELECT 1 FROM upload_sessions
                       WHERE sha256 = s AND completed_at IS NULL AND expires_at > now())",
    )
    .bind(shas)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Forgets a blob nothing needs (its bytes are being deleted).
pub async fn delete_blob_row(db: impl PgExecutor<'_>, sha256: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM blobs WHERE sha256 = $1")
        .bind(sha256)
        .execute(db)
        .await?;
    Ok(())
}

/// [`delete_blob_row`] for many blobs.
pub async fn delete_blob_rows(db: impl PgExecutor<'_>, shas: &[String]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM blobs WHERE sha256 = ANY($1)")
        .bind(shas)
        .execute(db)
        .await?;
    Ok(())
}

/// The namespace a repo belongs to.
pub async fn repo_namespace(db: impl PgExecutor<'_>, repo_id: i64) -> sqlx::Result<Option<i64>> {
    let r: Option<(i64,)> = sqlx::query_as("SELECT namespace_id FROM repos WHERE id = $1")
        .bind(repo_id)
        .fetch_optional(db)
        .await?;
    Ok(r.map(|r| r.0))
}

/// Records verified content (idempotent).
pub async fn insert_blob(db: impl PgExecutor<'_>, sha256: &str, size: i64) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO blobs (sha256, size) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(sha256)
        .bind(size)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn blob_size(db: impl PgExecutor<'_>, sha256: &str) -> sqlx::Result<Option<i64>> {
    let r: Option<(i64,)> = sqlx::query_as("SELECT size FROM blobs WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(db)
        .await?;
    Ok(r.map(|r| r.0))
}

/// Links an LFS object to a repo (the repo has proven it holds the bytes).
pub async fn link(db: impl PgExecutor<'_>, repo_id: i64, sha256: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO repo_lfs_objects (repo_id, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(repo_id)
    .bind(sha256)
    .execute(db)
    .await?;
    Ok(())
}

/// Records that a repo's commits stored a blob inline (counted by quotas).
pub async fn link_inline(db: impl PgExecutor<'_>, repo_id: i64, sha256: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO repo_blobs (repo_id, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(repo_id)
        .bind(sha256)
        .execute(db)
        .await?;
    Ok(())
}

/// A commit's stored contents in one statement per table: `blobs` rows for
/// all, and links to the repo as LFS objects or inline blobs. Rows go in
/// sorted by sha256, so concurrent commits take the same keys in one order.
pub async fn record_stored(
    db: &mut sqlx::PgConnection,
    repo_id: i64,
    stored: &[(String, i64, bool)],
) -> sqlx::Result<()> {
    let mut rows: Vec<&(String, i64, bool)> = stored.iter().collect();
    rows.sort();
    rows.dedup();
    for chunk in rows.chunks(5000) {
        let shas: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
        let sizes: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let lfs: Vec<bool> = chunk.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO blobs (sha256, size) SELECT * FROM UNNEST($1::text[], $2::int8[]) ON CONFLICT DO NOTHING",
        )
        .bind(&shas)
        .bind(&sizes)
        .execute(&mut *db)
        .await?;
        sqlx::query(
            "INSERT INTO repo_lfs_objects (repo_id, sha256)
             SELECT $1, s FROM UNNEST($2::text[], $3::bool[]) AS x(s, l) WHERE l ON CONFLICT DO NOTHING",
        )
        .bind(repo_id)
        .bind(&shas)
        .bind(&lfs)
        .execute(&mut *db)
        .await?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, sha256)
             SELECT $1, s FROM UNNEST($2::text[], $3::bool[]) AS x(s, l) WHERE NOT l ON CONFLICT DO NOTHING",
        )
        .bind(repo_id)
        .bind(&shas)
        .bind(&lfs)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// The objects of `shas` linked to the repo, with their sizes.
pub async fn linked(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    shas: &[String],
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT l.sha256, b.size FROM repo_lfs_objects l JOIN blobs b ON b.sha256 = l.sha256
         WHERE l.repo_id = $1 AND l.sha256 = ANY($2)",
    )
    .bind(repo_id)
    .bind(shas)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadSession {
    pub id: Uuid,
    pub repo_id: i64,
    pub sha256: String,
    pub size: i64,
    pub chunk_size: Option<i64>,
    pub part_count: Option<i32>,
    pub created_by: Option<i64>,
    pub expires_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The object store's own multipart upload the parts go into (S3).
    pub store_upload: Option<String>,
}

const SESSION_COLS: &str =
    "id, repo_id, sha256, size, chunk_size, part_count, created_by, expires_at, completed_at, store_upload";

pub async fn create_session(db: impl PgExecutor<'_>, s: &UploadSession) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO upload_sessions (id, repo_id, sha256, size, chunk_size, part_count, created_by, expires_at, store_upload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(s.id)
    .bind(s.repo_id)
    .bind(&s.sha256)
    .bind(s.size)
    .bind(s.chunk_size)
    .bind(s.part_count)
    .bind(s.created_by)
    .bind(s.expires_at)
    .bind(&s.store_upload)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn session(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<UploadSession>> {
    sqlx::query_as(&format!(
        "SELECT {SESSION_COLS} FROM upload_sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn complete_session(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE upload_sessions SET completed_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Records an uploaded part, only while the session is still open; whether
/// it was recorded (false: the session completed meanwhile).
pub async fn record_part(
    db: impl PgExecutor<'_>,
    session: Uuid,
    part: i32,
    size: i64,
    etag: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO upload_parts (session_id, part_number, size, etag)
         SELECT $1, $2, $3, $4 FROM upload_sessions WHERE id = $1 AND completed_at IS NULL
         ON CONFLICT (session_id, part_number) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag",
    )
    .bind(session)
    .bind(part)
    .bind(size)
    .bind(etag)
    .execute(db)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Forgets a part whose bytes are gone (so the client uploads it again).
pub async fn delete_part(db: impl PgExecutor<'_>, session: Uuid, part: i32) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM upload_parts WHERE session_id = $1 AND part_number = $2")
        .bind(session)
        .bind(part)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether a session exists and is still open (not completed, not expired).
pub async fn session_open(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let (open,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM upload_sessions
                        WHERE id = $1 AND completed_at IS NULL AND expires_at > now())",
    )
    .bind(id)
    .fetch_one(db)
    .await?;
    Ok(open)
}

pub async fn parts(
    db: impl PgExecutor<'_>,
    session: Uuid,
) -> sqlx::Result<Vec<(i32, i64, String)>> {
    sqlx::query_as("SELECT part_number, size, etag FROM upload_parts WHERE session_id = $1 ORDER BY part_number")
        .bind(session)
        .fetch_all(db)
        .await
}

/// One attempt at a part of a native multipart upload (see
/// [`start_part_attempt`]).
#[derive(Debug, Clone)]
pub struct PartAttempt {
    /// Which attempt at this part this is (1, 2, ...).
    pub number: i32,
    /// No other attempt at this part was in flight when this one started.
    pub alone: bool,
    /// The SHA-256 state the part's predecessor left (part 1: the initial
    /// state), when it is known.
    pub resume: Option<Vec<u8>>,
}

/// Starts an attempt at a part of an open session: counts it, marks the
/// recorded part (if any) as no longer certainly what the store holds, and
/// reads the predecessor's SHA-256 state. None when the session completed.
pub async fn start_part_attempt(
    db: &PgPool,
    session: Uuid,
    part: i32,
) -> sqlx::Result<Option<PartAttempt>> {
    let mut tx = db.begin().await?;
    let open: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM upload_sessions WHERE id = $1 AND completed_at IS NULL FOR SHARE",
    )
    .bind(session)
    .fetch_optional(&mut *tx)
    .await?;
    if open.is_none() {
        return Ok(None);
    }
    let (started, in_flight): (i32, i32) = sqlx::query_as(
        "INSERT INTO upload_part_attempts (session_id, part_number, started, in_flight)
         VALUES ($1, $2, 1, 1)
         ON CONFLICT (session_id, part_number) DO UPDATE
           SET started = upload_part_attempts.started + 1,
               in_flight = upload_part_attempts.in_flight + 1
         RETURNING started, in_flight",
    )
    .bind(session)
    .bind(part)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE upload_parts SET clean = false WHERE session_id = $1 AND part_number = $2")
        .bind(session)
        .bind(part)
        .execute(&mut *tx)
        .await?;
    let resume = if part == 1 {
        Some(crate::sha256_state::encode(&crate::sha256_state::INITIAL))
    } else {
        sqlx::query_scalar::<_, Option<Vec<u8>>>(
            "SELECT sha_after FROM upload_parts WHERE session_id = $1 AND part_number = $2",
        )
        .bind(session)
        .bind(part - 1)
        .fetch_optional(&mut *tx)
        .await?
        .flatten()
    };
    tx.commit().await?;
    Ok(Some(PartAttempt {
        number: started,
        alone: in_flight == 1,
        resume,
    }))
}

/// Ends an attempt at a part (one that sent nothing to the store, or whose
/// part is being recorded); how many attempts at the part have started.
pub async fn end_part_attempt(
    db: impl PgExecutor<'_>,
    session: Uuid,
    part: i32,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar(
        "UPDATE upload_part_attempts SET in_flight = in_flight - 1
         WHERE session_id = $1 AND part_number = $2 AND in_flight > 0
         RETURNING started",
    )
    .bind(session)
    .bind(part)
    .fetch_optional(db)
    .await
}

/// A part of a native multipart upload as the store received it.
#[derive(Debug, Clone)]
pub struct NativePartRecord<'a> {
    pub size: i64,
    pub etag: &'a str,
    pub store_etag: &'a str,
    pub sha_before: Option<Vec<u8>>,
    pub sha_after: Option<Vec<u8>>,
}

/// Ends an attempt whose part the store accepted and records the part, only
/// while the session is open (false: it completed meanwhile). The part is
/// `clean` when this attempt ran alone: none in flight when it started and
/// none started since.
pub async fn record_native_part(
    db: &PgPool,
    session: Uuid,
    part: i32,
    attempt: &PartAttempt,
    rec: &NativePartRecord<'_>,
) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let started = end_part_attempt(&mut *tx, session, part).await?;
    let clean = attempt.alone && started == Some(attempt.number);
    let r = sqlx::query(
        "INSERT INTO upload_parts (session_id, part_number, size, etag, store_etag, sha_before, sha_after, clean)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM upload_sessions WHERE id = $1 AND completed_at IS NULL
         ON CONFLICT (session_id, part_number) DO UPDATE
           SET size = EXCLUDED.size, etag = EXCLUDED.etag, store_etag = EXCLUDED.store_etag,
               sha_before = EXCLUDED.sha_before, sha_after = EXCLUDED.sha_after, clean = EXCLUDED.clean",
    )
    .bind(session)
    .bind(part)
    .bind(rec.size)
    .bind(rec.etag)
    .bind(rec.store_etag)
    .bind(&rec.sha_before)
    .bind(&rec.sha_after)
    .bind(clean)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected() > 0)
}

/// A recorded part of a native multipart upload.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NativePartRow {
    pub part_number: i32,
    pub store_etag: Option<String>,
    pub sha_before: Option<Vec<u8>>,
    pub sha_after: Option<Vec<u8>>,
    pub clean: bool,
}

pub async fn native_parts(
    db: impl PgExecutor<'_>,
    session: Uuid,
) -> sqlx::Result<Vec<NativePartRow>> {
    sqlx::query_as(
        "SELECT part_number, store_etag, sha_before, sha_after, clean FROM upload_parts
         WHERE session_id = $1 ORDER BY part_number",
    )
    .bind(session)
    .fetch_all(db)
    .await
}

/// (attempts started, attempts in flight) over all of a session's parts.
pub async fn part_attempts(db: impl PgExecutor<'_>, session: Uuid) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT COALESCE(sum(started), 0)::int8, COALESCE(sum(in_flight), 0)::int8
         FROM upload_part_attempts WHERE session_id = $1",
    )
    .bind(session)
    .fetch_one(db)
    .await
}

/// Starts a session's parts over in a new store upload (its joined object
/// did not verify, and the store's upload is spent).
pub async fn reset_native_session(
    db: &PgPool,
    session: Uuid,
    store_upload: &str,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM upload_parts WHERE session_id = $1")
        .bind(session)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM upload_part_attempts WHERE session_id = $1")
        .bind(session)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE upload_sessions SET store_upload = $2 WHERE id = $1")
        .bind(session)
        .bind(store_upload)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Sessions past their expiry that never completed (for the sweeper).
pub async fn expired_sessions(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<UploadSession>> {
    sqlx::query_as(&format!(
        "SELECT {SESSION_COLS} FROM upload_sessions WHERE expires_at < now() LIMIT 500"
    ))
    .fetch_all(db)
    .await
}

pub async fn delete_session(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM upload_sessions WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
