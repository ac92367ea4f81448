//! The hub's metrics: every family it exposes at `GET /metrics` (Prometheus
//! text format), one field each, kept per app in [`crate::state::AppState`]
//! (two apps in one process count apart). Who may read them is decided in
//! [`serve`] (site admins on the API listener) and by `--metrics-bind` (a
//! listener of its own, without credentials, for a scraper inside the
//! cluster). Families and labels are listed in `docs/ARCHITECTURE.md`
//! ("Metrics").
//!
//! Requests are labelled by their route *pattern* (`/api/{kind}/{ns}/{name}`),
//! which the route table attaches to each resource ([`RouteLabel`]), never by
//! their path: a scraper's series stay bounded by the route table. Endpoint
//! series are labelled `namespace/name`, bounded by the endpoints that exist.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use hub_telemetry::metrics::{encode, Counter, Family, Gauge, Histogram, LATENCY_BUCKETS};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub use hub_telemetry::metrics::CONTENT_TYPE;

/// The `operation` label values of the LFS families.
const LFS_OPERATIONS: &[&str] = &["upload", "multipart_upload", "download"];

/// Buckets (seconds) of a scheduler pass.
const TICK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every family the hub exposes.
pub struct Metrics {
    started: Instant,
    pub http_requests: Counter,
    pub http_duration: Histogram,
    pub http_in_flight: Gauge,
    pub http_received: Counter,
    pub http_sent: Counter,
    pub commits: Counter,
    pub lfs_transfers: Counter,
    pub lfs_bytes: Counter,
    pub xet_operations: Counter,
    pub xet_bytes: Counter,
    pub endpoint_requests: Counter,
    pub endpoint_duration: Histogram,
    pub endpoint_queued: Gauge,
    pub endpoint_in_flight: Gauge,
    pub endpoint_tokens: Counter,
    pub scheduler_leader: Gauge,
    pub scheduler_ticks: Counter,
    pub scheduler_tick_duration: Histogram,
    pub scheduler_decisions: Counter,
    pub webhook_attempts: Counter,
    pub webhook_attempt_duration: Histogram,
    pub workers: Gauge,
    pub replicas: Gauge,
    pub database_available: Gauge,
    pub uptime: Gauge,
    pub build_info: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            started: Instant::now(),
            http_requests: Counter::new(
                "paddock_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: Histogram::new(
                "paddock_http_request_duration_seconds",
                "Time from a request's arrival to its response head, by route pattern and method.",
                &["route", "method"],
                LATENCY_BUCKETS,
            ),
            http_in_flight: Gauge::new(
                "paddock_http_requests_in_flight",
                "HTTP requests being handled (until their response head).",
                &[],
            ),
            http_received: Counter::new(
                "paddock_http_received_bytes_total",
                "Request body bytes read, by route pattern.",
                &["route"],
            ),
            http_sent: Counter::new(
                "paddock_http_sent_bytes_total",
                "Response body bytes written, by route pattern.",
                &["route"],
            ),
            commits: Counter::new(
                "paddock_commits_total",
                "Commits by result: created, replayed (an idempotent retry), conflict (a stale parent or a concurrent change), rejected (bad input, quota) or failed (server error).",
                &["result"],
            ),
            lfs_transfers: Counter::new(
                "paddock_lfs_transfers_total",
                "LFS objects stored (upload, multipart_upload) and served (download).",
                &["operation"],
            ),
            lfs_bytes: Counter::new(
                "paddock_lfs_transfer_bytes_total",
                "Bytes of LFS objects stored and of the ranges served, by operation.",
                &["operation"],
            ),
            xet_operations: Counter::new(
                "paddock_xet_operations_total",
                "Xet CAS operations that succeeded: xorb_upload, xorb_duplicate (already stored), shard_upload, reconstruction, xorb_range (a data link read), dedup_query.",
                &["operation"],
            ),
            xet_bytes: Counter::new(
                "paddock_xet_bytes_total",
                "Xet bytes: xorb bodies received (up) and xorb ranges served (down).",
                &["direction"],
            ),
            endpoint_requests: Counter::new(
                "paddock_endpoint_requests_total",
                "Gateway calls that reached a worker or gave up on one, by endpoint (namespace/name) and status.",
                &["endpoint", "status"],
            ),
            endpoint_duration: Histogram::new(
                "paddock_endpoint_request_duration_seconds",
                "Gateway calls from arrival to the end of the worker's answer (streams included), by endpoint.",
                &["endpoint"],
                LATENCY_BUCKETS,
            ),
            endpoint_queued: Gauge::new(
                "paddock_endpoint_queued_requests",
                "Gateway calls held waiting for a ready replica (a cold or waking endpoint), by endpoint.",
                &["endpoint"],
            ),
            endpoint_in_flight: Gauge::new(
                "paddock_endpoint_requests_in_flight",
                "Gateway calls being answered by a worker (until the last byte), by endpoint.",
                &["endpoint"],
            ),
            endpoint_tokens: Counter::new(
                "paddock_endpoint_tokens_total",
                "Tokens metered by the gateway, by endpoint and kind (prompt: in, generated: out).",
                &["endpoint", "kind"],
            ),
            scheduler_leader: Gauge::new(
                "paddock_scheduler_leader",
                "1 while this hub replica's scheduler holds the leader lock, else 0.",
                &[],
            ),
            scheduler_ticks: Counter::new(
                "paddock_scheduler_ticks_total",
                "Scheduler passes over every endpoint run by this replica, by result (ok, error).",
                &["result"],
            ),
            scheduler_tick_duration: Histogram::new(
                "paddock_scheduler_tick_duration_seconds",
                "Time of one scheduler pass.",
                &[],
                TICK_BUCKETS,
            ),
            webhook_attempts: Counter::new(
                "paddock_webhook_attempts_total",
                "Webhook delivery attempts by outcome: delivered (2xx), retry (failed, tried again later), failed (failed, given up).",
                &["outcome"],
            ),
            webhook_attempt_duration: Histogram::new(
                "paddock_webhook_attempt_duration_seconds",
                "Time of one webhook delivery attempt (connect to the end of the response snippet, or the error).",
                &[],
                LATENCY_BUCKETS,
            ),
            scheduler_decisions: Counter::new(
                "paddock_scheduler_decisions_total",
                "Scheduler decisions: place (a replica on a worker), unplaceable (no worker fits), scale_down (a replica removed), clear_failed (failed replicas of an idle endpoint removed), worker_lost (a worker that missed its heartbeats removed).",
                &["decision"],
            ),
            workers: Gauge::new(
                "paddock_workers",
                "Registered workers by state (ready: heartbeat in the last 3 s; late: silent, not yet lost), as of the leader's last pass (0 on replicas that do not lead).",
                &["state"],
            ),
            replicas: Gauge::new(
                "paddock_endpoint_replicas",
                "Endpoint replicas by state (pulling, loading, running, failed), as of the leader's last pass (0 on replicas that do not lead).",
                &["state"],
            ),
            database_available: Gauge::new(
                "paddock_database_available",
                "0 while the database circuit breaker is open (requests answer 503), else 1.",
                &[],
            ),
            uptime: Gauge::new(
                "paddock_uptime_seconds",
                "Seconds since this hub process started.",
                &[],
            ),
            build_info: Gauge::new(
                "paddock_build_info",
                "Always 1; the version of the hub is a label.",
                &["service", "version"],
            ),
        };
        m.build_info.set(&["hub", env!("CARGO_PKG_VERSION")], 1);
        // Known label values start at 0, so a scraper sees every series (and a
        // rate over it) before the first event.
        let zero = |c: &Counter, values: &[&str]| {
            for v in values {
                c.add(&[v], 0);
            }
        };
        zero(
            &m.commits,
            &["created", "replayed", "conflict", "rejected", "failed"],
        );
        zero(&m.lfs_transfers, LFS_OPERATIONS);
        zero(&m.lfs_bytes, LFS_OPERATIONS);
        zero(
            &m.xet_operations,
            &[
                "xorb_upload",
                "xorb_duplicate",
                "shard_upload",
                "reconstruction",
                "xorb_range",
                "dedup_query",
            ],
        );
        zero(&m.xet_bytes, &["up", "down"]);
        zero(&m.scheduler_ticks, &["ok", "error"]);
        zero(&m.webhook_attempts, &["delivered", "retry", "failed"]);
        zero(
            &m.scheduler_decisions,
            &[
                "place",
                "unplaceable",
                "scale_down",
                "clear_failed",
                "worker_lost",
            ],
        );
        m
    }
}

