//! API tokens: stored as sha256 of the secret, never the secret.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub display_prefix: String,
    pub scopes: Vec<String>,
    pub restrict_namespaces: Option<Vec<String>>,
    pub restrict_repos: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLS: &str = "id, user_id, name, display_prefix, scopes, restrict_namespaces, restrict_repos, created_at, expires_at, last_used_at, revoked_at";

/// New token fields.
pub struct NewToken<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub secret_hash: &'a [u8],
    pub display_prefix: &'a str,
    pub scopes: &'a [String],
    pub restrict_namespaces: Option<&'a [String]>,
    pub restrict_repos: Option<&'a [String]>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn insert(db: impl PgExecutor<'_>, t: &NewToken<'_>) -> sqlx::Result<TokenRow> {
    sqlx::query_as(&format!(
        "INSERT INTO tokens (user_id, name, secret_hash, display_prefix, scopes, restrict_namespaces, restrict_repos, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLS}"
    ))
    .bind(t.user_id)
    .bind(t.name)
    .bind(t.secret_hash)
    .bind(t.display_prefix)
    .bind(t.scopes)
    .bind(t.restrict_namespaces)
    .bind(t.restrict_repos)
    .bind(t.expires_at)
    .fetch_one(db)
    .await
}

pub async fn by_hash(db: impl PgExecutor<'_>, hash: &[u8]) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as(&format!("SELECT {COLS} FROM tokens WHERE secret_hash = $1"))
        .bind(hash)
        .fetch_optional(db)
        .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as(&format!("SELECT {COLS} FROM tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Records use, at most once a minute per token (keeps hot paths write-free).
pub async fn touch(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tokens SET last_used_at = now() WHERE id = $1
         AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn list_for_user(
    db: impl PgExecutor<'_>,
    user_id: i64,
    after_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM tokens WHERE user_id = $1 AND revoked_at IS NULL AND ($2::bigint IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(user_id)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Revokes a user's token; false when there is no such live token of theirs.
pub async fn revoke(db: impl PgExecutor<'_>, user_id: i64, id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn count_live(db: impl PgExecutor<'_>, user_id: i64) -> sqlx::Result<i64> {
    let r = sqlx::query("SELECT count(*) FROM tokens WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .fetch_one(db)
        .await?;
    Ok(r.get(0))
}
