//! The endpoint gateway: `/endpoints/{namespace}/{name}/...`. It
//! authenticates (protected endpoints need a token of the owning namespace
//! with the `inference` or `write` scope), wakes a scaled-to-zero endpoint and
//! holds the request (bounded) until a replica is ready (answered at the
//! replica's ready signal, `signals::READY_CHANNEL`), proxies to the ready
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
//! Most calls (a bearer credential or none) are answered by [`front`], a
//! middleware just inside the access log that authenticates, rate-limits and
//! calls `forward` without the rest of the middleware chain or the router;
//! the others reach [`proxy`] through the whole stack.
//!
//! The hot path makes no database round trip for a warm endpoint and a known
//! caller: the token (`auth::cache::TokenCache`), the caller's role in the
//! endpoint's namespace (`auth::cache::RoleCache`), the endpoint's row and
//! its ready replicas (here, [`ROUTE_REFRESH`] / [`ROUTE_TTL`]) and the
//! namespace's token quota ([`crate::token_quota`]) come from per-process
//! caches that are reloaded in the background before they expire
//! ([`crate::refresh_cache`]), and usage records are buffered and written in
//! batches every [`USAGE_FLUSH`] on the runtime the app was built on. What
//! this process changes (a revoked token, a membership, an endpoint paused,
//! scaled, deleted or re-accessed) is dropped from its caches at once and
//! published to the other replicas (`signals`), which drop it when the
//! NOTIFY arrives; the TTLs (documented in `docs/ARCHITECTURE.md`) bound a
//! lost notification, and a replica that went away is caught by the
//! connect-failure retry. Reading usage on a process flushes its buffer
//! first; a clean shutdown flushes it after the HTTP server drained.