impl Metrics {
    fn families(&self) -> [&dyn Family; 26] {
        [
            &self.http_requests,
            &self.http_duration,
            &self.http_in_flight,
            &self.http_received,
            &self.http_sent,
            &self.commits,
            &self.lfs_transfers,
            &self.lfs_bytes,
            &self.xet_operations,
            &self.xet_bytes,
            &self.endpoint_requests,
            &self.endpoint_duration,
            &self.endpoint_queued,
            &self.endpoint_in_flight,
            &self.endpoint_tokens,
            &self.scheduler_leader,
            &self.scheduler_ticks,
            &self.scheduler_tick_duration,
            &self.scheduler_decisions,
            &self.webhook_attempts,
            &self.webhook_attempt_duration,
            &self.workers,
            &self.replicas,
            &self.database_available,
            &self.uptime,
            &self.build_info,
        ]
    }

    /// The exposition, with the gauges read at scrape time brought up to date.
    pub fn render(&self, state: &AppState) -> String {
        self.database_available
            .set(&[], i64::from(!state.health.db_down()));
        self.uptime
            .set(&[], self.started.elapsed().as_secs() as i64);
        encode(&self.families())
    }

    /// Counts a commit's outcome (`registry::commit::commit`).
    pub fn commit<T>(&self, result: &Result<(T, bool), ApiError>) {
        let label = match result {
            Ok((_, true)) => "created",
            Ok((_, false)) => "replayed",
            Err(e) => match e.status().as_u16() {
                409 | 412 => "conflict",
                s if s < 500 => "rejected",
                _ => "failed",
            },
        };
        self.commits.inc(&[label]);
    }

