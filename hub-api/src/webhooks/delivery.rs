//! Sends the deliveries `webhooks::enqueue` queued, from every hub replica.
//!
//! Each replica's task ([`spawn`]) claims due deliveries in one statement
//! (`FOR UPDATE SKIP LOCKED`, so replicas never take the same one): the claim
//! counts the attempt, stamps a claim id and pushes the due time to the end
//! of a lease. The send has a timeout, follows no redirect, uses no proxy
//! and connects only to allowed addresses (`target`). The outcome (status,
//! latency, at most 1 KiB of the response, or the error) is logged as an
//! attempt, and the delivery becomes `delivered` (2xx), `failed` (after
//! `max_attempts`) or due again after an exponential backoff, but only
//! under the same claim: a replica killed mid-send records nothing, and the
//! delivery is sent again once the lease ends (a retry, with the same event
//! id). A delivery is sent only under a claim, so never twice except on retry.

use super::{body, signature, target, Settings, SIGNATURE_HEADER};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most of a response body kept in the attempt log.
pub const SNIPPET_BYTES: usize = 1024;

/// A delivery this replica claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub claim: Uuid,
    pub attempts: i32,
    pub webhook_id: Uuid,
    pub url: String,
    pub secret: Option<String>,
    pub disabled: bool,
    pub event_id: Uuid,
    pub payload: sqlx::types::Json<serde_json::Value>,
}

/// What one attempt got.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: Option<u16>,
    pub response: Option<String>,
    pub error: Option<String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The HTTP client of deliveries: no redirects, no proxy, the SSRF resolver.
pub fn client(settings: &Settings) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .pool_max_idle_per_host(2)
        .user_agent(concat!("Paddock-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(std::sync::Arc::new(target::GuardedResolver {
            allow_private: settings.allow_private,
        }))
        .build()
        .expect("a client from static settings")
}

/// The NOTIFY channel `webhooks::enqueue` wakes the delivery tasks on.
pub const WAKE_CHANNEL: &str = "paddock_webhooks";

/// Starts this replica's delivery task; it runs until the returned handle
/// is aborted or the runtime stops. It wakes on `enqueue`'s NOTIFY, when a
/// send ends, and at least every `poll`. Up to `batch` sends run at once,
/// each on its own task, so a receiver that hangs holds one slot until its
/// timeout, not the others.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    let bell = std::sync::Arc::new(crate::signals::Bell::listen(
        state.db.clone(),
        WAKE_CHANNEL,
        "webhooks",
    ));
    tokio::spawn(async move {
        let settings = state.tenancy.webhooks.clone();
        let client = client(&settings);
        let slots =
            std::sync::Arc::new(tokio::sync::Semaphore::new(settings.batch.max(1) as usize));
        let mut sends = tokio::task::JoinSet::new();
        let mut pruned = Instant::now();
        loop {
            while sends.try_join_next().is_some() {}
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                if let Err(e) = prune(&state, RETENTION).await {
                    tracing::warn!(error = %e, "webhooks: pruning old deliveries failed");
                }
            }
            let free = slots.available_permits();
            let claimed = if free == 0 {
                Ok(Vec::new())
            } else {
                claim(&state, free as i64).await
            };
            let got = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: claiming deliveries failed");
                    Vec::new()
                }
            };
            let busy = !got.is_empty() && got.len() == free;
            for c in got {
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                let (state, client, bell) = (state.clone(), client.clone(), bell.clone());
                sends.spawn(async move {
                    deliver(&state, &client, &c).await;
                    drop(permit);
                    // A slot is free, and a retry may be due soon.
                    bell.ring();
                });
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(settings.poll) => {}
                    _ = bell.rung() => {}
                }
            }
        }
    })
}

/// How long finished deliveries (and their attempts) are kept.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often each replica prunes (any replica may; the statements are idempotent).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes deliveries finished more than `keep` ago, then events no delivery
/// refers to any more; answers how many deliveries went.
pub async fn prune(state: &AppState, keep: Duration) -> sqlx::Result<u64> {
    let gone = sqlx::query(
        "DELETE FROM webhook_deliveries
         WHERE state <> 'pending' AND finished_at < now() - make_interval(secs => $1)",
    )
    .bind(keep.as_secs_f64())
    .execute(&state.db)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM webhook_events e
         WHERE e.created_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)",
    )
    .bind(keep.as_secs_f64())
    .execute(&state.db)
    .await?;
    Ok(gone)
}

/// Sends one claimed delivery and records the outcome.
pub async fn deliver(state: &AppState, client: &reqwest::Client, c: &Claimed) {
    let (started, latency, outcome) = send(state, client, c).await;
    if let Err(e) = finish(state, c, started, latency, &outcome).await {
        tracing::warn!(error = %e, delivery = %c.id, "webhooks: recording an attempt failed");
    }
}