use crate::auth::access::{self, Action, Standing};
use crate::auth::{Auth, Credential};
use crate::db;
use crate::db::endpoints::EndpointRow;
use crate::error::{ApiError, ApiResult};
use crate::refresh_cache::{Lookup, RefreshCache};
use crate::state::AppState;
use crate::token_quota::TokenQuotas;
use crate::usage_rollup::{UsageBuffer, UsageRecord};
use actix_web::{web, HttpRequest, HttpResponse};
use hub_types::control::NOT_STARTED_HEADER;
use hub_types::metering::{INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a request to a cold endpoint is held waiting for a replica.
pub const WAKE_WAIT: Duration = Duration::from_secs(60);
/// How often a held request re-reads the ready replicas when no ready signal
/// comes (one lost with the listener's connection): it is answered at the
/// signal ([`Live::replica_ready`]), this only bounds a lost one.
pub const WAKE_POLL: Duration = Duration::from_secs(1);
mod front;
mod relay;
pub mod sse;
pub use front::front;
mod upstream;

/// Longest silence of a worker (before its headers, or between two chunks of its body)
/// before the gateway gives up on it. There is no limit on a whole response: a
/// generation stream lasts as long as it produces.
pub const WORKER_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest request body the gateway forwards.
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// After how long a cached route (endpoint row and ready replicas) is reloaded in
/// the background (the request that notices does not wait).
pub const ROUTE_REFRESH: Duration = Duration::from_millis(500);
/// How long a cached route answers at most: the bound for a change made through
/// another hub replica (pause, scale, delete, access) to be seen here.
pub const ROUTE_TTL: Duration = Duration::from_secs(2);
/// How long usage is summed in memory before it is written (one row per
/// group, [`crate::usage_rollup`]): what a `kill -9` of the hub can lose.
pub const USAGE_FLUSH: Duration = Duration::from_millis(100);
/// A flush (waiting for the one before it, writing, marking endpoints used) that
/// takes longer than this is logged with where its time went.
const SLOW_FLUSH: Duration = Duration::from_millis(250);

/// A ready replica as the gateway calls it, made once per route load rather
/// than per call: the worker's scheme, host and replica path, the
/// `Authorization` value for the worker, and the requests in flight it
/// reported.
#[derive(Clone)]
struct Candidate {
    id: Uuid,
    /// `id` as the `X-Paddock-Replica` value of the answers.
    id_header: actix_web::http::header::HeaderValue,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// `{worker url's path}/models/{replica id}/`, percent-encoded.
    base_path: String,
    auth: reqwest::header::HeaderValue,
    reported: i32,
}

impl Candidate {
    /// Ready replicas as `db::endpoints::routable` reads them; a worker whose
    /// registered URL does not parse is left out (and logged), not called.
    fn from_rows(rows: Vec<(Uuid, String, String, i32)>) -> Vec<Candidate> {
        rows.into_iter()
            .filter_map(|(id, url, secret, reported)| {
                let base = reqwest::Url::parse(&format!(
                    "{}/models/{id}/",
                    url.trim_end_matches('/')
                ));
                let auth = reqwest::header::HeaderValue::try_from(format!("Bearer {secret}"));
                // A query or fragment would swallow the replica's path (a row
                // registered before the registration refused them).
                let usable = |b: &reqwest::Url| {
                    !b.cannot_be_a_base() && b.query().is_none() && b.fragment().is_none()
                };
                let parts = base.ok().filter(usable).and_then(|b| {
                    let scheme = http::uri::Scheme::try_from(b.scheme()).ok()?;
                    let authority = http::uri::Authority::try_from(&b[url::Position::BeforeHost..url::Position::AfterPort]).ok()?;
                    Some((scheme, authority, b.path().to_string()))
                });
                match (parts, auth) {
                    (Some((scheme, authority, base_path)), Ok(mut auth)) => {
                        auth.set_sensitive(true);
                        Some(Candidate {
                            id,
                            id_header: actix_web::http::header::HeaderValue::from_str(&id.to_string())
                                .expect("a UUID is a header value"),
                            scheme,
                            authority,
                            base_path,
                            auth,
                            reported,
                        })
                    }
                    _ => {
                        tracing::warn!(replica = %id, url = %url, "a worker's URL or secret is unusable; replica skipped");
                        None
                    }
                }
            })
            .collect()
    }

    /// The worker URI of `tail` (a path below the replica, `""` for the
    /// replica itself, already checked by [`check_tail`]). The tail is
    /// appended as it is, with the bytes a path cannot carry
    /// percent-encoded; nothing normalizes it (a URL parser would resolve
    /// `..` and, for `http`, read `\` as `/`), so it cannot leave the replica.
    fn target(&self, tail: &str) -> Result<http::Uri, http::Error> {
        let mut path = String::with_capacity(self.base_path.len() + tail.len() + 8);
        if tail.is_empty() {
            path.push_str(self.base_path.trim_end_matches('/'));
        } else {
            path.push_str(&self.base_path);
            path.extend(percent_encoding::utf8_percent_encode(tail, PATH_ESCAPED));
        }
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

/// What the gateway percent-encodes in a forwarded path: controls, space,
/// the delimiters a path cannot hold (`?` and `#` would start a query or a
/// fragment), `\`, and every byte outside ASCII; `%` is kept, so what the
/// caller encoded stays encoded once.
const PATH_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Refuses a tail (the path after `/endpoints/{namespace}/{name}/`) that
/// could name anything but its own replica on the worker: a segment that is
/// `.` or `..`, or holds `/` or `\\`, once percent-decoded (repeatedly, so
/// `%252e` counts as a dot too), and a backslash anywhere. A worker serves
/// many tenants' replicas and trusts the gateway's secret for all of them.
fn check_tail(tail: &str) -> Result<(), String> {
    if tail.contains('\\') {
        return Err("a backslash is not allowed in an endpoint path".into());
    }
    for segment in tail.split('/') {
        let mut decoded = std::borrow::Cow::Borrowed(segment);
        for _ in 0..4 {
            if !decoded.contains('%') {
                break;
            }
            let next = percent_encoding::percent_decode_str(&decoded)
                .decode_utf8_lossy()
                .into_owned();
            if next == decoded {
                break;
            }
            decoded = std::borrow::Cow::Owned(next);
        }
        if decoded == "." || decoded == ".." {
            return Err(format!("the segment {segment:?} would leave the endpoint"));
        }
        if decoded.len() != segment.len() && (decoded.contains('/') || decoded.contains('\\')) {
            return Err(format!(
                "the segment {segment:?} holds an encoded path separator"
            ));
        }
    }
    Ok(())
}

/// Whether `req` is a GET/HEAD/OPTIONS whose caller was authenticated by the
/// ambient session cookie.
fn cookie_on_safe_method(req: &HttpRequest) -> bool {
    use actix_web::HttpMessage;
    let safe = matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    );
    safe && matches!(
        req.extensions()
            .get::<crate::auth::authenticate::Authenticated>(),
        Some(crate::auth::authenticate::Authenticated::Caller {
            by_cookie: true,
            ..
        })
    )
}

/// Ready replicas of an endpoint, now.
async fn routable(db: &sqlx::PgPool, endpoint_id: i64) -> ApiResult<Vec<Candidate>> {
    Ok(Candidate::from_rows(
        db::endpoints::routable(db, endpoint_id).await?,
    ))
}

/// An endpoint as the gateway routes it: its row and its ready replicas.
pub struct Routed {
    pub endpoint: EndpointRow,
    /// `namespace/name` as stored: its metrics label (see [`endpoint_label`]).
    label: String,
    candidates: Vec<Candidate>,
}

type RouteKey = (String, String);

/// Per-process routing state: requests in flight per replica, replicas that
/// just failed, and the HTTP client used to reach workers.
pub struct Live {
    in_flight: Mutex<HashMap<Uuid, u32>>,
    /// Replicas whose worker refused a connection, with when.
    suspect: Mutex<HashMap<Uuid, Instant>>,
    /// Endpoints with ready replicas by lower-cased `(namespace, name)`.
    routes: Arc<RefreshCache<RouteKey, Arc<Routed>>>,
    /// Usage not yet written, and whether a flush is scheduled.
    usage: Mutex<UsageBuffer>,
    flush_scheduled: AtomicBool,
    /// Held while a batch is written: the final flush at shutdown waits for one
    /// under way, so it cannot close the pool under it.
    flushing: tokio::sync::Mutex<()>,
    /// Where flushes run: the runtime this `Live` was made on (in a server, the
    /// main one, which outlives the HTTP workers and runs the final flush), so a
    /// flush is never cancelled half-way with its HTTP worker.
    runtime: Option<tokio::runtime::Handle>,
    /// The HTTP client to workers, one per thread: a pooled connection's task
    /// runs on the runtime that opened it, so a connection shared across the
    /// HTTP workers' threads would wake another thread (a syscall and a
    /// context switch) for every request and every body chunk; per thread,
    /// the request and its connection stay on one runtime.
    clients: thread_local::ThreadLocal<upstream::Upstream>,
    /// The client's read timeout ([`WORKER_READ_TIMEOUT`] but in tests).
    read_timeout: Duration,
    /// Daily token quotas and today's totals per namespace.
    pub quotas: TokenQuotas,
    /// Requests held for a cold endpoint, by endpoint id: rung when a replica
    /// of it becomes ready (one channel per endpoint with waiters, shared by
    /// them; the signal comes from this process's one listener).
    ready: Mutex<HashMap<i64, tokio::sync::watch::Sender<()>>>,
    /// [`WAKE_POLL`], in milliseconds (a test lengthens it to show the signal
    /// is what answers).
    wake_poll_ms: std::sync::atomic::AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Self::with_read_timeout(WORKER_READ_TIMEOUT)
    }
}

impl Live {
    /// A gateway state whose calls to workers give up after `read_timeout`
    /// of silence (tests shorten [`WORKER_READ_TIMEOUT`]).
    pub fn with_read_timeout(read_timeout: Duration) -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            routes: Arc::new(RefreshCache::new(ROUTE_REFRESH, ROUTE_TTL, 10_000)),
            usage: Mutex::new(UsageBuffer::default()),
            flush_scheduled: AtomicBool::new(false),
            flushing: tokio::sync::Mutex::new(()),
            runtime: tokio::runtime::Handle::try_current().ok(),
            clients: thread_local::ThreadLocal::new(),
            read_timeout,
            quotas: TokenQuotas::default(),
            ready: Mutex::new(HashMap::new()),
            wake_poll_ms: (WAKE_POLL.as_millis() as u64).into(),
        }
    }
}

