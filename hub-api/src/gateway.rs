//! The endpoint gateway: `/endpoints/{namespace}/{name}/...`. It
//! authenticates (protected endpoints need a token of the owning namespace
//! with the `inference` or `write` scope), wakes a scaled-to-zero endpoint and
//! holds the request (bounded) until a replica is ready, proxies to the ready
//! replica with the fewest requests in flight (retrying another replica if a
//! worker is gone), streams the worker's response to the client as it comes,
//! and records usage per request: prompt and completion tokens by the metering
//! contract of [`hub_types::metering`] (headers of a non-streamed response; the
//! usage event of a streamed one, stripped by [`sse::UsageFilter`]; a stream
//! that ends without it, because the client left or the worker died, is
//! recorded with one completion token per `data:` event forwarded, an
//! approximation). Before forwarding, the endpoint's namespace's daily token
//! quota is checked ([`crate::token_quota`]).
//!
//! The hot path makes no database round trip when it can help it: an
//! endpoint's row and its ready replicas are cached per process for
//! [`ROUTE_TTL`] (dropped at once when this process changes the endpoint;
//! other hub replicas see a change within the TTL, and a replica that went
//! away is caught by the connect-failure retry), and usage records are
//! buffered and written in batches every [`USAGE_FLUSH`] (reading usage on a
//! process flushes its buffer first).

use crate::auth::access::{self, Action, Standing};
use crate::auth::{Auth, Credential};
use crate::db;
use crate::db::endpoints::{EndpointRow, UsageRecord};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::token_quota::TokenQuotas;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use hub_types::metering::{INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a request to a cold endpoint is held waiting for a replica.
pub const WAKE_WAIT: Duration = Duration::from_secs(60);
mod relay;
pub mod sse;

/// Longest silence of a worker (before its headers, or between two chunks of its body)
/// before the gateway gives up on it. There is no limit on a whole response: a
/// generation stream lasts as long as it produces.
pub const WORKER_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest request body the gateway forwards.
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// How long an endpoint's row and ready replicas are reused without asking the database.
pub const ROUTE_TTL: Duration = Duration::from_secs(1);
/// How long usage records wait in memory before they are written (in one batch).
pub const USAGE_FLUSH: Duration = Duration::from_millis(100);

/// A ready replica: id, worker URL, gateway secret, requests in flight it reported.
type Candidate = (Uuid, String, String, i32);

struct Route {
    at: Instant,
    endpoint: EndpointRow,
    candidates: Vec<Candidate>,
}

/// Per-process routing state: requests in flight per replica, replicas that
/// just failed, and the HTTP client used to reach workers.
pub struct Live {
    in_flight: Mutex<HashMap<Uuid, u32>>,
    /// Replicas whose worker refused a connection, with when.
    suspect: Mutex<HashMap<Uuid, Instant>>,
    /// Endpoint rows and ready replicas by lower-cased `(namespace, name)`.
    routes: Mutex<HashMap<(String, String), Route>>,
    /// Usage records not yet written, and whether a flush is scheduled.
    usage: Mutex<Vec<UsageRecord>>,
    flush_scheduled: AtomicBool,
    pub client: reqwest::Client,
    /// Daily token quotas and today's totals per namespace.
    pub quotas: TokenQuotas,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            usage: Mutex::new(Vec::new()),
            flush_scheduled: AtomicBool::new(false),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .read_timeout(WORKER_READ_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            quotas: TokenQuotas::default(),
        }
    }
}

