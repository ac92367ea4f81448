//! Webhooks: events of repos (created, moved, deleted, content pushed,
//! settings changed), of discussions and of inference endpoints, sent as
//! HTTP POSTs in the Hugging Face Hub's payload shape to the URLs users,
//! organizations' admins register (`routes::hf::webhooks`).
//!
//! Outbox: [`enqueue`] runs inside the transaction of the change, so an event
//! exists exactly when its change committed, and the commit never waits for
//! a receiver. It writes one `webhook_events` row and one `webhook_deliveries`
//! row per webhook whose watch list, domains and owner's read access match;
//! with no matching webhook it writes nothing (one indexed query). It also
//! sends a NOTIFY, delivered at commit, that wakes every replica's sender.
//! `delivery` sends them from every replica (claim with `FOR UPDATE SKIP
//! LOCKED` and a lease, retries with exponential backoff, attempt log);
//! `target` is the SSRF allow-list.
//!
//! Payload (version 3, as the Hub's):
//! `{"event": {"action", "scope", "id"}, "repo": {"type", "name", "id",
//! "private", "url": {"web", "api"}, "headSha", "owner": {"id"}},
//! "updatedRefs"?, "updatedConfig"?, "movedTo"?, "discussion"?, "comment"?,
//! "webhook": {"id", "version": 3}}`; endpoint events carry `endpoint`
//! instead of `repo`. `event.id` is the same on every attempt and redelivery
//! of one event: receivers deduplicate by it.
//!
//! Headers: `X-Webhook-Secret: <secret>` (as the Hub) and
//! `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body keyed with
//! the secret>` when the webhook has a secret; `X-Webhook-Event-Id`,
//! `X-Webhook-Delivery-Id`.

pub mod delivery;
pub mod target;

use serde_json::{json, Value};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// The payload version (`webhook.version`), as the Hub's.
pub const PAYLOAD_VERSION: i64 = 3;
/// The signature header: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// The domains a webhook may watch: the Hub's two, and inference endpoints.
pub const DOMAINS: &[&str] = &["repo", "discussion", "endpoint"];

/// Delivery settings (command line: `--webhook-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Allow loopback, private, link-local, CGNAT and unique-local targets.
    pub allow_private: bool,
    /// Whole-request timeout of one attempt (connect, send, response head and snippet).
    pub timeout: Duration,
    /// Attempts before a delivery is given up (`failed`).
    pub max_attempts: i32,
    /// Wait after the first failed attempt; doubled after each next one.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// How long a claim holds a delivery: a replica that dies mid-send
    /// leaves it due again after this long. Longer than `timeout`.
    pub lease: Duration,
    /// How often an idle replica looks for due deliveries.
    pub poll: Duration,
    /// Deliveries one replica sends at once.
    pub batch: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            batch: 16,
        }
    }
}

