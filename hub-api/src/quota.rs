//! Storage quotas per namespace. Usage is what the namespace makes the hub
//! store, counted once per distinct sha256:
//!
//! - blobs referenced by the namespace's repos (LFS objects linked to a repo,
//!   committed or not, and files stored inline by commits);
//! - objects its requests stored that nothing references yet
//!   (`pending_objects`: a commit in flight, or a refused or crashed one until
//!   it is released or collected);
//! - the declared size of each open LFS upload session of its repos (reserved
//!   at the LFS batch; this covers the staging object and multipart parts
//!   already uploaded), until the session completes and links its object, or
//!   expires and is swept.
//!
//! Xet-stored blobs (`blobs.xet_file`) are not counted by their size but by
//! the bytes the namespace added, counted once per distinct xorb at its stored
//! size: the xorbs it uploaded (`xet_xorb_owners`, until the sweeper collects
//! them or releases an ownership nothing of the namespace uses), the xorbs of
//! Xet-stored blobs linked to its repos (a blob it linked without uploading
//! costs what an LFS link of it would), and the room reserved by xorb uploads
//! in flight (`xet_xorb_reservations`). A fine-tune uploaded through Xet whose
//! chunks dedup against the namespace's earlier upload costs only its new
//! xorbs. Another tenant that stores the same bytes pays for its own copy:
//! ownership is per namespace, and charging one tenant less because another
//! holds a chunk would tell it so.
//!
//! Growth past the quota is refused before bytes are stored: in the LFS batch
//! (declared sizes, under a per-namespace lock so concurrent batches cannot
//! both take the last room), in the CAS xorb upload ([`reserve_xorb`]: the
//! validated xorb's stored size, under the same lock, reserved before the
//! object is written) and, for inline files, as each line of a commit is read;
//! the commit transaction checks again under the same lock.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use sqlx::{PgConnection, PgExecutor, Row};

/// Advisory lock class of per-namespace quota locks.
const QUOTA_LOCK_CLASS: i32 = 0x71_75_6f_74; // "quot"

/// Bytes used by a namespace.
pub async fn usage(db: impl PgExecutor<'_>, namespace_id: i64) -> sqlx::Result<i64> {
    usage_with(db, namespace_id, &[]).await
}

/// Bytes a namespace would use with `extra` objects (sha256, size) added.
pub async fn usage_with(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    extra: &[(String, i64)],
) -> sqlx::Result<i64> {
    usage_inner(db, namespace_id, extra, &[]).await
}

/// The usage with `extra` blobs (sha256, size) and `xorbs` (raw hash, stored
/// bytes) added.
async fn usage_inner(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    extra: &[(String, i64)],
    xorbs: &[(Vec<u8>, i64)],
) -> sqlx::Result<i64> {
    let shas: Vec<&str> = extra.iter().map(|(s, _)| s.as_str()).collect();
    let sizes: Vec<i64> = extra.iter().map(|(_, z)| *z).collect();
    let xorb_hashes: Vec<Vec<u8>> = xorbs.iter().map(|(h, _)| h.clone()).collect();
    let xorb_sizes: Vec<i64> = xorbs.iter().map(|(_, z)| *z).collect();
    let r = sqlx::query(
        "SELECT ((SELECT COALESCE(SUM(size), 0) FROM (
           SELECT DISTINCT ON (sha256) sha256, size FROM (
             SELECT b.sha256, b.size FROM repo_lfs_objects l
               JOIN repos r ON r.id = l.repo_id JOIN blobs b ON b.sha256 = l.sha256
              WHERE r.namespace_id = $1 AND b.xet_file IS NULL
             UNION ALL
             SELECT b.sha256, b.size FROM repo_blobs s
               JOIN repos r ON r.id = s.repo_id JOIN blobs b ON b.sha256 = s.sha256
              WHERE r.namespace_id = $1 AND b.xet_file IS NULL
             UNION ALL
             SELECT p.sha256, p.size FROM pending_objects p WHERE p.namespace_id = $1
             UNION ALL
             SELECT u.sha256, u.size FROM upload_sessions u JOIN repos r ON r.id = u.repo_id
              WHERE r.namespace_id = $1 AND u.completed_at IS NULL
             UNION ALL
             SELECT x.sha256, x.size FROM unnest($2::text[], $3::bigint[]) AS x(sha256, size)
           ) every ORDER BY sha256, size DESC
         ) distinct_blobs)
         + (SELECT COALESCE(SUM(size), 0) FROM (
           SELECT DISTINCT ON (hash) hash, size FROM (
             SELECT x.hash, x.stored_bytes AS size FROM xet_xorb_owners o
               JOIN xet_xorbs x ON x.hash = o.xorb_hash
              WHERE o.namespace_id = $1
             UNION ALL
             SELECT x.hash, x.stored_bytes FROM repo_lfs_objects l
               JOIN repos r ON r.id = l.repo_id JOIN blobs b ON b.sha256 = l.sha256
               JOIN xet_file_xorbs f ON f.file_hash = b.xet_file
               JOIN xet_xorbs x ON x.hash = f.xorb_hash
              WHERE r.namespace_id = $1
             UNION ALL
             SELECT v.xorb_hash, v.stored_bytes FROM xet_xorb_reservations v
              WHERE v.namespace_id = $1
             UNION ALL
             SELECT y.hash, y.size FROM unnest($4::bytea[], $5::bigint[]) AS y(hash, size)
           ) every ORDER BY hash, size DESC
         ) distinct_xorbs))::bigint",
    )
    .bind(namespace_id)
    .bind(&shas)
    .bind(&sizes)
    .bind(&xorb_hashes)
    .bind(&xorb_sizes)
    .fetch_one(db)
    .await?;
    Ok(r.get(0))
}

