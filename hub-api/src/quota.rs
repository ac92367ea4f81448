//! Storage quotas per namespace: usage is the total size of the distinct
//! blobs referenced by the namespace's repos (LFS objects, and files stored
//! inline by commits). A push that would exceed the quota is refused before
//! any byte is stored: in the LFS batch (declared sizes) and, for inline
//! files, as each line of the commit is read.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use sqlx::{PgConnection, PgExecutor, Row};

/// Bytes used by a namespace.
pub async fn usage(db: impl PgExecutor<'_>, namespace_id: i64) -> sqlx::Result<i64> {
    let r = sqlx::query(
        "SELECT COALESCE(SUM(b.size), 0)::bigint FROM (
            SELECT l.sha256 FROM repo_lfs_objects l JOIN repos r ON r.id = l.repo_id WHERE r.namespace_id = $1
            UNION
            SELECT s.sha256 FROM repo_blobs s JOIN repos r ON r.id = s.repo_id WHERE r.namespace_id = $1
         ) d JOIN blobs b ON b.sha256 = d.sha256",
    )
    .bind(namespace_id)
    .fetch_one(db)
    .await?;
    Ok(r.get(0))
}

/// A namespace's own settings (None where it uses the default).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub storage_bytes: Option<i64>,
    pub rate_per_s: Option<i32>,
    pub rate_burst: Option<i32>,
}

/// The namespace's own settings.
pub async fn settings(db: impl PgExecutor<'_>, namespace_id: i64) -> sqlx::Result<Settings> {
    let r: Option<(Option<i64>, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT storage_bytes, rate_per_s, rate_burst FROM namespace_quotas WHERE namespace_id = $1",
    )
    .bind(namespace_id)
    .fetch_optional(db)
    .await?;
    Ok(r.map(|(s, r, b)| Settings {
        storage_bytes: s,
        rate_per_s: r,
        rate_burst: b,
    })
    .unwrap_or_default())
}

/// Replaces a namespace's settings.
pub async fn set(db: impl PgExecutor<'_>, namespace_id: i64, s: &Settings) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO namespace_quotas (namespace_id, storage_bytes, rate_per_s, rate_burst, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (namespace_id) DO UPDATE SET storage_bytes = EXCLUDED.storage_bytes,
           rate_per_s = EXCLUDED.rate_per_s, rate_burst = EXCLUDED.rate_burst, updated_at = now()",
    )
    .bind(namespace_id)
    .bind(s.storage_bytes)
    .bind(s.rate_per_s)
    .bind(s.rate_burst)
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

/// Room left for a namespace (None: unlimited), with the usage and limit.
pub async fn headroom(state: &AppState, namespace_id: i64) -> ApiResult<Option<(i64, i64)>> {
    let mut conn = state.db.acquire().await?;
    let Some(limit) = limit(state, &mut conn, namespace_id).await? else {
        return Ok(None);
    };
    let used = usage(&mut *conn, namespace_id).await?;
    Ok(Some((used, limit)))
}