/// Claims up to `limit` due deliveries for one lease.
pub async fn claim(state: &AppState, limit: i64) -> sqlx::Result<Vec<Claimed>> {
    let s = &state.tenancy.webhooks;
    sqlx::query_as(
        "WITH due AS (
             SELECT id FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, seq LIMIT $1
             FOR UPDATE SKIP LOCKED)
         UPDATE webhook_deliveries d
         SET attempts = d.attempts + 1, claim = $2,
             next_attempt_at = now() + make_interval(secs => $3)
         FROM due, webhooks w, webhook_events e
         WHERE d.id = due.id AND w.id = d.webhook_id AND e.id = d.event_id
         RETURNING d.id, d.claim, d.attempts, d.webhook_id, w.url, w.secret, w.disabled,
                   d.event_id, e.payload",
    )
    .bind(limit)
    .bind(Uuid::new_v4())
    .bind(s.lease.as_secs_f64())
    .fetch_all(&state.db)
    .await
}

/// One attempt: (start, latency, outcome).
pub async fn send(
    state: &AppState,
    client: &reqwest::Client,
    c: &Claimed,
) -> (DateTime<Utc>, Duration, Outcome) {
    let started = Utc::now();
    let t = Instant::now();
    let outcome = attempt(state, client, c).await;
    (started, t.elapsed(), outcome)
}

async fn attempt(state: &AppState, client: &reqwest::Client, c: &Claimed) -> Outcome {
    let fail = |e: String| Outcome {
        error: Some(e),
        ..Outcome::default()
    };
    if c.disabled {
        return fail("the webhook is disabled".into());
    }
    let settings = &state.tenancy.webhooks;
    let url = match target::parse_url(&c.url) {
        Ok(u) => u,
        Err(e) => return fail(e.to_string()),
    };
    // IP-literal hosts skip the resolver: checked here.
    if let Some(ip) = target::ip_host(&url) {
        if let Err(why) = target::allowed(ip, settings.allow_private) {
            return fail(format!(
                "webhook target refused: {} is {why}; only public addresses are allowed",
                url.host_str().unwrap_or_default()
            ));
        }
    }
    let body = body(&c.payload.0, c.webhook_id, &state.public_url);
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Webhook-Event-Id", c.event_id.to_string())
        .header("X-Webhook-Delivery-Id", c.id.to_string());
    if let Some(secret) = c.secret.as_deref().filter(|s| !s.is_empty()) {
        req = req
            .header("X-Webhook-Secret", secret)
            .header(SIGNATURE_HEADER, signature(secret, &body));
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => return fail(error_chain(&e)),
    };
    let status = resp.status().as_u16();
    let (response, error) = snippet(resp).await;
    let error = error.or_else(|| {
        (300..400)
            .contains(&status)
            .then(|| "the receiver answered a redirect, which is not followed".to_string())
    });
    Outcome {
        status: Some(status),
        response: Some(response),
        error,
    }
}

/// At most [`SNIPPET_BYTES`] of a response body (the rest is not read).
async fn snippet(mut resp: reqwest::Response) -> (String, Option<String>) {
    let mut buf = Vec::new();
    let mut error = None;
    while buf.len() < SNIPPET_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => {
                error = Some(error_chain(&e));
                break;
            }
        }
    }
    buf.truncate(SNIPPET_BYTES);
    (String::from_utf8_lossy(&buf).into_owned(), error)
}

/// The error and its causes, for the attempt log (reqwest's own message
/// hides the cause, such as the resolver's refusal).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    crate::error::clip(&out, 1000)
}

/// Logs the attempt and moves the delivery on, if this replica's claim still
/// holds it.
pub async fn finish(
    state: &AppState,
    c: &Claimed,
    started: DateTime<Utc>,
    latency: Duration,
    o: &Outcome,
) -> sqlx::Result<()> {
    let s = &state.tenancy.webhooks;
    let (next_state, retry_in) = if o.ok() {
        ("delivered", Duration::ZERO)
    } else if c.attempts >= s.max_attempts || c.disabled {
        ("failed", Duration::ZERO)
    } else {
        ("pending", s.backoff(c.attempts))
    };
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, response, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.id)
    .bind(c.attempts)
    .bind(started)
    .bind(o.status.map(i32::from))
    .bind(latency.as_millis().min(i32::MAX as u128) as i32)
    .bind(o.response.as_deref())
    .bind(o.error.as_deref())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries
         SET state = $3, claim = NULL, next_attempt_at = now() + make_interval(secs => $4),
             finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
         WHERE id = $1 AND claim = $2",
    )
    .bind(c.id)
    .bind(c.claim)
    .bind(next_state)
    .bind(retry_in.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let outcome = match next_state {
        "pending" => "retry",
        other => other,
    };
    state.metrics.webhook_attempts.inc(&[outcome]);
    state
        .metrics
        .webhook_attempt_duration
        .observe(&[], latency.as_secs_f64());
    tracing::info!(
        delivery = %c.id,
        webhook = %c.webhook_id,
        attempt = c.attempts,
        status = o.status,
        duration_ms = latency.as_millis() as u64,
        outcome = next_state,
        "webhook delivery attempt"
    );
    Ok(())
}