/// How long a summed usage ([`usage_cached`]) is trusted before the
/// namespace is summed again (bounding how long pending bytes of commits in
/// flight, counted when summed and again when committed, keep it too high).
const USAGE_MAX_AGE_S: i64 = 60;

/// The namespace's usage for a check under [`lock_namespace`] (the caller
/// holds it): the row of `namespace_usage` if it is under a minute old, else
/// summed now ([`usage`]) and recorded. Never lower than [`usage`] (see the
/// migration that made the table), so admitting growth against it never
/// passes the quota. Answers the bytes and when they were summed.
pub async fn usage_cached(
    tx: &mut PgConnection,
    namespace_id: i64,
) -> sqlx::Result<(i64, chrono::DateTime<chrono::Utc>)> {
    if let Some(r) = recorded_usage(&mut *tx, namespace_id).await? {
        return Ok(r);
    }
    let bytes = usage(&mut *tx, namespace_id).await?;
    let (at,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT now()").fetch_one(&mut *tx).await?;
    record_usage(tx, namespace_id, bytes, at).await?;
    Ok((bytes, at))
}

/// The namespace's recorded usage if it is under [`USAGE_MAX_AGE_S`] old.
async fn recorded_usage(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
) -> sqlx::Result<Option<(i64, chrono::DateTime<chrono::Utc>)>> {
    sqlx::query_as(
        "SELECT bytes, computed_at FROM namespace_usage
          WHERE namespace_id = $1 AND computed_at > now() - make_interval(secs => $2)",
    )
    .bind(namespace_id)
    .bind(USAGE_MAX_AGE_S as f64)
    .fetch_optional(db)
    .await
}

/// Whether any of the blobs `shas` is stored through Xet (counted by its
/// xorbs, so [`link_growth`] does not apply).
pub async fn any_xet_blob(db: impl PgExecutor<'_>, shas: &[&str]) -> sqlx::Result<bool> {
    let (any,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM blobs WHERE sha256 = ANY($1) AND xet_file IS NOT NULL)",
    )
    .bind(shas)
    .fetch_one(db)
    .await?;
    Ok(any)
}

/// Records `bytes` as the namespace's usage summed at `at` (under
/// [`lock_namespace`]).
pub async fn record_usage(
    tx: &mut PgConnection,
    namespace_id: i64,
    bytes: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO namespace_usage (namespace_id, bytes, computed_at) VALUES ($1, $2, $3)
         ON CONFLICT (namespace_id) DO UPDATE SET bytes = EXCLUDED.bytes, computed_at = EXCLUDED.computed_at",
    )
    .bind(namespace_id)
    .bind(bytes)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

