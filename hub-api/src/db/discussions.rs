//! Discussions and pull requests of a repo, and their events (migration
//! `20261204120001_discussions.sql`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DiscussionRow {
    pub id: i64,
    pub repo_id: i64,
    pub num: i32,
    pub title: String,
    pub author_id: Option<i64>,
    /// The author's name; None once the account is gone.
    pub author: Option<String>,
    pub is_pull_request: bool,
    pub status: String,
    pub target_branch: Option<String>,
    pub base_oid: Option<String>,
    pub merge_commit_oid: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub event_id: String,
    pub kind: String,
    pub author_id: Option<i64>,
    pub author: Option<String>,
    pub created_at: DateTime<Utc>,
    pub data: Json<Value>,
}

const D_COLS: &str =
    "d.id, d.repo_id, d.num, d.title, d.author_id, a.name AS author, d.is_pull_request, d.status,
    d.target_branch, d.base_oid, d.merge_commit_oid, d.created_at";
const E_COLS: &str =
    "e.id, e.event_id, e.kind, e.author_id, a.name AS author, e.created_at, e.data";

/// The next number of a repo's discussions (locks the repo row until the
/// transaction ends, so numbers are dense and never reused).
pub async fn next_num(db: &mut PgConnection, repo_id: i64) -> sqlx::Result<i32> {
    let (n,): (i32,) = sqlx::query_as(
        "UPDATE repos SET discussion_seq = discussion_seq + 1 WHERE id = $1 RETURNING discussion_seq",
    )
    .bind(repo_id)
    .fetch_one(&mut *db)
    .await?;
    Ok(n)
}

pub struct NewDiscussion<'a> {
    pub repo_id: i64,
    pub num: i32,
    pub title: &'a str,
    pub author_id: i64,
    pub status: &'a str,
    /// Pull requests: (target branch, base commit).
    pub pull: Option<(&'a str, &'a str)>,
}

pub async fn insert(db: &mut PgConnection, d: &NewDiscussion<'_>) -> sqlx::Result<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO discussions (repo_id, num, title, author_id, is_pull_request, status, target_branch, base_oid)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(d.repo_id)
    .bind(d.num)
    .bind(d.title)
    .bind(d.author_id)
    .bind(d.pull.is_some())
    .bind(d.status)
    .bind(d.pull.map(|p| p.0))
    .bind(d.pull.map(|p| p.1))
    .fetch_one(&mut *db)
    .await?;
    Ok(id)
}

pub async fn get(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    num: i32,
) -> sqlx::Result<Option<DiscussionRow>> {
    sqlx::query_as(&format!(
        "SELECT {D_COLS} FROM discussions d LEFT JOIN namespaces a ON a.id = d.author_id
         WHERE d.repo_id = $1 AND d.num = $2"
    ))
    .bind(repo_id)
    .bind(num)
    .fetch_optional(db)
    .await
}

/// The discussion, locked until the transaction ends (serialises changes to it).
pub async fn get_for_update(
    db: &mut PgConnection,
    repo_id: i64,
    num: i32,
) -> sqlx::Result<Option<DiscussionRow>> {
    sqlx::query_as(&format!(
        "SELECT {D_COLS} FROM discussions d LEFT JOIN namespaces a ON a.id = d.author_id
         WHERE d.repo_id = $1 AND d.num = $2 FOR UPDATE OF d"
    ))
    .bind(repo_id)
    .bind(num)
    .fetch_optional(&mut *db)
    .await
}

/// What a listing keeps: all, or only discussions / pull requests; all
/// statuses, or only open (open and draft) / closed (closed and merged).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pull_requests: Option<bool>,
    pub open: Option<bool>,
    pub author: Option<String>,
}