/// A request in flight on a replica, until dropped (with the response body it relays).
struct InFlight {
    live: Arc<Live>,
    id: Uuid,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.live.in_flight.lock().expect("lock");
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Live {
    /// Forgets cached routes (after this process changed an endpoint).
    pub fn forget_routes(&self) {
        self.routes.lock().expect("lock").clear();
    }

    /// The endpoint and its ready replicas, from the cache when fresh.
    async fn route(
        &self,
        db: &sqlx::PgPool,
        ns: &str,
        name: &str,
    ) -> ApiResult<(EndpointRow, Vec<Candidate>)> {
        let key = (ns.to_lowercase(), name.to_lowercase());
        if let Some(r) = self.routes.lock().expect("lock").get(&key) {
            if r.at.elapsed() < ROUTE_TTL {
                return Ok((r.endpoint.clone(), r.candidates.clone()));
            }
        }
        let e = db::endpoints::get(db, ns, name)
            .await?
            .ok_or(ApiError::NotFound("endpoint"))?;
        let candidates = db::endpoints::routable(db, e.id).await?;
        if !candidates.is_empty() {
            let mut routes = self.routes.lock().expect("lock");
            if routes.len() > 10_000 {
                routes.retain(|_, r| r.at.elapsed() < ROUTE_TTL);
            }
            routes.insert(
                key,
                Route {
                    at: Instant::now(),
                    endpoint: e.clone(),
                    candidates: candidates.clone(),
                },
            );
        }
        Ok((e, candidates))
    }

    /// Buffers a usage record; a flush is scheduled [`USAGE_FLUSH`] later.
    fn record_usage(self: &Arc<Self>, db: &sqlx::PgPool, rec: UsageRecord) {
        self.usage.lock().expect("lock").push(rec);
        if !self.flush_scheduled.swap(true, Ordering::AcqRel) {
            let live = self.clone();
            let db = db.clone();
            tokio::spawn(async move {
                tokio::time::sleep(USAGE_FLUSH).await;
                live.flush_usage(&db).await;
            });
        }
    }

    /// Writes buffered usage records in one statement and marks their
    /// endpoints as recently used (the scale-to-zero clock).
    pub async fn flush_usage(&self, db: &sqlx::PgPool) {
        self.flush_scheduled.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *self.usage.lock().expect("lock"));
        if batch.is_empty() {
            return;
        }
        if let Err(err) = db::endpoints::insert_usage(db, &batch).await {
            tracing::warn!(error = %err, records = batch.len(), "recording usage failed");
        }
        let ids: Vec<i64> = batch
            .iter()
            .map(|r| r.endpoint_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if let Err(err) = db::endpoints::touch_requests(db, &ids).await {
            tracing::warn!(error = %err, "marking endpoints used failed");
        }
    }

    fn pick(&self, candidates: &[Candidate], skip: &[Uuid]) -> Option<(Uuid, String, String)> {
        let suspect = self.suspect.lock().expect("lock");
        let m = self.in_flight.lock().expect("lock");
        candidates
            .iter()
            .filter(|(id, ..)| !skip.contains(id))
            .filter(|(id, ..)| {
                suspect
                    .get(id)
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            })
            .min_by_key(|(id, _, _, reported)| {
                m.get(id).copied().unwrap_or(0) * 4 + (*reported).max(0) as u32
            })
            .map(|(id, url, secret, _)| (*id, url.clone(), secret.clone()))
    }

    fn enter(self: &Arc<Self>, id: Uuid) -> InFlight {
        *self.in_flight.lock().expect("lock").entry(id).or_insert(0) += 1;
        InFlight {
            live: self.clone(),
            id,
        }
    }

    fn mark_suspect(&self, id: Uuid) {
        self.suspect
            .lock()
            .expect("lock")
            .insert(id, Instant::now());
    }
}

/// Whether the caller may call this endpoint (`access::decide`): 401 for
/// anonymous callers of a protected endpoint, 404 for outsiders (as for
/// private repos). Answers the caller's token id, for usage records.
async fn authorize(state: &AppState, auth: &Auth, e: &EndpointRow) -> ApiResult<Option<i64>> {
    let p = auth.principal();
    let action = Action::CallEndpoint {
        protected: e.access != "public",
    };
    let standing = if action == (Action::CallEndpoint { protected: false }) {
        // Anyone may call a public endpoint: no need to look the caller up.
        Standing::namespace(&e.namespace, None, "endpoint")
    } else {
        Standing::load_in(&state.db, p, e.namespace_id, &e.namespace, "endpoint").await?
    };
    access::decide(p, &standing, action)?;
    Ok(match p.map(|p| &p.credential) {
        Some(Credential::Token { id, .. }) => Some(*id),
        _ => None,
    })
}

/// One request to meter, once it ends.
struct Metered {
    state: web::Data<AppState>,
    endpoint: EndpointRow,
    token_id: Option<i64>,
    started: Instant,
    status: u16,
    input_tokens: i64,
    output_tokens: i64,
}

impl Metered {
    /// Buffers the usage record and counts the tokens against today's quota.
    fn record(self) {
        let clamp = |n: i64| n.clamp(0, i32::MAX as i64) as i32;
        let rec = UsageRecord {
            namespace_id: self.endpoint.namespace_id,
            endpoint_id: self.endpoint.id,
            endpoint_name: self.endpoint.name.clone(),
            token_id: self.token_id,
            input_tokens: clamp(self.input_tokens),
            output_tokens: clamp(self.output_tokens),
            latency_ms: self.started.elapsed().as_secs_f32() * 1000.0,
            status: self.status as i32,
        };
        self.state.live.quotas.add(
            self.endpoint.namespace_id,
            rec.input_tokens as i64 + rec.output_tokens as i64,
        );
        self.state.live.record_usage(&self.state.db, rec);
    }
}

/// A token count in a worker's response header (0 when absent or malformed).
fn count_header(h: &reqwest::header::HeaderMap, name: &str) -> i64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(0)
}