impl Settings {
    /// From the command line / environment.
    pub fn from_config(c: &crate::config::Config) -> Self {
        let timeout = Duration::from_secs(u64::from(c.webhook_timeout_secs));
        Self {
            allow_private: c.webhook_allow_private,
            timeout,
            max_attempts: c.webhook_max_attempts as i32,
            lease: c
                .webhook_lease_secs
                .map(|s| Duration::from_secs(u64::from(s.max(1))))
                .unwrap_or(timeout * 2 + Duration::from_secs(30)),
            ..Self::default()
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failed ones.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).clamp(0, 20) as u32);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// A ref a change moved (`updatedRefs`): `None` for a created or deleted ref.
#[derive(Debug, Clone)]
pub struct UpdatedRef {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What happened. Repo events are sent to webhooks watching the repo or its
/// namespace; endpoint events to those watching the endpoint's namespace.
#[derive(Debug, Clone)]
pub enum Event {
    /// `repo` / `create` (after the repo row is written).
    RepoCreated { repo_id: i64 },
    /// `repo` / `delete` (before the repo row is deleted).
    RepoDeleted { repo_id: i64 },
    /// `repo` / `move` (after the rename; `from` is the old `ns/name`).
    RepoMoved { repo_id: i64, from: String },
    /// `repo.content` / `update`: a branch or tag was created, moved or deleted.
    RefUpdated { repo_id: i64, updated: UpdatedRef },
    /// `repo.config` / `update`: settings changed (`{"private": true}`, `{"gated": "auto"}`).
    ConfigChanged { repo_id: i64, config: Value },
    /// `discussion` (or `discussion.comment` with a comment) / `create`,
    /// `update`: sent by `registry::discussions`, which passes the Hub's
    /// `discussion` object (`{id, num, title, url, status, isPullRequest,
    /// author, ...}`) and `comment` object.
    Discussion {
        repo_id: i64,
        action: &'static str,
        discussion: Value,
        comment: Option<Value>,
    },
    /// `endpoint` / `update`: an inference endpoint's status changed.
    EndpointStatus { endpoint_id: i64 },
}

/// Records `event` for every webhook it matches, inside the caller's
/// transaction (see the module docs). Errors abort the caller's change: an
/// event is never lost while its change commits.
pub async fn enqueue(db: &mut PgConnection, event: Event) -> sqlx::Result<()> {
    match event {
        Event::RepoCreated { repo_id } => {
            repo_event(db, repo_id, "repo", "repo", "create", |_| {}).await
        }
        Event::RepoDeleted { repo_id } => {
            repo_event(db, repo_id, "repo", "repo", "delete", |_| {}).await
        }
        Event::RepoMoved { repo_id, from } => {
            repo_event(db, repo_id, "repo", "repo", "move", move |p| {
                // As the Hub: `repo` is the old name, `movedTo` the new one.
                let to = p["repo"]["name"].clone();
                p["movedTo"] = json!({"name": to, "owner": p["repo"]["owner"].clone()});
                p["repo"]["name"] = json!(from);
            })
            .await
        }
        Event::RefUpdated { repo_id, updated } => {
            repo_event(db, repo_id, "repo", "repo.content", "update", move |p| {
                p["updatedRefs"] = json!([{
                    "ref": updated.name,
                    "oldSha": updated.old,
                    "newSha": updated.new,
                }]);
            })
            .await
        }
        Event::ConfigChanged { repo_id, config } => {
            repo_event(db, repo_id, "repo", "repo.config", "update", move |p| {
                p["updatedConfig"] = config;
            })
            .await
        }
        Event::Discussion {
            repo_id,
            action,
            discussion,
            comment,
        } => {
            let scope = if comment.is_some() {
                "discussion.comment"
            } else {
                "discussion"
            };
            repo_event(db, repo_id, "discussion", scope, action, move |p| {
                p["discussion"] = discussion;
                if let Some(c) = comment {
                    p["comment"] = c;
                }
            })
            .await
        }
        Event::EndpointStatus { endpoint_id } => endpoint_event(db, endpoint_id).await,
    }
}

/// The repo and the webhooks an event of `domain` on it goes to: watching
/// the repo or its namespace, enabled, and owned by someone who may read it
/// (a private repo's events go only to webhooks of its own namespace or of
/// its organization's members).
const REPO_MATCH: &str = "
    SELECT r.namespace_id, n.name AS namespace, r.name, r.repo_type, r.private,
           (SELECT commit_oid FROM refs WHERE repo_id = r.id AND name = 'refs/heads/main') AS head,
           array_agg(DISTINCT w.id) AS hooks
    FROM repos r
    JOIN namespaces n ON n.id = r.namespace_id
    JOIN webhook_watches ww ON ww.repo_id = r.id OR ww.namespace_id = r.namespace_id
    JOIN webhooks w ON w.id = ww.webhook_id
    WHERE r.id = $1 AND NOT w.disabled AND $2 = ANY(w.domains)
      AND (NOT r.private OR w.owner_id = r.namespace_id
           OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = r.namespace_id AND m.user_id = w.owner_id))
    GROUP BY r.id, n.name";

#[derive(sqlx::FromRow)]
struct RepoMatch {
    namespace_id: i64,
    namespace: String,
    name: String,
    repo_type: String,
    private: bool,
    head: Option<String>,
    hooks: Vec<Uuid>,
}

async fn repo_event(
    db: &mut PgConnection,
    repo_id: i64,
    domain: &str,
    scope: &str,
    action: &str,
    finish: impl FnOnce(&mut Value),
) -> sqlx::Result<()> {
    let Some(m): Option<RepoMatch> = sqlx::query_as(REPO_MATCH)
        .bind(repo_id)
        .bind(domain)
        .fetch_optional(&mut *db)
        .await?
    else {
        return Ok(());
    };
    let id = Uuid::new_v4();
    let full = if m.namespace == crate::domain::names::ROOT_NAMESPACE {
        m.name.clone()
    } else {
        format!("{}/{}", m.namespace, m.name)
    };
    let mut payload = json!({
        "event": {"action": action, "scope": scope, "id": id},
        "repo": {
            "type": m.repo_type,
            "name": full,
            "id": repo_id.to_string(),
            "private": m.private,
            "headSha": m.head,
            "owner": {"id": m.namespace_id.to_string()},
        },
    });
    finish(&mut payload);
    insert(db, id, scope, action, &payload, &m.hooks).await
}

async fn endpoint_event(db: &mut PgConnection, endpoint_id: i64) -> sqlx::Result<()> {
    endpoint_statuses(db, &[endpoint_id]).await
}

/// [`Event::EndpointStatus`] for several endpoints at once (the scheduler's
/// batched status changes): one query finds the webhooks of all of them.
pub async fn endpoint_statuses(db: &mut PgConnection, endpoint_ids: &[i64]) -> sqlx::Result<()> {
    #[derive(sqlx::FromRow)]
    struct EndpointMatch {
        namespace: String,
        name: String,
        repository: String,
        revision: Option<String>,
        status: String,
        message: Option<String>,
        hooks: Vec<Uuid>,
    }
    if endpoint_ids.is_empty() {
        return Ok(());
    }
    let found: Vec<EndpointMatch> = sqlx::query_as(
        "SELECT n.name AS namespace, e.name, e.repository, e.revision, e.status, e.message,
                array_agg(DISTINCT w.id) AS hooks
         FROM endpoints e
         JOIN namespaces n ON n.id = e.namespace_id
         JOIN webhook_watches ww ON ww.namespace_id = e.namespace_id
         JOIN webhooks w ON w.id = ww.webhook_id
         WHERE e.id = ANY($1) AND NOT w.disabled AND 'endpoint' = ANY(w.domains)
           AND (w.owner_id = e.namespace_id
                OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = e.namespace_id AND m.user_id = w.owner_id))
         GROUP BY e.id, n.name",
    )
    .bind(endpoint_ids)
    .fetch_all(&mut *db)
    .await?;
    for m in found {
        let id = Uuid::new_v4();
        let payload = json!({
            "event": {"action": "update", "scope": "endpoint", "id": id},
            "endpoint": {
                "namespace": m.namespace,
                "name": m.name,
                "repository": m.repository,
                "revision": m.revision,
                "status": m.status,
                "message": m.message,
            },
        });
        insert(db, id, "endpoint", "update", &payload, &m.hooks).await?;
    }
    Ok(())
}

