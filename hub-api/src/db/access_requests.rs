//! Access requests to gated repos.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessRequest {
    pub id: i64,
    pub repo_id: i64,
    pub user_id: i64,
    pub user_name: String,
    pub fullname: String,
    pub email: Option<String>,
    pub status: String,
    pub fields: Json<serde_json::Value>,
    pub rejection_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLS: &str = "a.id, a.repo_id, a.user_id, n.name AS user_name, n.fullname, u.email, a.status, a.fields, a.rejection_reason, a.created_at, a.updated_at";
const FROM: &str = "access_requests a JOIN namespaces n ON n.id = a.user_id LEFT JOIN users u ON u.namespace_id = a.user_id";

pub async fn get(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    user_id: i64,
) -> sqlx::Result<Option<AccessRequest>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM {FROM} WHERE a.repo_id = $1 AND a.user_id = $2"
    ))
    .bind(repo_id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

pub async fn by_id(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    id: i64,
) -> sqlx::Result<Option<AccessRequest>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM {FROM} WHERE a.repo_id = $1 AND a.id = $2"
    ))
    .bind(repo_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Creates a request (no-op if the user already has one); returns it.
pub async fn create(
    db: &mut sqlx::PgConnection,
    repo_id: i64,
    user_id: i64,
    status: &str,
    fields: &serde_json::Value,
) -> sqlx::Result<AccessRequest> {
    sqlx::query(
        "INSERT INTO access_requests (repo_id, user_id, status, fields) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, user_id) DO NOTHING",
    )
    .bind(repo_id)
    .bind(user_id)
    .bind(status)
    .bind(Json(fields))
    .execute(&mut *db)
    .await?;
    Ok(get(&mut *db, repo_id, user_id)
        .await?
        .expect("access request just inserted"))
}

/// Sets the status of a user's request, creating it if absent (a grant).
pub async fn set_status(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    user_id: i64,
    status: &str,
    reason: Option<&str>,
    decided_by: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO access_requests (repo_id, user_id, status, rejection_reason, decided_by, decided_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, now(), now())
         ON CONFLICT (repo_id, user_id) DO UPDATE SET status = EXCLUDED.status,
           rejection_reason = EXCLUDED.rejection_reason, decided_by = EXCLUDED.decided_by,
           decided_at = now(), updated_at = now()",
    )
    .bind(repo_id)
    .bind(user_id)
    .bind(status)
    .bind(reason)
    .bind(decided_by)
    .execute(db)
    .await?;
    Ok(())
}

/// A page of a repo's requests with a status, by id.
pub async fn list(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    status: &str,
    after_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AccessRequest>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM {FROM} WHERE a.repo_id = $1 AND a.status = $2
         AND ($3::bigint IS NULL OR a.id > $3) ORDER BY a.id LIMIT $4"
    ))
    .bind(repo_id)
    .bind(status)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await
}