/// One held request's subscription to its endpoint's ready signal; the
/// endpoint's channel goes when its last waiter does.
struct ReadyWait {
    live: Arc<Live>,
    endpoint_id: i64,
    rx: tokio::sync::watch::Receiver<()>,
}

impl Drop for ReadyWait {
    fn drop(&mut self) {
        let mut m = self.live.ready.lock().expect("lock");
        // Ours is the last receiver (it is dropped after this).
        if m.get(&self.endpoint_id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            m.remove(&self.endpoint_id);
        }
    }
}

/// A request in flight on a replica, until dropped (with the response body it relays).
struct InFlight {
    live: Arc<Live>,
    id: Uuid,
    /// Its unit of `paddock_endpoint_requests_in_flight`.
    _counted: hub_telemetry::metrics::Tracked,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.live.in_flight.lock().expect("lock");
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Reads an endpoint and its ready replicas (`None`: no such endpoint).
async fn load_route(db: &sqlx::PgPool, ns: &str, name: &str) -> ApiResult<Option<Arc<Routed>>> {
    let Some(endpoint) = db::endpoints::get(db, ns, name).await? else {
        return Ok(None);
    };
    let candidates = routable(db, endpoint.id).await?;
    Ok(Some(Arc::new(Routed {
        label: endpoint_label(&endpoint),
        endpoint,
        candidates,
    })))
}

impl Live {
    /// How long a worker may stay silent before the gateway gives up on it.
    /// This thread's client to workers.
    fn client(&self) -> &upstream::Upstream {
        self.clients
            .get_or(|| upstream::Upstream::new(self.read_timeout))
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Forgets cached routes (after this process changed an endpoint). A
    /// reload under way cannot put an older answer back.
    pub fn forget_routes(&self) {
        self.routes.clear();
    }

    /// Forgets one endpoint's cached route (its replica failed).
    pub fn forget_endpoint(&self, endpoint_id: i64) {
        self.routes.forget(|_, r| r.endpoint.id == endpoint_id);
    }

    /// A replica of `endpoint_id` became ready (a NOTIFY on
    /// `signals::READY_CHANNEL`): requests held for it re-read its replicas
    /// now, and a cached route of it is dropped so new calls see the replica.
    pub fn replica_ready(&self, endpoint_id: i64) {
        self.forget_endpoint(endpoint_id);
        if let Some(tx) = self.ready.lock().expect("lock").get(&endpoint_id) {
            tx.send_replace(());
        }
    }

    /// Subscribes a held request to `endpoint_id`'s ready signal. A signal
    /// sent after this returns is not missed, so read the replicas after it.
    fn wait_ready(self: &Arc<Self>, endpoint_id: i64) -> ReadyWait {
        let rx = self
            .ready
            .lock()
            .expect("lock")
            .entry(endpoint_id)
            .or_insert_with(|| tokio::sync::watch::channel(()).0)
            .subscribe();
        ReadyWait {
            live: self.clone(),
            endpoint_id,
            rx,
        }
    }

    /// Sets the fallback re-read interval of held requests (for tests).
    #[doc(hidden)]
    pub fn set_wake_poll(&self, every: Duration) {
        self.wake_poll_ms
            .store(every.as_millis() as u64, Ordering::Relaxed);
    }

    /// Endpoints with requests waiting for a ready signal (for tests).
    #[doc(hidden)]
    pub fn ready_waiters(&self) -> usize {
        self.ready.lock().expect("lock").len()
    }

    /// Routes cached (for tests).
    #[doc(hidden)]
    pub fn routes_cached(&self) -> usize {
        self.routes.len()
    }

    /// Spawns `f` where flushes and reloads run (see [`Live::runtime`]).
    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(rt) => {
                rt.spawn(f);
            }
            None => {
                tokio::spawn(f);
            }
        }
    }

