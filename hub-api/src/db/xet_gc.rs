//! The Xet index's side of garbage collection (issue 12, `crate::sweeper`):
//! the index lock, what makes a xorb, file or dedup set collectable, and the
//! rows that keep them (re-uploads, dedup hand-outs). Hashes are the 32 raw
//! bytes, as in `db::xet`.

use hub_xet::hash::{self, XetHash};
use sqlx::{PgConnection, PgExecutor};

/// Advisory lock of the Xet index (class, key): shared by every transaction
/// that makes a xorb referable (xorb upload, shard registration, dedup
/// answer), exclusive around each deletion of a xorb, a file row or a dedup
/// set, so a reference is either seen by the collector's re-check or made
/// after the deletion (and then finds the xorb gone).
const INDEX_LOCK: (i32, i32) = (0x78_65_74_67, 0); // "xetg"

fn raw(h: &XetHash) -> Vec<u8> {
    hash::hash_raw(h).to_vec()
}

/// Takes the index lock shared until the transaction ends.
pub async fn lock_index_shared(tx: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(INDEX_LOCK.0)
        .bind(INDEX_LOCK.1)
        .execute(tx)
        .await?;
    Ok(())
}

/// Takes the index lock exclusively until the transaction ends (the collector).
pub async fn lock_index(tx: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(INDEX_LOCK.0)
        .bind(INDEX_LOCK.1)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records that `namespace_id` uploaded the xorb's bytes now (after
/// `db::xet::insert_xorb`): restarts the grace period of the xorb and of the
/// namespace's ownership.
pub async fn touch_owner(
    db: impl PgExecutor<'_>,
    xorb: &XetHash,
    namespace_id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE xet_xorb_owners SET uploaded_at = now() WHERE xorb_hash = $1 AND namespace_id = $2",
    )
    .bind(raw(xorb))
    .bind(namespace_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Of `hashes`, those not stored or not uploaded by `namespace_id` (the
/// re-check of a shard's xorbs under the index lock).
pub async fn unowned_of(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    hashes: &[XetHash],
) -> sqlx::Result<Vec<XetHash>> {
    let keys: Vec<Vec<u8>> = hashes.iter().map(raw).collect();
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT h FROM unnest($1::bytea[]) AS h
         WHERE NOT EXISTS (SELECT 1 FROM xet_xorb_owners o
                           WHERE o.xorb_hash = h AND o.namespace_id = $2)",
    )
    .bind(&keys)
    .bind(namespace_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(h,)| <[u8; 32]>::try_from(h.as_slice()).ok())
        .map(hash::hash_from_raw)
        .collect())
}

/// Records that the dedup set a query for `chunk` answers with (the newest of
/// the namespace holding it, as `db::xet::dedup_set` picks) was handed out now.
pub async fn mark_served(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    chunk: &XetHash,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE xet_uploads SET last_served_at = now() WHERE id = (
           SELECT d.upload_id FROM xet_dedup_chunks d
           WHERE d.namespace_id = $1 AND d.chunk_hash = $2
           ORDER BY d.upload_id DESC LIMIT 1)",
    )
    .bind(namespace_id)
    .bind(raw(chunk))
    .execute(db)
    .await?;
    Ok(())
}

