//! Webhooks, what they watch, and their deliveries and attempts (the queue's
//! own statements are in `webhooks` and `webhooks::delivery`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub owner_id: i64,
    pub owner: String,
    pub url: String,
    pub has_secret: bool,
    pub domains: Vec<String>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLS: &str = "w.id, w.owner_id, n.name AS owner, w.url, (w.secret IS NOT NULL) AS has_secret,
    w.domains, w.disabled, w.created_at, w.updated_at";

/// One watched item, named as it is now (a moved repo by its new name).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WatchRow {
    pub kind: String,
    pub name: String,
}

/// A watch target, resolved to its id.
#[derive(Debug, Clone, Copy)]
pub enum Watch {
    Namespace { kind: &'static str, id: i64 },
    Repo { kind: &'static str, id: i64 },
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<WebhookRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM webhooks w JOIN namespaces n ON n.id = w.owner_id WHERE w.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Webhooks owned by the user or by an organization they administer.
pub async fn list_for(db: impl PgExecutor<'_>, user_id: i64) -> sqlx::Result<Vec<WebhookRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM webhooks w JOIN namespaces n ON n.id = w.owner_id
         WHERE w.owner_id = $1
            OR w.owner_id IN (SELECT org_id FROM org_members WHERE user_id = $1 AND role = 'admin')
         ORDER BY w.created_at, w.id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}

pub async fn watches(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Vec<WatchRow>> {
    sqlx::query_as(
        "SELECT ww.kind,
                CASE WHEN ww.repo_id IS NULL THEN n.name
                     WHEN rn.name = '_root' THEN r.name
                     ELSE rn.name || '/' || r.name END AS name
         FROM webhook_watches ww
         LEFT JOIN namespaces n ON n.id = ww.namespace_id
         LEFT JOIN repos r ON r.id = ww.repo_id
         LEFT JOIN namespaces rn ON rn.id = r.namespace_id
         WHERE ww.webhook_id = $1
         ORDER BY ww.kind, name",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// How many webhooks `owner_id` owns, with the owner's namespace row locked
/// until the transaction ends.
pub async fn count_locked(db: &mut PgConnection, owner_id: i64) -> sqlx::Result<i64> {
    sqlx::query("SELECT id FROM namespaces WHERE id = $1 FOR NO KEY UPDATE")
        .bind(owner_id)
        .execute(&mut *db)
        .await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhooks WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(&mut *db)
        .await?;
    Ok(n)
}

pub struct NewWebhook<'a> {
    pub owner_id: i64,
    pub created_by: i64,
    pub url: &'a str,
    pub secret: Option<&'a str>,
    pub domains: &'a [String],
}

pub async fn insert(db: &mut PgConnection, w: &NewWebhook<'_>) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhooks (id, owner_id, created_by, url, secret, domains) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(w.owner_id)
    .bind(w.created_by)
    .bind(w.url)
    .bind(w.secret)
    .bind(w.domains)
    .execute(&mut *db)
    .await?;
    Ok(id)
}

/// Replaces what a webhook watches.
pub async fn set_watches(db: &mut PgConnection, id: Uuid, watches: &[Watch]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM webhook_watches WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut *db)
        .await?;
    for w in watches {
        let (kind, ns, repo) = match *w {
            Watch::Namespace { kind, id } => (kind, Some(id), None),
            Watch::Repo { kind, id } => (kind, None, Some(id)),
        };
        sqlx::query(
            "INSERT INTO webhook_watches (webhook_id, kind, namespace_id, repo_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(ns)
        .bind(repo)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Changes the fields given (`secret: Some(None)` removes it).
pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    url: Option<&str>,
    domains: Option<&[String]>,
    secret: Option<Option<&str>>,
    disabled: Option<bool>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhooks SET url = COALESCE($2, url), domains = COALESCE($3, domains),
             secret = CASE WHEN $4 THEN $5 ELSE secret END,
             disabled = COALESCE($6, disabled), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(url)
    .bind(domains)
    .bind(secret.is_some())
    .bind(secret.flatten())
    .bind(disabled)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub seq: i64,
    pub event_id: Uuid,
    pub scope: String,
    pub action: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub redelivery_of: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub payload: sqlx::types::Json<serde_json::Value>,
}

const DELIVERY_COLS: &str = "d.id, d.seq, d.event_id, e.scope, e.action, d.state, d.attempts,
    d.next_attempt_at, d.redelivery_of, d.created_at, d.finished_at, e.payload";

/// A webhook's deliveries, newest first, before the one numbered `before`.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    webhook_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
         WHERE d.webhook_id = $1 AND ($2::bigint IS NULL OR d.seq < $2)
         ORDER BY d.seq DESC LIMIT $3"
    ))
    .bind(webhook_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn delivery(
    db: impl PgExecutor<'_>,
    webhook_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<DeliveryRow>> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
         WHERE d.webhook_id = $1 AND d.id = $2"
    ))
    .bind(webhook_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub response: Option<String>,
    pub error: Option<String>,
}

/// The attempts of some deliveries, in order.
pub async fn attempts(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "SELECT delivery_id, attempt, started_at, status_code, latency_ms, response, error
         FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt, id",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Queues the event of delivery `of` again for its webhook (and wakes the
/// delivery tasks at commit); the new delivery's id.
pub async fn redeliver(
    db: &mut PgConnection,
    webhook_id: Uuid,
    of: Uuid,
) -> sqlx::Result<Option<Uuid>> {
    let id = Uuid::new_v4();
    let r = sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, redelivery_of)
         SELECT $1, webhook_id, event_id, id FROM webhook_deliveries WHERE id = $2 AND webhook_id = $3",
    )
    .bind(id)
    .bind(of)
    .bind(webhook_id)
    .execute(&mut *db)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(crate::webhooks::delivery::WAKE_CHANNEL)
        .execute(&mut *db)
        .await?;
    Ok(Some(id))
}