/// What linking `blobs` (sha256, size; stored whole, not through Xet) to a
/// repo of the namespace adds to its usage: the sizes of those no repo of the
/// namespace links yet. Pending rows and upload sessions are not taken as
/// counted (the cached usage may not hold them), so this is never too low.
/// One indexed lookup per blob.
pub async fn link_growth(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    blobs: &[(String, i64)],
) -> sqlx::Result<i64> {
    let shas: Vec<&str> = blobs.iter().map(|(s, _)| s.as_str()).collect();
    let sizes: Vec<i64> = blobs.iter().map(|(_, z)| *z).collect();
    let (grown,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(x.size), 0)::bigint FROM (
           SELECT DISTINCT ON (sha256) sha256, size FROM UNNEST($2::text[], $3::bigint[]) AS u(sha256, size)
            ORDER BY sha256, size DESC
         ) x
         WHERE NOT EXISTS (SELECT 1 FROM repo_blobs s JOIN repos r ON r.id = s.repo_id
                            WHERE s.sha256 = x.sha256 AND r.namespace_id = $1)
           AND NOT EXISTS (SELECT 1 FROM repo_lfs_objects l JOIN repos r ON r.id = l.repo_id
                            WHERE l.sha256 = x.sha256 AND r.namespace_id = $1)",
    )
    .bind(namespace_id)
    .bind(&shas)
    .bind(&sizes)
    .fetch_one(db)
    .await?;
    Ok(grown)
}

/// Room for a xorb about to be stored for `namespace_id` (its stored size),
/// checked and reserved under [`lock_namespace`] before the object is
/// written, so concurrent uploads cannot both take the last room. A xorb the
/// namespace already counts adds nothing. `Ok(None)` when the namespace has
/// no quota (nothing to reserve); else the reservation to give back with
/// [`release_xorb`] once the xorb is indexed (or the upload failed).
pub async fn reserve_xorb(
    state: &AppState,
    namespace_id: i64,
    xorb: &hub_xet::hash::XetHash,
    stored_bytes: i64,
) -> ApiResult<Option<i64>> {
    let xorb = hub_xet::hash::hash_raw(xorb);
    let mut tx = state.db.begin().await?;
    let Some(limit) = limit(state, &mut tx, namespace_id).await? else {
        return Ok(None);
    };
    lock_namespace(&mut tx, namespace_id).await?;
    let used = usage(&mut *tx, namespace_id).await?;
    let after = usage_inner(
        &mut *tx,
        namespace_id,
        &[],
        &[(xorb.to_vec(), stored_bytes)],
    )
    .await?;
    if after > limit && after > used {
        return Err(exceeded(used, limit, after - used));
    }
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO xet_xorb_reservations (namespace_id, xorb_hash, stored_bytes)
         VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(namespace_id)
    .bind(xorb.as_slice())
    .bind(stored_bytes)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// Gives back a xorb reservation (in the transaction that indexes the xorb,
/// or after a failed upload).
pub async fn release_xorb(db: impl PgExecutor<'_>, reservation: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM xet_xorb_reservations WHERE id = $1")
        .bind(reservation)
        .execute(db)
        .await?;
    Ok(())
}

/// Serialises quota decisions of one namespace until the transaction ends.
pub async fn lock_namespace(tx: &mut PgConnection, namespace_id: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(QUOTA_LOCK_CLASS)
        .bind(namespace_id as i32)
        .execute(tx)
        .await?;
    Ok(())
}

/// A namespace's own settings (None where it uses the default).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub storage_bytes: Option<i64>,
    pub rate_per_s: Option<i32>,
    pub rate_burst: Option<i32>,
    /// Prompt + completion tokens per UTC day through the namespace's endpoints
    /// (None: unlimited); enforced by `token_quota`.
    pub daily_tokens: Option<i64>,
    /// CPU-seconds of fine-tuning jobs per UTC day (None: unlimited); enforced by
    /// `jobs::check_quota` (new jobs) and the job runner's progress answers.
    pub daily_job_cpu_seconds: Option<i64>,
}

/// `storage_bytes, rate_per_s, rate_burst, daily_tokens, daily_job_cpu_seconds` of
/// `namespace_quotas`.
type SettingsRow = (
    Option<i64>,
    Option<i32>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
);