/// Xet-stored blobs (`blobs.xet_file`) nothing references (the rules of
/// `db::lfs::blob_needed`), at most `limit`.
pub async fn unneeded_xet_blobs(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT b.sha256 FROM blobs b
         WHERE b.xet_file IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM git_blobs g WHERE g.sha256 = b.sha256)
           AND NOT EXISTS (SELECT 1 FROM repo_lfs_objects l WHERE l.sha256 = b.sha256)
           AND NOT EXISTS (SELECT 1 FROM repo_blobs s WHERE s.sha256 = b.sha256)
           AND NOT EXISTS (SELECT 1 FROM pending_objects p WHERE p.sha256 = b.sha256)
           AND NOT EXISTS (SELECT 1 FROM upload_sessions u WHERE u.sha256 = b.sha256
                           AND u.completed_at IS NULL AND u.expires_at > now())
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Deletes registered files that no blob stores and no repo registered (their
/// `xet_file_xorbs` rows cascade). Call under [`lock_index`].
pub async fn delete_orphan_files(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "DELETE FROM xet_files f
         WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.xet_file = f.file_hash)
           AND NOT EXISTS (SELECT 1 FROM xet_repo_files r WHERE r.file_hash = f.file_hash)",
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Deletes dedup sets that no file needs any more: none of their xorbs is used
/// by a registered file, they are older than `grace`, and no dedup answer
/// handed them out since `served`. Call under [`lock_index`].
pub async fn delete_stale_dedup_sets(
    db: impl PgExecutor<'_>,
    grace: chrono::DateTime<chrono::Utc>,
    served: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "DELETE FROM xet_uploads u
         WHERE u.created_at < $1
           AND (u.last_served_at IS NULL OR u.last_served_at < $2)
           AND NOT EXISTS (SELECT 1 FROM xet_file_xorbs f WHERE f.xorb_hash = ANY(u.xorbs))",
    )
    .bind(grace)
    .bind(served)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Releases ownerships the namespace no longer uses: uploaded before `grace`,
/// used by no file its repos registered or link, and in no dedup set of its
/// handed out since `served`. The namespace stops paying for the xorb and may
/// no longer reference it in a shard (another namespace's file keeps it
/// stored). Call under [`lock_index`].
pub async fn release_idle_ownerships(
    db: impl PgExecutor<'_>,
    grace: chrono::DateTime<chrono::Utc>,
    served: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "DELETE FROM xet_xorb_owners o
         WHERE o.uploaded_at < $1
           AND NOT EXISTS (SELECT 1 FROM xet_repo_files rf
                           JOIN repos r ON r.id = rf.repo_id
                           JOIN xet_file_xorbs f ON f.file_hash = rf.file_hash
                           WHERE r.namespace_id = o.namespace_id AND f.xorb_hash = o.xorb_hash)
           AND NOT EXISTS (SELECT 1 FROM repo_lfs_objects l
                           JOIN repos r ON r.id = l.repo_id
                           JOIN blobs b ON b.sha256 = l.sha256
                           JOIN xet_file_xorbs f ON f.file_hash = b.xet_file
                           WHERE r.namespace_id = o.namespace_id AND f.xorb_hash = o.xorb_hash)
           AND NOT EXISTS (SELECT 1 FROM xet_uploads u
                           WHERE u.namespace_id = o.namespace_id
                             AND u.xorbs @> ARRAY[o.xorb_hash] AND u.last_served_at >= $2)",
    )
    .bind(grace)
    .bind(served)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// The collectable condition on `xet_xorbs x` ($1: grace cutoff, $2: served
/// cutoff): no registered file uses it, it and every upload of it are older
/// than the grace period, no dedup answer handed it out within the key
/// expiry, and no upload of it holds quota room.
const XORB_COLLECTABLE: &str = "x.created_at < $1
    AND NOT EXISTS (SELECT 1 FROM xet_file_xorbs f WHERE f.xorb_hash = x.hash)
    AND NOT EXISTS (SELECT 1 FROM xet_xorb_owners o
                    WHERE o.xorb_hash = x.hash AND o.uploaded_at >= $1)
    AND NOT EXISTS (SELECT 1 FROM xet_uploads u
                    WHERE u.xorbs @> ARRAY[x.hash] AND u.last_served_at >= $2)
    AND NOT EXISTS (SELECT 1 FROM xet_xorb_reservations r WHERE r.xorb_hash = x.hash)";

/// Up to `limit` collectable xorbs (see [`XORB_COLLECTABLE`]).
pub async fn collectable_xorbs(
    db: impl PgExecutor<'_>,
    grace: chrono::DateTime<chrono::Utc>,
    served: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> sqlx::Result<Vec<XetHash>> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(&format!(
        "SELECT x.hash FROM xet_xorbs x WHERE {XORB_COLLECTABLE} LIMIT $3"
    ))
    .bind(grace)
    .bind(served)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(h,)| <[u8; 32]>::try_from(h.as_slice()).ok())
        .map(hash::hash_from_raw)
        .collect())
}

/// Deletes the xorb's row (its ownerships cascade) if it is still
/// collectable; whether it was. Call under [`lock_index`], after deleting the
/// object (so a row always names a stored object).
pub async fn delete_xorb_if_collectable(
    db: impl PgExecutor<'_>,
    xorb: &XetHash,
    grace: chrono::DateTime<chrono::Utc>,
    served: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(&format!(
        "DELETE FROM xet_xorbs x WHERE x.hash = $3 AND {XORB_COLLECTABLE}"
    ))
    .bind(grace)
    .bind(served)
    .bind(raw(xorb))
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether the xorb is collectable (the re-check under [`lock_index`]).
pub async fn xorb_collectable(
    db: impl PgExecutor<'_>,
    xorb: &XetHash,
    grace: chrono::DateTime<chrono::Utc>,
    served: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<bool> {
    let (yes,): (bool,) = sqlx::query_as(&format!(
        "SELECT EXISTS (SELECT 1 FROM xet_xorbs x WHERE x.hash = $3 AND {XORB_COLLECTABLE})"
    ))
    .bind(grace)
    .bind(served)
    .bind(raw(xorb))
    .fetch_one(db)
    .await?;
    Ok(yes)
}

/// Whether a xorb has an index row (the scan for objects no row knows).
pub async fn xorb_indexed(db: impl PgExecutor<'_>, xorb: &XetHash) -> sqlx::Result<bool> {
    let (yes,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM xet_xorbs WHERE hash = $1)")
        .bind(raw(xorb))
        .fetch_one(db)
        .await?;
    Ok(yes)
}

/// Removes quota reservations of requests that crashed (older than `cutoff`).
pub async fn delete_stale_reservations(
    db: impl PgExecutor<'_>,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM xet_xorb_reservations WHERE created_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}
