//! The audit log: who did what to which object, per namespace. Entries never
//! contain secrets (token secrets are never passed here; details are ids and names).

use crate::auth::Principal;
use serde_json::Value;
use sqlx::PgExecutor;

/// Records an event in a namespace's audit log.
pub async fn record(
    db: impl PgExecutor<'_>,
    actor: Option<&Principal>,
    namespace_id: i64,
    action: &str,
    target: &str,
    details: Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (namespace_id, actor_id, actor_name, action, target, details) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(namespace_id)
    .bind(actor.map(|a| a.user_id))
    .bind(actor.map(|a| a.name.as_str()))
    .bind(action)
    .bind(target)
    .bind(sqlx::types::Json(details))
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub actor_name: Option<String>,
    pub action: String,
    pub target: String,
    pub details: sqlx::types::Json<Value>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A page of a namespace's log, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as(
        "SELECT id, actor_name, action, target, details, at FROM audit_log
         WHERE namespace_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(namespace_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(db)
    .await
}
