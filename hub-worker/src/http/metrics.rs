//! The worker's metrics (`GET /metrics`, Prometheus text format) and the
//! middleware that counts every request and gives it its request id (the
//! gateway's `X-Request-Id` when it sent one) and its tracing span.
//!
//! `/metrics` needs no credentials, like `/health`: the worker's port is
//! reached by the hubs' gateways and the cluster's scraper, never by the
//! public (the gateway secret guards only the model routes).

use super::HttpState;
use crate::registry::SlotStatus;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpResponse};
use hub_telemetry::metrics::{encode, Counter, Gauge, Histogram, LATENCY_BUCKETS};
use hub_types::metering::{INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER, USAGE_COMMENT_PREFIX};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Every family the worker exposes.
pub struct WorkerMetrics {
    pub http_requests: Counter,
    pub http_duration: Histogram,
    pub tokens: Counter,
    pub models: Gauge,
    pub in_flight: Gauge,
    pub queue_depth: Gauge,
    pub build_info: Gauge,
    /// The model cache's families (`pull::evict::CacheMetrics`), when the worker has one.
    pub cache: Option<Arc<crate::pull::cache::CacheMetrics>>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let m = Self {
            http_requests: Counter::new(
                "paddock_worker_http_requests_total",
                "HTTP requests answered by this worker, by route pattern, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: Histogram::new(
                "paddock_worker_http_request_duration_seconds",
                "Time from a request's arrival to its response head, by route pattern and method.",
                &["route", "method"],
                LATENCY_BUCKETS,
            ),
            tokens: Counter::new(
                "paddock_worker_tokens_total",
                "Tokens metered in this worker's answers, by model (its repo) and kind (prompt: in, generated: out).",
                &["model", "kind"],
            ),
            models: Gauge::new(
                "paddock_worker_models",
                "Models assigned to this worker by load state (pulling, loading, running, failed).",
                &["state"],
            ),
            in_flight: Gauge::new(
                "paddock_worker_requests_in_flight",
                "Inputs admitted and not yet answered, by model.",
                &["model"],
            ),
            queue_depth: Gauge::new(
                "paddock_worker_queue_depth",
                "Inputs waiting in the batching queue, by model.",
                &["model"],
            ),
            build_info: Gauge::new(
                "paddock_build_info",
                "Always 1; the version of the worker is a label.",
                &["service", "version"],
            ),
            cache: None,
        };
        m.build_info.set(&["worker", env!("CARGO_PKG_VERSION")], 1);
        m
    }
}

impl WorkerMetrics {
    /// The families, with the model cache's.
    pub fn with_cache(cache: Arc<crate::pull::cache::CacheMetrics>) -> WorkerMetrics {
        WorkerMetrics {
            cache: Some(cache),
            ..WorkerMetrics::default()
        }
    }

    /// The exposition, with the model gauges read from the registry now.
    pub fn render(&self, state: &HttpState) -> String {
        let mut states: BTreeMap<&str, i64> =
            SlotStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut load: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (model, status, stats) in state.registry.loads() {
            *states.entry(status.as_str()).or_default() += 1;
            let l = load.entry(model).or_default();
            l.0 += i64::from(stats.in_flight);
            l.1 += i64::from(stats.queue_depth);
        }
        self.models
            .replace(states.into_iter().map(|(s, n)| (vec![s.to_string()], n)));
        self.in_flight
            .replace(load.iter().map(|(m, (f, _))| (vec![m.clone()], *f)));
        self.queue_depth
            .replace(load.iter().map(|(m, (_, q))| (vec![m.clone()], *q)));
        let mut families: Vec<&dyn hub_telemetry::metrics::Family> = vec![
            &self.http_requests,
            &self.http_duration,
            &self.tokens,
            &self.models,
            &self.in_flight,
            &self.queue_depth,
            &self.build_info,
        ];
        if let Some(cache) = &self.cache {
            families.extend(cache.families());
        }
        encode(&families)
    }
}

/// `GET /metrics`.
pub async fn serve(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(hub_telemetry::metrics::CONTENT_TYPE)
        .insert_header(("Cache-Control", "no-store"))
        .body(state.metrics.render(&state))
}

/// The request middleware: request id and span, one log line at debug, and
/// the request's metrics, including the tokens its answer metered (headers of
/// a non-streamed answer; the usage comment that ends a stream).
pub async fn middleware(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    use tracing::Instrument;
    let started = Instant::now();
    let method = req.method().clone();
    let request_id = hub_telemetry::request_id::accept(
        req.headers()
            .get(hub_telemetry::request_id::HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let state = req.app_data::<web::Data<HttpState>>().cloned();
    req.extensions_mut()
        .insert(RequestIdExt(request_id.clone()));
    let span = hub_telemetry::request_id::request_span(method.as_str(), &request_id);
    let res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    hub_telemetry::request_id::finish_span(&span, method.as_str(), &route, status);
    span.in_scope(|| {
        tracing::debug!(http.method = %method, http.status = status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0, "request")
    });
    let mut res = res;
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(hub_telemetry::request_id::HEADER),
            v,
        );
    }
    let Some(state) = state else {
        return Ok(res.map_into_boxed_body());
    };
    let m = &state.metrics;
    // The model the route named (`/models/{key}/...`), known once routed.
    let model = res
        .request()
        .match_info()
        .get("key")
        .and_then(|key| state.registry.by_key(key))
        .map(|slot| slot.served_name);
    m.http_requests
        .inc(&[&route, method.as_str(), &status.to_string()]);
    m.http_duration
        .observe(&[&route, method.as_str()], started.elapsed().as_secs_f64());
    let Some(model) = model.filter(|_| res.status().is_success()) else {
        return Ok(res.map_into_boxed_body());
    };
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let (prompt, generated) = (header(INPUT_TOKENS_HEADER), header(OUTPUT_TOKENS_HEADER));
    let stream = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if stream {
        // The usage comment at its end carries both counts.
        let counts = StreamTokens {
            prompt: m.tokens.series(&[&model, "prompt"]),
            generated: m.tokens.series(&[&model, "generated"]),
        };
        return Ok(res
            .map_into_boxed_body()
            .map_body(|_, body| BoxBody::new(UsageWatch { body, counts })));
    }
    m.tokens.add(&[&model, "prompt"], prompt.unwrap_or(0));
    m.tokens.add(&[&model, "generated"], generated.unwrap_or(0));
    Ok(res.map_into_boxed_body())
}

/// The request id of the request being handled, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestIdExt(pub String);

struct StreamTokens {
    prompt: Arc<AtomicU64>,
    generated: Arc<AtomicU64>,
}

/// A streamed answer, watched for its usage comment (`: paddock-usage {...}`,
/// sent as a chunk of its own).
struct UsageWatch {
    body: BoxBody,
    counts: StreamTokens,
}

impl MessageBody for UsageWatch {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            if chunk.starts_with(USAGE_COMMENT_PREFIX.as_bytes()) {
                let usage = std::str::from_utf8(chunk).ok().and_then(|text| {
                    text.lines()
                        .find_map(hub_types::metering::parse_usage_comment)
                });
                if let Some(u) = usage {
                    let c = &this.counts;
                    c.prompt.fetch_add(u.prompt_tokens, Ordering::Relaxed);
                    c.generated
                        .fetch_add(u.completion_tokens, Ordering::Relaxed);
                }
            }
        }
        next
    }
}