async fn insert(
    db: &mut PgConnection,
    id: Uuid,
    scope: &str,
    action: &str,
    payload: &Value,
    hooks: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO webhook_events (id, scope, action, payload) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(scope)
        .bind(action)
        .bind(sqlx::types::Json(payload))
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id)
         SELECT gen_random_uuid(), w, $1 FROM unnest($2::uuid[]) AS w",
    )
    .bind(id)
    .bind(hooks)
    .execute(&mut *db)
    .await?;
    // Wakes every replica's delivery task when the change commits (sent
    // only then; a lost notification costs one poll interval).
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(delivery::WAKE_CHANNEL)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// The body sent for a stored event: the payload with `repo.url` (from the
/// hub's public URL) and `webhook` added. The same bytes on every attempt.
pub fn body(payload: &Value, webhook_id: Uuid, public_url: &str) -> Vec<u8> {
    let mut p = payload.clone();
    if let (Some(kind), Some(name)) = (
        p["repo"]["type"].as_str().map(str::to_string),
        p["repo"]["name"].as_str().map(str::to_string),
    ) {
        let web = if kind == "dataset" {
            format!("{public_url}/datasets/{name}")
        } else {
            format!("{public_url}/{name}")
        };
        p["repo"]["url"] = json!({"web": web, "api": format!("{public_url}/api/{kind}s/{name}")});
    }
    p["webhook"] = json!({"id": webhook_id, "version": PAYLOAD_VERSION});
    serde_json::to_vec(&p).expect("a JSON value serializes")
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Settings::default();
        assert_eq!(s.backoff(1), Duration::from_secs(10));
        assert_eq!(s.backoff(2), Duration::from_secs(20));
        assert_eq!(s.backoff(4), Duration::from_secs(80));
        assert_eq!(s.backoff(30), Duration::from_secs(3600));
    }

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