    /// The endpoint and its ready replicas, from the cache when it can answer
    /// (reloaded in the background past [`ROUTE_REFRESH`]). Only endpoints with
    /// a ready replica are cached: a cold one is asked about every time, as
    /// waking it needs the database anyway.
    async fn route(&self, db: &sqlx::PgPool, ns: &str, name: &str) -> ApiResult<Arc<Routed>> {
        let key = (ns.to_lowercase(), name.to_lowercase());
        let epoch = match self.routes.get(&key) {
            Lookup::Fresh(r) => return Ok(r),
            Lookup::Stale { value, epoch } => {
                let (routes, db) = (self.routes.clone(), db.clone());
                let (ns, name) = (ns.to_string(), name.to_string());
                self.spawn(async move {
                    match load_route(&db, &ns, &name).await {
                        Ok(r) => {
                            let r = r.filter(|r| !r.candidates.is_empty());
                            routes.put(key, r, epoch)
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "reloading a route failed");
                            routes.reload_failed(&key);
                        }
                    }
                });
                return Ok(value);
            }
            Lookup::Miss { epoch } => epoch,
        };
        let r = load_route(db, ns, name)
            .await?
            .ok_or(ApiError::NotFound("endpoint"))?;
        if !r.candidates.is_empty() {
            self.routes.put(key, Some(r.clone()), epoch);
        }
        Ok(r)
    }

    /// Counts a call's usage; a flush is scheduled [`USAGE_FLUSH`] later.
    fn record_usage(self: &Arc<Self>, db: &sqlx::PgPool, rec: &UsageRecord<'_>) {
        self.usage.lock().expect("lock").add(rec);
        self.schedule_flush(db, USAGE_FLUSH);
    }

    fn schedule_flush(self: &Arc<Self>, db: &sqlx::PgPool, after: Duration) {
        if !self.flush_scheduled.swap(true, Ordering::AcqRel) {
            let live = self.clone();
            let db = db.clone();
            self.spawn(async move {
                tokio::time::sleep(after).await;
                live.flush_usage(&db).await;
            });
        }
    }

    /// Calls whose usage is recorded and not yet written (for tests).
    #[doc(hidden)]
    pub fn usage_pending(&self) -> usize {
        self.usage.lock().expect("lock").pending_calls()
    }

    /// Holds every usage flush (scheduled or called) until the guard is
    /// dropped, so a test can act while records are known to be buffered.
    #[doc(hidden)]
    pub async fn hold_usage_flushes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.flushing.lock().await
    }

    /// Writes the usage recorded so far (a row per group, one statement per
    /// batch) and marks its endpoints as recently used (the scale-to-zero
    /// clock). Waits for a flush under way first, so once this returns every
    /// call recorded before the call is written (or, when the database
    /// refused it, kept with its batch's id for the next flush, retried a
    /// second later).
    pub async fn flush_usage(self: &Arc<Self>, db: &sqlx::PgPool) {
        let called = Instant::now();
        let _one_at_a_time = self.flushing.lock().await;
        let locked = called.elapsed();
        self.flush_scheduled.store(false, Ordering::Release);
        let mut batches: std::collections::VecDeque<_> =
            self.usage.lock().expect("lock").take().into();
        let calls: usize = batches.iter().map(|b| b.calls()).sum();
        let mut ids = HashSet::new();
        while let Some(batch) = batches.front() {
            if let Err(err) = db::endpoints::insert_usage(db, batch).await {
                let left: Vec<_> = batches.into();
                let calls: usize = left.iter().map(|b| b.calls()).sum();
                tracing::warn!(error = %err, calls, "recording usage failed; kept for a retry");
                let dropped = self.usage.lock().expect("lock").put_back(left);
                if dropped > 0 {
                    tracing::error!(
                        calls = dropped,
                        "usage dropped: the database refused it too long"
                    );
                }
                if !db.is_closed() {
                    self.schedule_flush(db, Duration::from_secs(1));
                }
                break;
            }
            ids.extend(batch.rows.iter().map(|r| r.endpoint_id));
            batches.pop_front();
        }
        if ids.is_empty() {
            return;
        }
        let inserted = called.elapsed();
        let ids: Vec<i64> = ids.into_iter().collect();
        if let Err(err) = db::endpoints::touch_requests(db, &ids).await {
            tracing::warn!(error = %err, "marking endpoints used failed");
        }
        // A slow flush is what a `kill -9` can lose (and a sign of a database
        // under strain): say where the time went.
        let took = called.elapsed();
        if took > SLOW_FLUSH {
            tracing::warn!(
                calls,
                waited_ms = locked.as_millis() as u64,
                insert_ms = (inserted - locked).as_millis() as u64,
                touch_ms = (took - inserted).as_millis() as u64,
                pool_size = db.size(),
                pool_idle = db.num_idle(),
                "a usage flush was slow"
            );
        }
    }

    fn pick<'c>(&self, candidates: &'c [Candidate], skip: &[Uuid]) -> Option<&'c Candidate> {
        let suspect = self.suspect.lock().expect("lock");
        let m = self.in_flight.lock().expect("lock");
        candidates
            .iter()
            .filter(|c| !skip.contains(&c.id))
            .filter(|c| {
                suspect
                    .get(&c.id)
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            })
            .min_by_key(|c| m.get(&c.id).copied().unwrap_or(0) * 4 + c.reported.max(0) as u32)
    }

    fn enter(self: &Arc<Self>, id: Uuid, counted: hub_telemetry::metrics::Tracked) -> InFlight {
        *self.in_flight.lock().expect("lock").entry(id).or_insert(0) += 1;
        InFlight {
            live: self.clone(),
            id,
            _counted: counted,
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
/// private repos). Answers the caller's token id, for usage records. The
/// caller's role comes from the role cache (no round trip for a known caller).
async fn authorize(state: &AppState, auth: &Auth, e: &EndpointRow) -> ApiResult<Option<i64>> {
    let p = auth.principal();
    let action = Action::CallEndpoint {
        protected: e.access != "public",
    };
    let standing = if action == (Action::CallEndpoint { protected: false }) {
        // Anyone may call a public endpoint: no need to look the caller up.
        Standing::namespace(&e.namespace, None, "endpoint")
    } else {
        Standing::cached_in(state, p, e.namespace_id, &e.namespace, "endpoint").await?
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
    route: Arc<Routed>,
    token_id: Option<i64>,
    started: Instant,
    status: u16,
    input_tokens: i64,
    output_tokens: i64,
}

impl Metered {
    /// Buffers the usage record, counts the tokens against today's quota, and
    /// counts the call in the endpoint's metrics.
    fn record(self) {
        let clamp = |n: i64| n.clamp(0, i32::MAX as i64) as i32;
        let e = &self.route.endpoint;
        let m = &self.state.metrics;
        let label = self.route.label.as_str();
        let mut digits = itoa::Buffer::new();
        m.endpoint_requests
            .inc(&[label, digits.format(self.status)]);
        m.endpoint_duration
            .observe(&[label], self.started.elapsed().as_secs_f64());
        m.endpoint_tokens
            .add(&[label, "prompt"], self.input_tokens.max(0) as u64);
        m.endpoint_tokens
            .add(&[label, "generated"], self.output_tokens.max(0) as u64);
        let rec = UsageRecord {
            namespace_id: e.namespace_id,
            endpoint_id: e.id,
            endpoint_name: &e.name,
            token_id: self.token_id,
            input_tokens: clamp(self.input_tokens),
            output_tokens: clamp(self.output_tokens),
            latency_ms: self.started.elapsed().as_secs_f32() * 1000.0,
            status: self.status as i32,
        };
        self.state.live.quotas.add(
            e.namespace_id,
            rec.input_tokens as i64 + rec.output_tokens as i64,
        );
        self.state.live.record_usage(&self.state.db, &rec);
    }
}

/// An endpoint's label in the metrics: `namespace/name` as stored (one series
/// per endpoint, whatever case a caller wrote).
fn endpoint_label(e: &EndpointRow) -> String {
    format!("{}/{}", e.namespace, e.name)
}

/// A token count in a worker's response header (0 when absent or malformed).
fn count_header(h: &http::HeaderMap, name: &str) -> i64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(0)
}

/// The metrics label of a request to `path` when it is a gateway call: the
/// route table's two patterns, `/endpoints/{ns}/{name}` and (with anything
/// after the name, even a lone `/`) `/endpoints/{ns}/{name}/{tail}`.
pub fn route_label(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/endpoints")?;
    if !rest.starts_with('/') {
        return None;
    }
    Some(if rest.splitn(4, '/').count() == 4 {
        "/endpoints/{ns}/{name}/{tail}"
    } else {
        "/endpoints/{ns}/{name}"
    })
}

/// `{ns}/{name}[/{tail}]` from what the `/endpoints` scope leaves of the
/// path (`/acme/e/v1/embeddings`); `None` when the namespace or the name is
/// missing or empty (`/endpoints/acme`, `/endpoints//e`).
fn split_target(rest: &str) -> Option<(&str, &str, &str)> {
    let mut parts = rest.strip_prefix('/')?.splitn(3, '/');
    let ns = parts.next().filter(|s| !s.is_empty())?;
    let name = parts.next().filter(|s| !s.is_empty())?;
    Some((ns, name, parts.next().unwrap_or("")))
}

/// `ANY /endpoints/{namespace}/{name}[/{tail}]`, as the route table's handler:
/// the requests [`front`] leaves to the whole middleware stack (a cookie
/// session, bad credentials, an undecided caller) come here.
pub async fn proxy(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    // A browser sends its session cookie with any same-site GET, including
    // an `<img>` in a model card another tenant wrote: such a request must
    // not call (wake, bill) the viewer's protected endpoints. A session
    // calls endpoints with unsafe methods only, which the CSRF middleware
    // checks (the dashboard's playground POSTs); on a safe one it is anonymous.
    let auth = if cookie_on_safe_method(&req) {
        Auth(None)
    } else {
        auth
    };
    forward(state, auth, &req, payload.into_inner()).await
}

/// Calls the endpoint `req` names for the caller `auth` (authenticated, CSRF-
/// and rate-checked by the caller of this), and answers the worker's response
/// as it streams.
async fn forward(
    state: web::Data<AppState>,
    auth: Auth,
    req: &HttpRequest,
    mut payload: actix_web::dev::Payload,
) -> ApiResult<HttpResponse> {
    let started = Instant::now();
    // The path as the router reads it (`match_info`: percent-encoded bytes
    // that need no encoding are decoded), before or after routing.
    let Some((ns, name, tail)) = req
        .match_info()
        .as_str()
        .strip_prefix("/endpoints")
        .and_then(split_target)
    else {
        return Ok(crate::routes::not_found(req.clone()).await);
    };
    let tail = tail.trim_start_matches('/');
    check_tail(tail).map_err(ApiError::InvalidPath)?;
    let route = state.live.route(&state.db, ns, name).await?;
    let e = &route.endpoint;
    let token_id = authorize(&state, &auth, e).await?;
    // Read here, once the caller is authorized (an outsider's body is never buffered),
    // up to `MAX_BODY` (the framework's `Bytes` extractor stopped at its own 256 KiB).
    let body = crate::routes::body::read_up_to(req, &mut payload, MAX_BODY).await?;
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
        route: route.clone(),
        token_id,
        started,
        status,
        input_tokens: 0,
        output_tokens: 0,
    };
    let deadline = Instant::now() + WAKE_WAIT;
    let mut tried: Vec<Uuid> = Vec::new();
    let mut woke = false;
    let mut ready: Option<ReadyWait> = None;
    // Counted in `paddock_endpoint_queued_requests` while held for a replica.
    let mut queued: Option<hub_telemetry::metrics::Tracked> = None;
    // The cached replicas first; after a failure, what the database says now.
    let mut reread: Option<Vec<Candidate>> = None;
    loop {
        let candidates = reread.as_deref().unwrap_or(&route.candidates);
        let Some(picked) = state.live.pick(candidates, &tried) else {
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
            match ready.as_mut() {
                // Subscribed first, then read again at once: a replica that became
                // ready since the route was read is not waited for.
                None => {
                    ready = Some(state.live.wait_ready(e.id));
                    queued = Some(state.metrics.endpoint_queued.track(&[&endpoint_label(e)]));
                }
                Some(w) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let poll = state.live.wake_poll_ms.load(Ordering::Relaxed);
                    let wait = Duration::from_millis(poll).min(left);
                    if let Ok(Err(_)) = tokio::time::timeout(wait, w.rx.changed()).await {
                        // Cannot happen while subscribed (the sender stays with its
                        // receivers); never spin on it.
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            tried.clear();
            reread = Some(routable(&state.db, e.id).await?);
            continue;
        };
        let replica = picked.id;
        let target = picked
            .target(tail)
            .map_err(|e| ApiError::InvalidPath(format!("cannot forward this path: {e}")))?;
        drop(queued.take());
        let counted = state.metrics.endpoint_in_flight.track(&[&route.label]);
        let guard = state.live.enter(replica, counted);
        let mut fwd = http::Request::builder()
            .method(req.method().as_str())
            .uri(target)
            .header(http::header::AUTHORIZATION, picked.auth.clone());
        for h in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
            if let Some(v) = req.headers().get(h.as_str()) {
                fwd = fwd.header(h, v.as_bytes());
            }
        }
        // One request id in the hub's and the worker's logs.
        if let Some(id) = actix_web::HttpMessage::extensions(req).get::<crate::server::RequestId>()
        {
            fwd = fwd.header(hub_telemetry::request_id::HEADER, id.0.as_str());
        }
        let fwd = fwd
            .body(http_body_util::Full::new(body.clone()))
            .map_err(|e| ApiError::InvalidRequest(format!("cannot forward this request: {e}")))?;
        let client = state.live.client();
        match client.send(fwd).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Refused before the worker started it (the model is restarting, not
                // ready or gone there): another replica takes it when there is one.
                if resp.headers().contains_key(NOT_STARTED_HEADER) {
                    tried.push(replica);
                    if state.live.pick(candidates, &tried).is_some() {
                        tracing::info!(endpoint = %format!("{ns}/{name}"), replica = %replica, status, "the replica did not start the call; trying another");
                        continue;
                    }
                }
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
                out.insert_header(("X-Paddock-Replica", picked.id_header.clone()));
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
                let length = http_body::Body::size_hint(resp.body()).exact();
                let body =
                    relay::Relay::new(Box::pin(client.body(resp.into_body())), sse, m, guard);
                return Ok(match length {
                    Some(n) if !sse => out.body(actix_web::body::SizedStream::new(n, body)),
                    _ => out.streaming(body),
                });
            }
            Err(err) => {
                tracing::warn!(endpoint = %format!("{ns}/{name}"), replica = %replica, error = %err, "worker unreachable");
                state.live.mark_suspect(replica);
                state.live.forget_endpoint(e.id);
                tried.push(replica);
                // The worker took the request and then went silent: not
                // sent again (it may still be running there).
                if matches!(err, upstream::Failure::Timeout) {
                    meter(504).record();
                    return Err(ApiError::UpstreamTimeout(format!(
                        "the worker sent nothing for {} s",
                        state.live.read_timeout().as_secs()
                    )));
                }
                // Unreachable: the next replica is tried until the deadline.
                if Instant::now() >= deadline {
                    meter(503).record();
                    return Err(ApiError::Unavailable(
                        "no replica of this endpoint could be reached; retry shortly".into(),
                    ));
                }
                reread = Some(routable(&state.db, e.id).await?);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_tail, route_label, split_target, Candidate};

    #[test]
    fn gateway_calls_are_labelled_as_the_route_table_labels_them() {
        for (path, want) in [
            ("/endpoints/acme/e", Some("/endpoints/{ns}/{name}")),
            ("/endpoints/acme", Some("/endpoints/{ns}/{name}")),
            ("/endpoints/", Some("/endpoints/{ns}/{name}")),
            ("/endpoints/acme/e/", Some("/endpoints/{ns}/{name}/{tail}")),
            (
                "/endpoints/acme/e/v1/embeddings",
                Some("/endpoints/{ns}/{name}/{tail}"),
            ),
            ("/endpoints", None),
            ("/endpointsx/a/b", None),
            ("/api/v1/endpoints/acme/e", None),
        ] {
            assert_eq!(route_label(path), want, "{path}");
        }
    }

    #[test]
    fn a_tail_that_could_leave_its_replica_is_refused() {
        for bad in [
            "..",
            ".",
            "v1/../x",
            "v1/./x",
            "..\\x",
            "v1\\x",
            "%2e%2e/x",
            ".%2E/x",
            "%252e%252e/x",
            "%25252e./x",
            "..%2Fx",
            "a%2fb",
            "a%5cb",
            "a%255Cb",
        ] {
            assert!(check_tail(bad).is_err(), "{bad:?} passed");
        }
        for good in [
            "",
            "v1/embeddings",
            "pipeline/feature-extraction",
            "a%20b/%7e",
            "...",
            "..a/b..",
            "x.y/.hidden",
            "100%",
            "%zz",
            "caf\u{e9}",
        ] {
            assert_eq!(check_tail(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn a_replica_target_is_its_worker_url_with_the_tail() {
        let id = uuid::Uuid::nil();
        for (url, tail, want) in [
            (
                "http://127.0.0.1:9000",
                "",
                format!("http://127.0.0.1:9000/models/{id}"),
            ),
            (
                "http://127.0.0.1:9000/",
                "v1/embeddings",
                format!("http://127.0.0.1:9000/models/{id}/v1/embeddings"),
            ),
            (
                "https://w.internal/prefix",
                "v1/chat/completions",
                format!("https://w.internal/prefix/models/{id}/v1/chat/completions"),
            ),
            (
                "http://[::1]:8/",
                "a b/%7e",
                format!("http://[::1]:8/models/{id}/a%20b/%7e"),
            ),
            // Nothing is resolved or rewritten: what would climb is data.
            (
                "http://127.0.0.1:9000",
                "q?x=1#f/\\/..\\caf\u{e9}",
                format!("http://127.0.0.1:9000/models/{id}/q%3Fx=1%23f/%5C/..%5Ccaf%C3%A9"),
            ),
        ] {
            let c = Candidate::from_rows(vec![(id, url.into(), "s3cret".into(), 0)]);
            assert_eq!(c.len(), 1, "{url}");
            assert_eq!(
                c[0].target(tail).unwrap().to_string(),
                want,
                "{url} + {tail:?}"
            );
            assert_eq!(c[0].auth.to_str().unwrap(), "Bearer s3cret");
            assert!(c[0].auth.is_sensitive());
        }
        // A worker URL that does not parse, or whose query or fragment would
        // swallow the replica's path (or a secret that is no header), is skipped.
        let rows = vec![
            (id, "not a url".into(), "s".into(), 0),
            (id, "http://169.254.169.254/latest/?".into(), "s".into(), 0),
            (id, "http://w:1/#".into(), "s".into(), 0),
            (id, "http://w:1".into(), "bad\nsecret".into(), 0),
        ];
        assert!(Candidate::from_rows(rows).is_empty());
    }

    #[test]
    fn the_rest_of_the_path_splits_into_namespace_name_and_tail() {
        assert_eq!(
            split_target("/acme/e/v1/embeddings"),
            Some(("acme", "e", "v1/embeddings"))
        );
        assert_eq!(split_target("/acme/e"), Some(("acme", "e", "")));
        assert_eq!(split_target("/acme/e/"), Some(("acme", "e", "")));
        assert_eq!(split_target("/acme/e//x"), Some(("acme", "e", "/x")));
        for missing in ["", "/", "/acme", "/acme/", "//e", "//e/v1"] {
            assert_eq!(split_target(missing), None, "{missing:?}");
        }
    }
}