/// The namespace's own settings.
pub async fn settings(db: impl PgExecutor<'_>, namespace_id: i64) -> sqlx::Result<Settings> {
    let r: Option<SettingsRow> = sqlx::query_as(
        "SELECT storage_bytes, rate_per_s, rate_burst, daily_tokens, daily_job_cpu_seconds FROM namespace_quotas WHERE namespace_id = $1",
    )
    .bind(namespace_id)
    .fetch_optional(db)
    .await?;
    Ok(r.map(|(s, r, b, t, j)| Settings {
        storage_bytes: s,
        rate_per_s: r,
        rate_burst: b,
        daily_tokens: t,
        daily_job_cpu_seconds: j,
    })
    .unwrap_or_default())
}

/// Replaces a namespace's settings.
pub async fn set(db: impl PgExecutor<'_>, namespace_id: i64, s: &Settings) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO namespace_quotas (namespace_id, storage_bytes, rate_per_s, rate_burst, daily_tokens,
           daily_job_cpu_seconds, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())
         ON CONFLICT (namespace_id) DO UPDATE SET storage_bytes = EXCLUDED.storage_bytes,
           rate_per_s = EXCLUDED.rate_per_s, rate_burst = EXCLUDED.rate_burst,
           daily_tokens = EXCLUDED.daily_tokens,
           daily_job_cpu_seconds = EXCLUDED.daily_job_cpu_seconds, updated_at = now()",
    )
    .bind(namespace_id)
    .bind(s.storage_bytes)
    .bind(s.rate_per_s)
    .bind(s.rate_burst)
    .bind(s.daily_tokens)
    .bind(s.daily_job_cpu_seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// The namespace's storage quota, if any (its own setting, else the default).
pub async fn limit(
    state: &AppState,
    db: &mut PgConnection,
    namespace_id: i64,
) -> sqlx::Result<Option<i64>> {
    Ok(settings(&mut *db, namespace_id)
        .await?
        .storage_bytes
        .or(state.tenancy.default_storage_quota))
}

/// The refusal, naming the quota and the usage.
pub fn exceeded(used: i64, limit: i64, extra: i64) -> ApiError {
    ApiError::QuotaExceeded(format!(
        "the namespace uses {used} of its {limit} bytes; this upload needs {extra} more"
    ))
}

/// Refuses growth by `extra` bytes past the namespace's quota.
pub async fn check_namespace_can_grow(
    state: &AppState,
    db: &mut PgConnection,
    namespace_id: i64,
    extra: i64,
) -> ApiResult<()> {
    let Some(limit) = limit(state, db, namespace_id).await? else {
        return Ok(());
    };
    let used = usage(&mut *db, namespace_id).await?;
    if used.saturating_add(extra) > limit {
        return Err(exceeded(used, limit, extra));
    }
    Ok(())
}

/// Refuses adding `objects` (sha256, declared size) past the namespace's
/// quota; objects the namespace already counts add nothing. Call inside a
/// transaction holding [`lock_namespace`], and record the objects (upload
/// sessions) in the same transaction.
pub async fn check_objects_fit(
    state: &AppState,
    tx: &mut PgConnection,
    namespace_id: i64,
    objects: &[(String, i64)],
) -> ApiResult<()> {
    let Some(limit) = limit(state, tx, namespace_id).await? else {
        return Ok(());
    };
    let used = usage(&mut *tx, namespace_id).await?;
    let after = usage_with(&mut *tx, namespace_id, objects).await?;
    if after > limit && after > used {
        return Err(exceeded(used, limit, after - used));
    }
    Ok(())
}

/// Room left for a namespace (None: unlimited), with the usage and limit.
pub async fn headroom(state: &AppState, namespace_id: i64) -> ApiResult<Option<(i64, i64)>> {
    let mut conn = state.db.acquire().await?;
    let Some(limit) = limit(state, &mut conn, namespace_id).await? else {
        return Ok(None);
    };
    // The recorded usage when fresh (never lower than the sum; the commit
    // checks again under the lock).
    let used = match recorded_usage(&mut *conn, namespace_id).await? {
        Some((bytes, _)) => bytes,
        None => usage(&mut *conn, namespace_id).await?,
    };
    Ok(Some((used, limit)))
}