    /// Counts an LFS object stored or served, with its bytes.
    pub fn lfs(&self, operation: &'static str, bytes: u64) {
        self.lfs_transfers.inc(&[operation]);
        self.lfs_bytes.add(&[operation], bytes);
    }

    /// Counts a Xet CAS operation.
    pub fn xet(&self, operation: &'static str) {
        self.xet_operations.inc(&[operation]);
    }
}

/// Where a response's body bytes are counted: as they are written, into its
/// route's sent series; and the request body's bytes (counted as the handler
/// read them), into its route's received series once the response is done.
pub struct BodyCount {
    pub sent: Arc<AtomicU64>,
    pub received_total: Arc<AtomicU64>,
    pub received: Arc<AtomicU64>,
}

impl Drop for BodyCount {
    fn drop(&mut self) {
        self.received_total
            .fetch_add(self.received.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A response body that counts its bytes ([`BodyCount`]); its size is the
/// inner body's, so a sized body stays sized.
pub struct CountedBody {
    pub body: BoxBody,
    pub count: BodyCount,
}

impl MessageBody for CountedBody {
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
        if let Poll::Ready(Some(Ok(b))) = &next {
            this.count.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        next
    }

    fn try_into_bytes(self) -> Result<Bytes, Self> {
        let Self { body, count } = self;
        match body.try_into_bytes() {
            Ok(b) => {
                count.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(b)
            }
            Err(body) => Err(Self { body, count }),
        }
    }
}

/// The route pattern a resource of the route table answers for, attached to
/// it as resource data (`routes::RouteSink`): the access log reads it after
/// the response, with no second routing pass (`HttpRequest::match_pattern`
/// would walk the route table again). A resource with several patterns
/// (`/{ns}/{name}/resolve/...` and `/{name}/resolve/...`) tells which matched
/// by testing its own few.
pub struct RouteLabel {
    patterns: Vec<Pattern>,
}

struct Pattern {
    def: actix_web::dev::ResourceDef,
    label: String,
    /// The text before the first parameter.
    prefix: String,
    /// The parameter names, sorted.
    names: Vec<String>,
}

impl RouteLabel {
    pub fn new(paths: &[String]) -> Self {
        Self {
            patterns: paths
                .iter()
                .map(|p| {
                    let label = simplify(p);
                    let prefix = label[..label.find('{').unwrap_or(label.len())].to_string();
                    let mut names: Vec<String> = label
                        .split('{')
                        .skip(1)
                        .filter_map(|s| s.split_once('}').map(|(n, _)| n.to_string()))
                        .collect();
                    names.sort();
                    Pattern {
                        def: actix_web::dev::ResourceDef::new(p.as_str()),
                        label,
                        prefix,
                        names,
                    }
                })
                .collect(),
        }
    }

    /// The label of the pattern that matched `path`, whose parameters were
    /// `params` (the request's match info). The patterns with those
    /// parameter names and a prefix of `path` are the candidates; only when
    /// several remain is a pattern's regex run (the first that matches, as
    /// actix chose), so a download's label costs no regex.
    pub fn label(&self, path: &str, params: &[&str]) -> &str {
        if let [only] = self.patterns.as_slice() {
            return &only.label;
        }
        let mut params: Vec<&str> = params.to_vec();
        params.sort_unstable();
        let mut candidates = self
            .patterns
            .iter()
            .filter(|p| {
                p.names
                    .iter()
                    .map(String::as_str)
                    .eq(params.iter().copied())
            })
            .filter(|p| path.starts_with(&p.prefix));
        match (candidates.next(), candidates.next()) {
            (Some(one), None) => &one.label,
            _ => self
                .patterns
                .iter()
                .find(|p| p.def.is_match(path))
                .or(self.patterns.first())
                .map_or("unmatched", |p| p.label.as_str()),
        }
    }
}

/// A pattern without its segments' regexes: `{kind:models|datasets}` is
/// `{kind}`, `{path:.*}` is `{path}`.
fn simplify(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '{' {
            continue;
        }
        // The segment's name, then its regex (skipped) up to the brace that closes it.
        while let Some(c) = chars.next() {
            if c == ':' {
                let mut depth = 0usize;
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                out.push('}');
                break;
            }
            out.push(c);
            if c == '}' {
                break;
            }
        }
    }
    out
}

/// `GET /metrics` on the API listener: site admins only (an admin-scoped
/// token, as a Prometheus `authorization` credential, or an admin's session).
/// A scraper without credentials uses `--metrics-bind` instead.
pub async fn serve(
    state: web::Data<AppState>,
    auth: crate::auth::Auth,
) -> crate::error::ApiResult<HttpResponse> {
    let p = auth.require()?;
    if !crate::auth::access::is_site_admin(p) {
        return Err(ApiError::Forbidden(
            "metrics are for site administrators (an admin-scoped token), or scrape --metrics-bind"
                .into(),
        ));
    }
    Ok(exposition(&state))
}

/// The exposition as an HTTP response.
pub fn exposition(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header(("Cache-Control", "no-store"))
        .body(state.metrics.render(state))
}

/// The app of the `--metrics-bind` listener: `GET /metrics` without
/// credentials and nothing else (no request of it is counted). Bind it to an
/// address only the cluster's scraper reaches, never behind the public load
/// balancer.
pub fn metrics_app(
    state: AppState,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new().app_data(web::Data::new(state)).route(
        "/metrics",
        web::get().to(|state: web::Data<AppState>| async move { exposition(&state) }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_drop_segment_regexes() {
        assert_eq!(
            super::simplify("/api/{kind:models|datasets}/{ns}/{name}/tree/{rev}/{path:.*}"),
            "/api/{kind}/{ns}/{name}/tree/{rev}/{path}"
        );
        assert_eq!(super::simplify("/a/{x:[0-9]{2}}/b"), "/a/{x}/b");
        assert_eq!(super::simplify("/healthz"), "/healthz");
    }

    #[test]
    fn a_resource_with_several_patterns_labels_the_one_that_matched() {
        let l = super::RouteLabel::new(&[
            "/datasets/{ns}/{name}/resolve/{rev}/{path:.*}".to_string(),
            "/{ns}/{name}/resolve/{rev}/{path:.*}".to_string(),
        ]);
        let p = ["ns", "name", "rev", "path"];
        assert_eq!(
            l.label("/alice/m/resolve/main/a/b.bin", &p),
            "/{ns}/{name}/resolve/{rev}/{path}"
        );
        assert_eq!(
            l.label("/datasets/alice/d/resolve/main/x", &p),
            "/datasets/{ns}/{name}/resolve/{rev}/{path}"
        );
        // Told apart by their parameters and prefix alone, then by regex.
        let l = super::RouteLabel::new(&[
            "/datasets/{ns}/{name}/resolve/{rev}/{path:.*}".to_string(),
            "/datasets/{name}/resolve/{rev}/{path:.*}".to_string(),
            "/{ns}/{name}/resolve/{rev}/{path:.*}".to_string(),
            "/{name}/resolve/{rev}/{path:.*}".to_string(),
        ]);
        assert_eq!(
            l.label("/m/resolve/main/x", &["name", "rev", "path"]),
            "/{name}/resolve/{rev}/{path}"
        );
        assert_eq!(
            l.label("/datasets/d/resolve/main/x", &["path", "rev", "name"]),
            "/datasets/{name}/resolve/{rev}/{path}"
        );
        assert_eq!(
            l.label("/datasets/a/d/resolve/main/x", &p),
            "/datasets/{ns}/{name}/resolve/{rev}/{path}"
        );
    }
}