/// A page of a repo's discussions, newest first, and how many match.
pub async fn list(
    db: &mut PgConnection,
    repo_id: i64,
    f: &Filter,
    offset: i64,
    limit: i64,
) -> sqlx::Result<(Vec<DiscussionRow>, i64)> {
    let cond = "d.repo_id = $1
        AND ($2::bool IS NULL OR d.is_pull_request = $2)
        AND ($3::bool IS NULL OR (d.status IN ('open', 'draft')) = $3)
        AND ($4::text IS NULL OR lower(a.name) = lower($4))";
    let rows: Vec<DiscussionRow> = sqlx::query_as(&format!(
        "SELECT {D_COLS} FROM discussions d LEFT JOIN namespaces a ON a.id = d.author_id
         WHERE {cond} ORDER BY d.num DESC OFFSET $5 LIMIT $6"
    ))
    .bind(repo_id)
    .bind(f.pull_requests)
    .bind(f.open)
    .bind(&f.author)
    .bind(offset)
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    let (count,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM discussions d LEFT JOIN namespaces a ON a.id = d.author_id WHERE {cond}"
    ))
    .bind(repo_id)
    .bind(f.pull_requests)
    .bind(f.open)
    .bind(&f.author)
    .fetch_one(&mut *db)
    .await?;
    Ok((rows, count))
}

pub async fn events(db: impl PgExecutor<'_>, discussion_id: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(&format!(
        "SELECT {E_COLS} FROM discussion_events e LEFT JOIN namespaces a ON a.id = e.author_id
         WHERE e.discussion_id = $1 ORDER BY e.id"
    ))
    .bind(discussion_id)
    .fetch_all(db)
    .await
}

pub async fn event(
    db: &mut PgConnection,
    discussion_id: i64,
    event_id: &str,
) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as(&format!(
        "SELECT {E_COLS} FROM discussion_events e LEFT JOIN namespaces a ON a.id = e.author_id
         WHERE e.discussion_id = $1 AND e.event_id = $2 FOR UPDATE OF e"
    ))
    .bind(discussion_id)
    .bind(event_id)
    .fetch_optional(&mut *db)
    .await
}

/// Appends an event; answers it as stored.
pub async fn add_event(
    db: &mut PgConnection,
    discussion_id: i64,
    kind: &str,
    author_id: i64,
    data: &Value,
) -> sqlx::Result<EventRow> {
    let event_id = new_event_id();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO discussion_events (discussion_id, event_id, kind, author_id, data)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(discussion_id)
    .bind(&event_id)
    .bind(kind)
    .bind(author_id)
    .bind(Json(data))
    .fetch_one(&mut *db)
    .await?;
    sqlx::query_as(&format!(
        "SELECT {E_COLS} FROM discussion_events e LEFT JOIN namespaces a ON a.id = e.author_id WHERE e.id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *db)
    .await
}

pub async fn set_event_data(db: &mut PgConnection, id: i64, data: &Value) -> sqlx::Result<()> {
    sqlx::query("UPDATE discussion_events SET data = $2 WHERE id = $1")
        .bind(id)
        .bind(Json(data))
        .execute(&mut *db)
        .await?;
    Ok(())
}

pub async fn set_status(
    db: &mut PgConnection,
    id: i64,
    status: &str,
    merge_commit: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE discussions SET status = $2, merge_commit_oid = COALESCE($3, merge_commit_oid) WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(merge_commit)
    .execute(&mut *db)
    .await?;
    Ok(())
}

pub async fn set_title(db: &mut PgConnection, id: i64, title: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE discussions SET title = $2 WHERE id = $1")
        .bind(id)
        .bind(title)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// 24 random hex digits (the Hub's event ids are Mongo-style object ids).
fn new_event_id() -> String {
    let b: [u8; 12] = rand::random();
    hex::encode(b)
}

/// Inline bytes `user_id` has added to `repo_id`'s pull requests without
/// write access (`pr_contributions`).
pub async fn contributed(db: impl PgExecutor<'_>, repo_id: i64, user_id: i64) -> sqlx::Result<i64> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT bytes FROM pr_contributions WHERE repo_id = $1 AND user_id = $2",
    )
    .bind(repo_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(v.unwrap_or(0))
}

pub async fn add_contributed(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    user_id: i64,
    bytes: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO pr_contributions (repo_id, user_id, bytes) VALUES ($1, $2, $3) \
         ON CONFLICT (repo_id, user_id) DO UPDATE SET bytes = pr_contributions.bytes + EXCLUDED.bytes",
    )
    .bind(repo_id)
    .bind(user_id)
    .bind(bytes)
    .execute(db)
    .await?;
    Ok(())
}
