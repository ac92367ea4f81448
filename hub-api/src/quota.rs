//! Storage quotas per namespace: usage is the total size of the distinct LFS
//! objects referenced by the namespace's repos. A push that would exceed the
//! quota is refused before any byte is stored.

use crate::error::{ApiError, ApiResult};
use sqlx::{PgConnection, Row};

/// Bytes used by a namespace.
pub async fn usage(db: &mut PgConnection, namespace_id: i64) -> sqlx::Result<i64> {
    let r = sqlx::query(
        "SELECT COALESCE(SUM(b.size), 0)::bigint FROM (
            SELECT DISTINCT l.sha256 FROM repo_lfs_objects l JOIN repos r ON r.id = l.repo_id WHERE r.namespace_id = $1
         ) d JOIN blobs b ON b.sha256 = d.sha256",
    )
    .bind(namespace_id)
    .fetch_one(&mut *db)
    .await?;
    Ok(r.get(0))
}

/// The namespace's storage quota, if any (its own setting, else the default).
pub async fn limit(db: &mut PgConnection, namespace_id: i64) -> sqlx::Result<Option<i64>> {
    let r: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT storage_bytes FROM namespace_quotas WHERE namespace_id = $1")
            .bind(namespace_id)
            .fetch_optional(&mut *db)
            .await?;
    Ok(match r {
        Some((Some(b),)) => Some(b),
        _ => default_quota(),
    })
}

/// The default quota from `HUB_DEFAULT_STORAGE_QUOTA` (bytes; unset = unlimited).
pub fn default_quota() -> Option<i64> {
    std::env::var("HUB_DEFAULT_STORAGE_QUOTA")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// Refuses growth by `extra` bytes past the namespace's quota.
pub async fn check_namespace_can_grow(
    db: &mut PgConnection,
    namespace_id: i64,
    extra: i64,
) -> ApiResult<()> {
    let Some(limit) = limit(db, namespace_id).await? else {
        return Ok(());
    };
    let used = usage(db, namespace_id).await?;
    if used.saturating_add(extra) > limit {
        return Err(ApiError::QuotaExceeded(format!(
            "the namespace uses {used} of its {limit} bytes; this upload needs {extra} more"
        )));
    }
    Ok(())
}