/// `ANY /endpoints/{namespace}/{name}[/{tail}]`.
pub async fn proxy(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let started = Instant::now();
    let ns = req.match_info().get("ns").unwrap_or_default().to_string();
    let name = req.match_info().get("name").unwrap_or_default().to_string();
    let tail = req
        .match_info()
        .get("tail")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    if tail.split('/').any(|s| s == ".." || s == ".") {
        return Err(ApiError::InvalidPath(format!("{tail:?}")));
    }
    let (e, mut candidates) = state.live.route(&state.db, &ns, &name).await?;
    let token_id = authorize(&state, &auth, &e).await?;
    if body.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge(format!(
            "request bodies are limited to {MAX_BODY} bytes"
        )));
    }
    if e.paused {
        return Err(ApiError::Unavailable(
            "this endpoint is paused; resume it first".to_string(),
        ));
    }
    state
        .live
        .quotas
        .check(&state.db, e.namespace_id, &e.namespace)
        .await?;
    let meter = |status: u16| Metered {
        state: state.clone(),
        endpoint: e.clone(),
        token_id,
        started,
        status,
        input_tokens: 0,
        output_tokens: 0,
    };
    let deadline = Instant::now() + WAKE_WAIT;
    let mut tried: Vec<Uuid> = Vec::new();
    let mut woke = false;
    let mut first = true;
    loop {
        if !first {
            candidates = db::endpoints::routable(&state.db, e.id).await?;
        }
        first = false;
        let Some((replica, url, secret)) = state.live.pick(&candidates, &tried) else {
            if e.status == "failed" && candidates.is_empty() {
                let current = db::endpoints::by_id(&state.db, e.id)
                    .await?
                    .ok_or(ApiError::NotFound("endpoint"))?;
                if current.status == "failed" {
                    return Err(ApiError::Unavailable(format!(
                        "this endpoint failed: {}",
                        current.message.unwrap_or_default()
                    )));
                }
            }
            if !woke {
                db::endpoints::request_wake(&state.db, e.id).await?;
                woke = true;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable(
                    "this endpoint has no ready replica yet; retry shortly".to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            tried.clear();
            continue;
        };
        let target = if tail.is_empty() {
            format!("{url}/models/{replica}")
        } else {
            format!("{url}/models/{replica}/{tail}")
        };
        let guard = state.live.enter(replica);
        let mut fwd = state
            .live
            .client
            .request(
                reqwest::Method::from_bytes(req.method().as_str().as_bytes())
                    .map_err(|_| ApiError::InvalidRequest("unsupported method".into()))?,
                &target,
            )
            .bearer_auth(&secret)
            .body(body.clone());
        for h in ["content-type", "accept"] {
            if let Some(v) = req.headers().get(h) {
                fwd = fwd.header(h, v.as_bytes());
            }
        }
        match fwd.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let mut m = meter(status);
                m.input_tokens = count_header(resp.headers(), INPUT_TOKENS_HEADER);
                m.output_tokens = count_header(resp.headers(), OUTPUT_TOKENS_HEADER);
                let mut out = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(status)
                        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
                );
                for h in ["content-type", "retry-after", "cache-control"] {
                    if let Some(v) = resp.headers().get(h) {
                        out.insert_header((h, v.as_bytes()));
                    }
                }
                out.insert_header(("X-Paddock-Replica", replica.to_string()));
                let sse = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
                if req.method() == actix_web::http::Method::HEAD || matches!(status, 204 | 304) {
                    drop(resp);
                    m.record();
                    return Ok(out.finish());
                }
                let length = resp.content_length();
                let body = relay::Relay::new(resp.bytes_stream().boxed(), sse, m, guard);
                return Ok(match length {
                    Some(n) if !sse => out.body(actix_web::body::SizedStream::new(n, body)),
                    _ => out.streaming(body),
                });
            }
            Err(err) => {
                tracing::warn!(endpoint = %format!("{ns}/{name}"), replica = %replica, error = %err, "worker unreachable");
                state.live.mark_suspect(replica);
                state.live.forget_routes();
                tried.push(replica);
                if err.is_timeout() || Instant::now() >= deadline {
                    meter(504).record();
                    return Err(ApiError::Unavailable(
                        "the worker did not answer in time".into(),
                    ));
                }
            }
        }
    }
}
