//! Old names of moved repos (`repo_redirects`, see `registry::redirects`).

use sqlx::PgExecutor;

/// The repo an old name leads to, if any.
pub async fn target(
    db: impl PgExecutor<'_>,
    repo_type: &str,
    namespace: &str,
    name: &str,
) -> sqlx::Result<Option<i64>> {
    let r: Option<(i64,)> = sqlx::query_as(
        "SELECT d.repo_id FROM repo_redirects d JOIN namespaces n ON n.id = d.namespace_id
         WHERE lower(n.name) = lower($1) AND d.repo_type = $2 AND lower(d.name) = lower($3)",
    )
    .bind(namespace)
    .bind(repo_type)
    .bind(name)
    .fetch_optional(db)
    .await?;
    Ok(r.map(|r| r.0))
}

/// A name is a repo's again (created or moved there): it redirects no more.
pub async fn forget(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    repo_type: &str,
    name: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM repo_redirects
         WHERE namespace_id = $1 AND repo_type = $2 AND lower(name) = lower($3)",
    )
    .bind(namespace_id)
    .bind(repo_type)
    .bind(name)
    .execute(db)
    .await?;
    Ok(())
}

/// The repo left `namespace_id`/`name`: that name now leads to it.
pub async fn record(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    repo_type: &str,
    name: &str,
    repo_id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO repo_redirects (namespace_id, repo_type, name, repo_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (namespace_id, repo_type, lower(name))
         DO UPDATE SET name = EXCLUDED.name, repo_id = EXCLUDED.repo_id, created_at = now()",
    )
    .bind(namespace_id)
    .bind(repo_type)
    .bind(name)
    .bind(repo_id)
    .execute(db)
    .await?;
    Ok(())
}
