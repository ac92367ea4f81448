//! The endpoint gateway: `/endpoints/{namespace}/{name}/...`. It
//! authenticates (protected endpoints need a token of the owning namespace
//! with the `inference` or `write` scope), wakes a scaled-to-zero endpoint and
//! holds the request (bounded) until a replica is ready, proxies to the ready
//! replica with the fewest requests in flight (retrying another replica if a
//! worker is gone), and records usage per request.

use crate::auth::{Auth, Credential, Scope};
use crate::db;
use crate::db::endpoints::{EndpointRow, UsageRecord};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a request to a cold endpoint is held waiting for a replica.
pub const WAKE_WAIT: Duration = Duration::from_secs(60);
/// Largest request body the gateway forwards.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Per-process routing state: requests in flight per replica, replicas that
/// just failed, and the HTTP client used to reach workers.
pub struct Live {
    in_flight: Mutex<HashMap<Uuid, u32>>,
    /// Replicas whose worker refused a connection, with when.
    suspect: Mutex<HashMap<Uuid, Instant>>,
    pub client: reqwest::Client,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(120))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }
}

struct InFlight<'a> {
    live: &'a Live,
    id: Uuid,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.live.in_flight.lock().expect("lock");
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Live {
    fn pick(
        &self,
        candidates: &[(Uuid, String, String, i32)],
        skip: &[Uuid],
    ) -> Option<(Uuid, String, String)> {
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

    fn enter(&self, id: Uuid) -> InFlight<'_> {
        *self.in_flight.lock().expect("lock").entry(id).or_insert(0) += 1;
        InFlight { live: self, id }
    }

    fn mark_suspect(&self, id: Uuid) {
        self.suspect
            .lock()
            .expect("lock")
            .insert(id, Instant::now());
    }
}

/// Whether the caller may call this endpoint; 401 for anonymous callers of a
/// protected endpoint, 404 for outsiders (as for private repos).
async fn authorize(state: &AppState, auth: &Auth, e: &EndpointRow) -> ApiResult<Option<i64>> {
    let token_id = match auth.principal().map(|p| &p.credential) {
        Some(Credential::Token { id, .. }) => Some(*id),
        _ => None,
    };
    if e.access == "public" {
        return Ok(token_id);
    }
    let Some(p) = auth.principal() else {
        return Err(ApiError::Unauthorized(
            "this endpoint is protected: send a token with the inference scope".into(),
        ));
    };
    let member = crate::auth::access::namespace_role(&state.db, p, e.namespace_id)
        .await?
        .is_some();
    if !member || !p.may_touch_namespace(&e.namespace) {
        return Err(ApiError::NotFound("endpoint"));
    }
    if !(p.has_scope(Scope::Inference) || p.has_scope(Scope::Write)) {
        return Err(ApiError::Forbidden(
            "calling an endpoint needs a token with the inference or write scope".into(),
        ));
    }
    Ok(token_id)
}

fn record(
    state: &AppState,
    e: &EndpointRow,
    token_id: Option<i64>,
    tokens: i32,
    started: Instant,
    status: u16,
) {
    let rec = UsageRecord {
        namespace_id: e.namespace_id,
        endpoint_id: e.id,
        endpoint_name: e.name.clone(),
        token_id,
        input_tokens: tokens,
        latency_ms: started.elapsed().as_secs_f32() * 1000.0,
        status: status as i32,
    };
    let db = state.db.clone();
    let id = e.id;
    tokio::spawn(async move {
        if let Err(err) = db::endpoints::insert_usage(&db, &[rec]).await {
            tracing::warn!(error = %err, "recording usage failed");
        }
        let _ = db::endpoints::touch_request(&db, id).await;
    });
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
    let e = db::endpoints::get(&state.db, &ns, &name)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
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
    let deadline = Instant::now() + WAKE_WAIT;
    let mut tried: Vec<Uuid> = Vec::new();
    let mut woke = false;
    loop {
        let candidates = db::endpoints::routable(&state.db, e.id).await?;
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
        let _guard = state.live.enter(replica);
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
                let tokens = resp
                    .headers()
                    .get("x-input-tokens")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut out = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(status)
                        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
                );
                for h in ["content-type", "retry-after"] {
                    if let Some(v) = resp.headers().get(h) {
                        out.insert_header((h, v.as_bytes()));
                    }
                }
                out.insert_header(("X-Paddock-Replica", replica.to_string()));
                let bytes = resp.bytes().await.map_err(|err| {
                    record(&state, &e, token_id, tokens, started, 502);
                    ApiError::Unavailable(format!("the worker broke off the response: {err}"))
                })?;
                record(&state, &e, token_id, tokens, started, status);
                return Ok(out.body(bytes));
            }
            Err(err) => {
                tracing::warn!(endpoint = %format!("{ns}/{name}"), replica = %replica, error = %err, "worker unreachable");
                state.live.mark_suspect(replica);
                tried.push(replica);
                if err.is_timeout() || Instant::now() >= deadline {
                    record(&state, &e, token_id, 0, started, 504);
                    return Err(ApiError::Unavailable(
                        "the worker did not answer in time".into(),
                    ));
                }
            }
        }
    }
}
