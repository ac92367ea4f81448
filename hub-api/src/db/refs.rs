//! Branches and tags. A ref moves only by compare-and-swap inside the
//! transaction that writes the commit, and every move is in the ref log.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefRow {
    pub name: String,
    pub commit_oid: String,
    pub message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn get(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    name: &str,
) -> sqlx::Result<Option<RefRow>> {
    sqlx::query_as(
        "SELECT name, commit_oid, message, updated_at FROM refs WHERE repo_id = $1 AND name = $2",
    )
    .bind(repo_id)
    .bind(name)
    .fetch_optional(db)
    .await
}

/// Reads a ref and locks it until the transaction ends (serialises writers of one branch).
pub async fn get_for_update(
    db: &mut PgConnection,
    repo_id: i64,
    name: &str,
) -> sqlx::Result<Option<RefRow>> {
    sqlx::query_as(
        "SELECT name, commit_oid, message, updated_at FROM refs WHERE repo_id = $1 AND name = $2 FOR UPDATE",
    )
    .bind(repo_id)
    .bind(name)
    .fetch_optional(&mut *db)
    .await
}

pub async fn list(db: impl PgExecutor<'_>, repo_id: i64) -> sqlx::Result<Vec<RefRow>> {
    sqlx::query_as(
        "SELECT name, commit_oid, message, updated_at FROM refs WHERE repo_id = $1 ORDER BY name COLLATE \"C\"",
    )
    .bind(repo_id)
    .fetch_all(db)
    .await
}

/// Creates a ref; false if it exists.
pub async fn create(
    db: &mut PgConnection,
    repo_id: i64,
    name: &str,
    commit: &str,
    message: Option<&str>,
    actor: Option<i64>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO refs (repo_id, name, commit_oid, message) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(repo_id)
    .bind(name)
    .bind(commit)
    .bind(message)
    .execute(&mut *db)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    log(db, repo_id, name, None, Some(commit), actor).await?;
    Ok(true)
}

/// Moves a ref from `old` to `new`; false if it no longer points at `old`.
pub async fn compare_and_swap(
    db: &mut PgConnection,
    repo_id: i64,
    name: &str,
    old: &str,
    new: &str,
    actor: Option<i64>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE refs SET commit_oid = $4, updated_at = now() WHERE repo_id = $1 AND name = $2 AND commit_oid = $3",
    )
    .bind(repo_id)
    .bind(name)
    .bind(old)
    .bind(new)
    .execute(&mut *db)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    log(db, repo_id, name, Some(old), Some(new), actor).await?;
    Ok(true)
}

pub async fn delete(
    db: &mut PgConnection,
    repo_id: i64,
    name: &str,
    actor: Option<i64>,
) -> sqlx::Result<bool> {
    let r: Option<(String,)> =
        sqlx::query_as("DELETE FROM refs WHERE repo_id = $1 AND name = $2 RETURNING commit_oid")
            .bind(repo_id)
            .bind(name)
            .fetch_optional(&mut *db)
            .await?;
    match r {
        Some((old,)) => {
            log(db, repo_id, name, Some(&old), None, actor).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Deletes the ref `name` if it is at `old` (compare-and-swap, for `git
/// push --delete`); false when it is not there or elsewhere.
pub async fn delete_at(
    db: &mut PgConnection,
    repo_id: i64,
    name: &str,
    old: &str,
    actor: Option<i64>,
) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM refs WHERE repo_id = $1 AND name = $2 AND commit_oid = $3")
        .bind(repo_id)
        .bind(name)
        .bind(old)
        .execute(&mut *db)
        .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    log(db, repo_id, name, Some(old), None, actor).await?;
    Ok(true)
}

async fn log(
    db: &mut PgConnection,
    repo_id: i64,
    name: &str,
    old: Option<&str>,
    new: Option<&str>,
    actor: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO ref_log (repo_id, name, old_oid, new_oid, actor_id) VALUES ($1, $2, $3, $4, $5)")
        .bind(repo_id)
        .bind(name)
        .bind(old)
        .bind(new)
        .bind(actor)
        .execute(&mut *db)
        .await?;
    // A dataset's default branch moved: its viewer converts the new commit
    // (queued in the same transaction, run off the request path).
    if let (Some(new), true) = (new, name == "refs/heads/main") {
        crate::viewer::jobs::enqueue(db, repo_id, new).await?;
    }
    // Every ref move is a `repo.content` webhook event, in the same transaction.
    crate::webhooks::enqueue(
        db,
        crate::webhooks::Event::RefUpdated {
            repo_id,
            updated: crate::webhooks::UpdatedRef {
                name: name.to_string(),
                old: old.map(str::to_string),
                new: new.map(str::to_string),
            },
        },
    )
    .await
}
