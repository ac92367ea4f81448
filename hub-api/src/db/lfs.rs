//! Verified blobs, which repo has proven it holds which LFS object, and LFS
//! upload sessions with their parts.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

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
}

const SESSION_COLS: &str =
    "id, repo_id, sha256, size, chunk_size, part_count, created_by, expires_at, completed_at";

pub async fn create_session(db: impl PgExecutor<'_>, s: &UploadSession) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO upload_sessions (id, repo_id, sha256, size, chunk_size, part_count, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(s.id)
    .bind(s.repo_id)
    .bind(&s.sha256)
    .bind(s.size)
    .bind(s.chunk_size)
    .bind(s.part_count)
    .bind(s.created_by)
    .bind(s.expires_at)
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

pub async fn record_part(
    db: impl PgExecutor<'_>,
    session: Uuid,
    part: i32,
    size: i64,
    etag: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO upload_parts (session_id, part_number, size, etag) VALUES ($1, $2, $3, $4)
         ON CONFLICT (session_id, part_number) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag",
    )
    .bind(session)
    .bind(part)
    .bind(size)
    .bind(etag)
    .execute(db)
    .await?;
    Ok(())
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
