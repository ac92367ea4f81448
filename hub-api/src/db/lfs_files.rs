//! Listing and permanently deleting a repo's LFS objects
//! (`routes::hf::lfs_files`): the rows of `repo_lfs_objects` (what the repo
//! holds) and what a permanent deletion removes.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

/// An LFS object a repo holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Held {
    pub sha256: String,
    pub size: i64,
    /// When the repo got it (uploaded or committed).
    pub created_at: DateTime<Utc>,
    /// The Xet file hash (raw) when the bytes are stored through Xet.
    pub xet_file: Option<Vec<u8>>,
}

/// The LFS objects of a repo after `after` (by sha256), at most `limit`.
pub async fn held(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Held>> {
    sqlx::query_as(
        "SELECT l.sha256, b.size, l.created_at, b.xet_file
         FROM repo_lfs_objects l JOIN blobs b ON b.sha256 = l.sha256
         WHERE l.repo_id = $1 AND ($2::text IS NULL OR l.sha256 > $2)
         ORDER BY l.sha256 LIMIT $3",
    )
    .bind(repo_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The repo gives up an object: its LFS link, an inline-blob link of the
/// same bytes, and its Xet registrations of that file. Under the blob's
/// exclusive lock (the caller's transaction).
pub async fn unlink(tx: &mut PgConnection, repo_id: i64, sha256: &str) -> sqlx::Result<()> {
    for q in [
        "DELETE FROM repo_lfs_objects WHERE repo_id = $1 AND sha256 = $2",
        "DELETE FROM repo_blobs WHERE repo_id = $1 AND sha256 = $2",
        // Also a registration of the blob's Xet file that named no sha256.
        "DELETE FROM xet_repo_files WHERE repo_id = $1
         AND (sha256 = $2 OR file_hash = (SELECT xet_file FROM blobs WHERE sha256 = $2))",
    ] {
        sqlx::query(q)
            .bind(repo_id)
            .bind(sha256)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Whether anything but old commits still needs the bytes once a repo gave
/// them up: another repo's link (LFS or inline: every repo whose commits
/// reference an object holds such a link), a pending row, or an open upload
/// session. Commits are not asked (unlike `db::lfs::blob_needed`): a commit
/// of a repo without the link cannot serve the bytes anyway.
pub async fn held_elsewhere(db: impl PgExecutor<'_>, sha256: &str) -> sqlx::Result<bool> {
    let (needed,): (bool,) = sqlx::query_as(concat!(
        "SELECT ",
        crate::db::lfs::blob_holders_but_commits!()
    ))
    .bind(sha256)
    .fetch_one(db)
    .await?;
    Ok(needed)
}
