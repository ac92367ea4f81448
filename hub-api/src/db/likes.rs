//! Likes: who liked which repo; `repos.likes` holds the count.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Adds or removes a like, and moves the repo's count with it. Answers
/// whether anything changed (liking twice is a no-op).
pub async fn set(
    db: &mut PgConnection,
    user_id: i64,
    repo_id: i64,
    like: bool,
) -> sqlx::Result<bool> {
    let changed = if like {
        sqlx::query(
            "INSERT INTO repo_likes (user_id, repo_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
    } else {
        sqlx::query("DELETE FROM repo_likes WHERE user_id = $1 AND repo_id = $2")
    }
    .bind(user_id)
    .bind(repo_id)
    .execute(&mut *db)
    .await?
    .rows_affected()
        > 0;
    if changed {
        sqlx::query("UPDATE repos SET likes = GREATEST(likes + $2, 0) WHERE id = $1")
            .bind(repo_id)
            .bind(if like { 1i64 } else { -1 })
            .execute(&mut *db)
            .await?;
    }
    Ok(changed)
}

/// A liked public repo: (repo type, full id, liked at).
pub type Liked = (String, String, DateTime<Utc>);

/// The public repos a user liked, newest first, at most `limit`.
pub async fn public_of_user(
    db: impl sqlx::PgExecutor<'_>,
    user_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<Liked>> {
    sqlx::query_as(
        "SELECT r.repo_type,
                CASE WHEN n.name = '_root' THEN r.name ELSE n.name || '/' || r.name END,
                l.created_at
         FROM repo_likes l JOIN repos r ON r.id = l.repo_id JOIN namespaces n ON n.id = r.namespace_id
         WHERE l.user_id = $1 AND NOT r.private
         ORDER BY l.created_at DESC, r.id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(db)
    .await
}
