//! Users, organizations and memberships.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Namespace {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub fullname: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub fullname: String,
    pub email: Option<String>,
    pub is_admin: bool,
    pub password_hash: Option<String>,
    pub session_version: i32,
}

/// Membership roles, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<Namespace>> {
    sqlx::query_as(
        "SELECT id, name, kind, fullname, created_at FROM namespaces WHERE lower(name) = lower($1)",
    )
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<Namespace>> {
    sqlx::query_as("SELECT id, name, kind, fullname, created_at FROM namespaces WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

const USER_COLS: &str =
    "n.id, n.name, n.fullname, u.email, u.is_admin, u.password_hash, u.session_version";

pub async fn user_by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLS} FROM namespaces n JOIN users u ON u.namespace_id = n.id WHERE lower(n.name) = lower($1)"
    ))
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn user_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<User>> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLS} FROM namespaces n JOIN users u ON u.namespace_id = n.id WHERE n.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Whether a unique violation is the cause of an error (name taken).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Creates a namespace row; `Ok(None)` when the name is taken.
pub async fn insert_namespace(
    db: impl PgExecutor<'_>,
    name: &str,
    kind: &str,
    fullname: &str,
) -> sqlx::Result<Option<i64>> {
    let r = sqlx::query("INSERT INTO namespaces (name, kind, fullname) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id")
        .bind(name)
        .bind(kind)
        .bind(fullname)
        .fetch_optional(db)
        .await?;
    Ok(r.map(|r| r.get(0)))
}

pub async fn create_user(
    db: &mut sqlx::PgConnection,
    name: &str,
    email: Option<&str>,
    password_hash: Option<&str>,
    is_admin: bool,
) -> sqlx::Result<Option<i64>> {
    let Some(id) = insert_namespace(&mut *db, name, "user", name).await? else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO users (namespace_id, email, password_hash, is_admin) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(is_admin)
    .execute(&mut *db)
    .await?;
    Ok(Some(id))
}

/// Sets the full name of a user or organization.
/// Whether new repos of the namespace are private unless created public.
pub async fn private_by_default(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    let (v,): (bool,) = sqlx::query_as("SELECT private_by_default FROM namespaces WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await?;
    Ok(v)
}

pub async fn set_private_by_default(
    db: impl PgExecutor<'_>,
    id: i64,
    private: bool,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE namespaces SET private_by_default = $2 WHERE id = $1")
        .bind(id)
        .bind(private)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_fullname(db: impl PgExecutor<'_>, id: i64, fullname: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE namespaces SET fullname = $2 WHERE id = $1")
        .bind(id)
        .bind(fullname)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_member(
    db: impl PgExecutor<'_>,
    org_id: i64,
    user_id: i64,
    role: Role,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO org_members (org_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role.as_str())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn remove_member(
    db: impl PgExecutor<'_>,
    org_id: i64,
    user_id: i64,
) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn member_role(
    db: impl PgExecutor<'_>,
    org_id: i64,
    user_id: i64,
) -> sqlx::Result<Option<Role>> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    Ok(r.and_then(|(s,)| Role::parse(&s)))
}

/// Organizations a user belongs to, with the role.
pub async fn user_orgs(
    db: impl PgExecutor<'_>,
    user_id: i64,
) -> sqlx::Result<Vec<(Namespace, Role)>> {
    let rows = sqlx::query(
        "SELECT n.id, n.name, n.kind, n.fullname, n.created_at, m.role FROM org_members m
         JOIN namespaces n ON n.id = m.org_id WHERE m.user_id = $1 ORDER BY lower(n.name)",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                Namespace {
                    id: r.get(0),
                    name: r.get(1),
                    kind: r.get(2),
                    fullname: r.get(3),
                    created_at: r.get(4),
                },
                Role::parse(r.get::<&str, _>(5)).unwrap_or(Role::Read),
            )
        })
        .collect())
}

/// A member of an organization.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub user_id: i64,
    pub name: String,
    pub fullname: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

/// A page of an organization's members, by user id.
pub async fn list_members(
    db: impl PgExecutor<'_>,
    org_id: i64,
    after_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as(
        "SELECT n.id AS user_id, n.name, n.fullname, m.role, m.created_at FROM org_members m
         JOIN namespaces n ON n.id = m.user_id
         WHERE m.org_id = $1 AND ($2::bigint IS NULL OR n.id > $2) ORDER BY n.id LIMIT $3",
    )
    .bind(org_id)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Locks an organization's membership for a change (serialises the
/// last-admin check) and counts its admins.
pub async fn lock_and_count_admins(db: &mut sqlx::PgConnection, org_id: i64) -> sqlx::Result<i64> {
    sqlx::query("SELECT id FROM namespaces WHERE id = $1 FOR UPDATE")
        .bind(org_id)
        .execute(&mut *db)
        .await?;
    let r = sqlx::query("SELECT count(*) FROM org_members WHERE org_id = $1 AND role = 'admin'")
        .bind(org_id)
        .fetch_one(&mut *db)
        .await?;
    Ok(r.get(0))
}

/// A page of users, by id.
pub async fn list_users(
    db: impl PgExecutor<'_>,
    after_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<User>> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLS} FROM namespaces n JOIN users u ON u.namespace_id = n.id
         WHERE ($1::bigint IS NULL OR n.id > $1) ORDER BY n.id LIMIT $2"
    ))
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Number of repos in a namespace.
pub async fn repo_count(db: impl PgExecutor<'_>, namespace_id: i64) -> sqlx::Result<i64> {
    let r = sqlx::query("SELECT count(*) FROM repos WHERE namespace_id = $1")
        .bind(namespace_id)
        .fetch_one(db)
        .await?;
    Ok(r.get(0))
}

/// Deletes a namespace (and, by cascade, what it holds).
pub async fn delete_namespace(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM namespaces WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends every session of a user (logout).
pub async fn bump_session_version(db: impl PgExecutor<'_>, user_id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET session_version = session_version + 1 WHERE namespace_id = $1")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}
