//! What the dashboard's browse pages need beyond `repos::list`: the filter
//! choices (tasks, libraries, licenses with counts) among the repos a viewer
//! can see, and the pending access requests of a gated repo.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, QueryBuilder, Row};

/// Filter choices with how many visible repos have each.
#[derive(Debug, Default, Clone)]
pub struct Facets {
    pub tasks: Vec<(String, i64)>,
    pub libraries: Vec<(String, i64)>,
    pub licenses: Vec<(String, i64)>,
}

/// The most common tasks, libraries and licenses of visible repos of a type.
/// `viewer` as in [`super::repos::ListQuery::viewer`].
pub async fn facets(
    db: impl PgExecutor<'_>,
    repo_type: &str,
    viewer: Option<(i64, bool)>,
) -> sqlx::Result<Facets> {
    let mut b = QueryBuilder::new(
        "SELECT r.pipeline_tag, r.library_name, r.license, count(*) AS n FROM repos r WHERE r.repo_type = ",
    );
    b.push_bind(repo_type);
    super::repos::push_visible_to(&mut b, viewer);
    b.push(
        " GROUP BY GROUPING SETS ((r.pipeline_tag), (r.library_name), (r.license)) ORDER BY n DESC",
    );
    let rows = b.build().fetch_all(db).await?;
    let mut f = Facets::default();
    for r in rows {
        let n: i64 = r.get("n");
        let (task, lib, lic): (Option<String>, Option<String>, Option<String>) =
            (r.get(0), r.get(1), r.get(2));
        // Each grouping set leaves the other columns NULL; rows whose own value is NULL are skipped.
        if let Some(t) = task {
            if f.tasks.len() < 40 {
                f.tasks.push((t, n));
            }
        } else if let Some(l) = lib {
            if f.libraries.len() < 40 {
                f.libraries.push((l, n));
            }
        } else if let Some(l) = lic {
            if f.licenses.len() < 40 {
                f.licenses.push((l, n));
            }
        }
    }
    Ok(f)
}

/// An access request to a gated repo.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessRequestRow {
    pub user_name: String,
    pub fullname: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// Access requests of a repo, pending ones first.
pub async fn access_requests(
    db: impl PgExecutor<'_>,
    repo_id: i64,
) -> sqlx::Result<Vec<AccessRequestRow>> {
    sqlx::query_as(
        "SELECT n.name AS user_name, n.fullname, a.status, a.created_at FROM access_requests a
         JOIN namespaces n ON n.id = a.user_id WHERE a.repo_id = $1
         ORDER BY (a.status = 'pending') DESC, a.created_at DESC LIMIT 500",
    )
    .bind(repo_id)
    .fetch_all(db)
    .await
}

/// Members of an organization with their roles.
pub async fn members(
    db: impl PgExecutor<'_>,
    org_id: i64,
) -> sqlx::Result<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT n.name, n.fullname, m.role FROM org_members m JOIN namespaces n ON n.id = m.user_id
         WHERE m.org_id = $1 ORDER BY lower(n.name) LIMIT 1000",
    )
    .bind(org_id)
    .fetch_all(db)
    .await
}
