//! Process start-up: configuration, the database (external or the private
//! cluster), migrations, storage, keys, the HTTP server and its shutdown.

use crate::auth::jwt::KeyRing;
use crate::config::{Cli, Command, Config};
use crate::diskspace::Reserve;
use crate::health::Health;
use crate::pgcluster::PgCluster;
use crate::state::{AppState, Limits};
use crate::storage::Storage;
use actix_web::HttpServer;
use hub_types::control::TokenRefresh;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sets up logging once (text or JSON lines; `HUB_LOG` filters), and the
/// OTLP trace export when `otlp_endpoint` is set. Keep the guard until exit:
/// dropping it sends the spans still buffered.
pub fn init_logging(
    format: &str,
    otlp_endpoint: Option<&str>,
    flush_ms: u64,
) -> anyhow::Result<hub_telemetry::logging::Guard> {
    hub_telemetry::logging::init(&hub_telemetry::logging::Options {
        service: "paddock-hub",
        format,
        filter_env: "HUB_LOG",
        default_filter: "info,sqlx=warn",
        otlp_endpoint,
        flush_interval: Duration::from_millis(flush_ms),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The database the hub uses: `DATABASE_URL`, or the private cluster (started
/// or attached to) with its `paddock` database.
pub async fn database(config: &Config) -> anyhow::Result<(String, Option<PgCluster>)> {
    if let Some(url) = &config.database_url {
        return Ok((url.clone(), None));
    }
    let dir = config.data_dir.join("pg");
    let fast = config.pg_unsafe_fast;
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&dir, fast)).await??;
    let admin_url = cluster.url("postgres");
    let pool = crate::db::connect(&admin_url, 1).await?;
    let exists: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = 'paddock'")
            .fetch_optional(&pool)
            .await?;
    if exists.is_none() {
        if let Err(e) = sqlx::query("CREATE DATABASE paddock").execute(&pool).await {
            if !e.to_string().contains("already exists") {
                return Err(e.into());
            }
        }
    }
    pool.close().await;
    Ok((cluster.url("paddock"), Some(cluster)))
}

/// Builds the shared state (migrating the database first).
pub async fn build_state(
    config: &Config,
    db_url: &str,
    public_url: String,
) -> anyhow::Result<AppState> {
    let db = crate::db::connect(db_url, config.db_pool).await?;
    crate::db::migrate(&db).await?;
    let storage_url = config
        .storage_url
        .clone()
        .unwrap_or_else(|| config.data_dir.join("objects").display().to_string());
    let storage = Storage::from_url(&storage_url)?;
    // The reserve covers the local object store and the private cluster (an
    // external database keeps its own disk).
    let mut dirs = Vec::new();
    if let Some(root) = storage.local_root() {
        dirs.push(root.to_path_buf());
    }
    if config.database_url.is_none() {
        dirs.push(config.data_dir.join("pg"));
    }
    let reserve = Reserve::new(dirs, config.disk_reserve_mb.saturating_mul(1 << 20));
    let storage = storage.with_reserve(reserve.clone());
    let keys = KeyRing::load(db.clone()).await?;
    Ok(AppState {
        db,
        storage,
        public_url,
        keys,
        limits: Limits {
            xet_token_ttl_s: i64::from(config.xet_token_ttl_secs),
            contribution: i64::from(config.contribution_limit_mb) << 20,
            ..Limits::default()
        },
        live: Default::default(),
        tenancy: crate::state::Tenancy::from_config(config),
        health: Arc::new(Health::new(reserve)),
        scheduler: Default::default(),
        facets: Default::default(),
        resolved: Arc::new(crate::resolve_cache::ResolveCache::new(
            std::time::Duration::from_secs(config.repo_cache_ttl_secs as u64),
        )),
        pack_entries: Default::default(),
        metrics: Default::default(),
    })
}

/// Lifetime of the in-process worker's control-plane token; it is re-minted
/// (with the current signing key) whenever the hub rejects it.
pub const EMBEDDED_WORKER_TOKEN_TTL_S: i64 = 24 * 3600;

/// How the in-process worker gets a fresh control-plane token when the hub
/// rejects its current one (the key that signed it was retired, or it expired).
pub fn worker_token_refresh(state: &AppState) -> TokenRefresh {
    let state = state.clone();
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            crate::auth::service_tokens::worker_token(&state, EMBEDDED_WORKER_TOKEN_TTL_S)
                .await
                .map_err(|e| e.to_string().into())
        })
    })
}

/// What the hub hands its in-process worker: everything a remote worker would be
/// configured with, nothing more (no database, no state).
pub struct WorkerHandoff {
    /// This hub's base URL over loopback.
    pub hub_url: String,
    /// A hub-signed control-plane token (scope `worker`), valid
    /// [`EMBEDDED_WORKER_TOKEN_TTL_S`].
    pub token: String,
    /// Mints a fresh token when the hub rejects the current one.
    pub token_refresh: TokenRefresh,
    /// `--worker-cache-dir`, else `<data-dir>/worker-cache`.
    pub cache_dir: std::path::PathBuf,
    /// `--worker-threads` (None: the cores this process may use).
    pub threads: Option<usize>,
    /// Resolves when the hub shuts down; the worker stops then.
    pub stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Starts an in-process worker from a [`WorkerHandoff`] and returns it as a future the
/// hub runs next to its HTTP server (an error is logged; the hub keeps serving). The
/// hub library links no inference engine: the `hub-api` binary (package `paddock`)
/// passes one that runs `hub_worker::run`.
pub type EmbeddedWorker =
    Box<dyn FnOnce(WorkerHandoff) -> Pin<Box<dyn Future<Output = anyhow::Result<()>>>>>;

/// Keeps the private cluster running while `serve` runs (a thread: `pg_ctl`
/// blocks): adopts it when its owner is gone, restarts it when its postmaster
/// died. Stops when `stop` is set.
fn supervise_cluster(cluster: Arc<Mutex<PgCluster>>) -> Supervisor {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut failing = false;
        while !flag.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(500));
            if flag.load(Ordering::Acquire) {
                break;
            }
            let mut c = cluster.lock().expect("cluster lock");
            match c.supervise() {
                Ok(_) => failing = false,
                // Logged once per failure streak; retried every half second.
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(
                        error = format!("{e:#}"),
                        "restarting the private PostgreSQL server failed; retrying"
                    );
                }
                Err(_) => {}
            }
        }
    });
    Supervisor {
        stop,
        thread: Some(thread),
    }
}

/// The cluster supervisor's thread; stopped (and joined) when dropped, before
/// the cluster itself is stopped.
struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a parsed command line; `serve` runs `worker` in process.
pub fn run_cli(cli: Cli, worker: Option<EmbeddedWorker>) -> anyhow::Result<()> {
    cli.config.validate()?;
    let _logging = init_logging(
        &cli.config.log_format,
        cli.config.otlp_endpoint.as_deref(),
        cli.config.log_flush_ms,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config, worker),
        Command::Migrate => rt.block_on(async {
            let (url, _cluster) = database(&cli.config).await?;
            let pool = crate::db::connect(&url, 2).await?;
            crate::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }),
        Command::Admin(cmd) => rt.block_on(async {
            let (url, _cluster) = database(&cli.config).await?;
            let pool = crate::db::connect(&url, 2).await?;
            crate::db::migrate(&pool).await?;
            crate::admin::run(&pool, cmd).await
        }),
    }
}

/// Logs each request once: method, path (never the query string, which may
/// carry signed-link tokens), status and duration. Called inside the
/// request's span, which carries its request id.
fn log_request(method: &str, path: &str, status: u16, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(
            http.method = method,
            http.path = path,
            http.status = status,
            duration_ms = ms,
            "request"
        );
    } else {
        tracing::info!(
            http.method = method,
            http.path = path,
            http.status = status,
            duration_ms = ms,
            "request"
        );
    }
}

/// The id of the request being handled (`X-Request-Id`), in its extensions:
/// the gateway forwards it to the worker it calls.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The access log and metrics middleware, outermost. Per request: its id
/// (`X-Request-Id` on the response, and a `request` span around everything
/// done for it, so every log line of the request carries `request_id`, and an
/// exported trace has one span per request named by its route); one log line
/// (method, path, status, duration; never the query string, headers or
/// cookies); and its metrics (`metrics`): count, latency to the response
/// head, body bytes read and written, by route pattern.
pub async fn access_log(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse, actix_web::Error> {
    use actix_web::HttpMessage;
    use tracing::Instrument;
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_string();
    let request_id = request_id(req.headers());
    let metrics = req
        .app_data::<actix_web::web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = hub_telemetry::request_id::request_span(method.as_str(), &request_id);
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let payload = req.take_payload();
    if !matches!(payload, actix_web::dev::Payload::None) {
        let counter = received.clone();
        let counted = futures::StreamExt::inspect(payload, move |chunk| {
            if let Ok(b) = chunk {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        });
        req.set_payload(actix_web::dev::Payload::from(
            Box::pin(counted) as actix_http::BoxedPayloadStream
        ));
    }
    let in_flight = metrics.as_ref().map(|m| m.http_in_flight.track(&[]));
    let res = next.call(req).instrument(span.clone()).await;
    drop(in_flight);
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    // The gateway's calls are labelled without the route table (most never
    // reach it: `gateway::front`).
    let route: std::borrow::Cow<'static, str> = match (crate::gateway::route_label(&path), &res) {
        (Some(label), _) => label.into(),
        (None, Ok(r)) => r
            .request()
            .app_data::<crate::metrics::RouteLabel>()
            .map_or("unmatched", |l| {
                let params: Vec<&str> = r.request().match_info().iter().map(|(k, _)| k).collect();
                l.label(&path, &params)
            })
            .to_string()
            .into(),
        (None, Err(_)) => "unmatched".into(),
    };
    hub_telemetry::request_id::finish_span(&span, method.as_str(), &route, status);
    span.in_scope(|| log_request(method.as_str(), &path, status, started));
    let sent = metrics.map(|m| {
        let mut digits = itoa::Buffer::new();
        m.http_requests
            .inc(&[&route, method.as_str(), digits.format(status)]);
        m.http_duration
            .observe(&[&route, method.as_str()], started.elapsed().as_secs_f64());
        crate::metrics::BodyCount {
            sent: m.http_sent.series(&[&route]),
            received_total: m.http_received.series(&[&route]),
            received,
        }
    });
    res.map(|mut r| {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&request_id) {
            r.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                v,
            );
        }
        match sent {
            Some(count) => r.map_into_boxed_body().map_body(|_, body| {
                actix_web::body::BoxBody::new(crate::metrics::CountedBody { body, count })
            }),
            None => r.map_into_boxed_body(),
        }
    })
}

/// The id every response carries as `X-Request-Id` (the HF clients print it in
/// their errors): the caller's own `X-Request-Id` or `X-Amzn-Trace-Id` (the
/// Python client sends a fresh one per request) when it is a short token,
/// else a new one.
fn request_id(headers: &actix_web::http::header::HeaderMap) -> String {
    hub_telemetry::request_id::accept(
        ["x-request-id", "x-amzn-trace-id"]
            .iter()
            .filter_map(|h| headers.get(*h)?.to_str().ok()),
    )
}

/// Starts the in-process worker: mints its token and hands it what a remote
/// worker would be configured with.
async fn embedded_worker(
    start: EmbeddedWorker,
    config: &Config,
    state: &AppState,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<impl Future<Output = ()>> {
    let token = crate::auth::service_tokens::worker_token(state, EMBEDDED_WORKER_TOKEN_TTL_S)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let run = start(WorkerHandoff {
        hub_url: format!("http://{host}:{}", addr.port()),
        token,
        token_refresh: worker_token_refresh(state),
        cache_dir: config
            .worker_cache_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("worker-cache")),
        threads: config.worker_threads,
        stop: Box::pin(async move {
            let _ = stop.await;
        }),
    });
    Ok(async move {
        if let Err(e) = run.await {
            tracing::error!(error = format!("{e:#}"), "in-process worker stopped");
        }
    })
}

/// Runs the HTTP server until SIGINT/SIGTERM, then drains and stops the private cluster.
/// Runs `worker` next to it unless `--no-worker`.
pub fn serve(config: Config, worker: Option<EmbeddedWorker>) -> anyhow::Result<()> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let (db_url, cluster) = database(&config).await?;
        let cluster = cluster.map(|c| Arc::new(Mutex::new(c)));
        let listener = std::net::TcpListener::bind(config.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (set HUB_BIND)", config.bind))?;
        let addr = listener.local_addr()?;
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{addr}"),
        };
        let state = build_state(&config, &db_url, public_url.clone()).await?;
        // Declared after `cluster`: dropped (stopped) first on every exit path.
        let supervisor = cluster.clone().map(supervise_cluster);
        crate::health::spawn_probe(state.clone());
        if let Some(short) = state.health.reserve.shortage(0) {
            eprintln!(
                "paddock: warning: {short}: writes are refused (507) until space is freed \
                 (HUB_DISK_RESERVE_MB)"
            );
        }
        crate::sweeper::spawn(state.clone());
        crate::webhooks::delivery::spawn(state.clone());
        crate::viewer::jobs::spawn(state.clone());
        crate::scheduler::spawn(state.clone(), db_url.clone());
        let workers = config.http_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let metrics_server = match config.metrics_bind {
            Some(bind) => {
                let metrics_state = state.clone();
                let server =
                    HttpServer::new(move || crate::metrics::metrics_app(metrics_state.clone()))
                        .workers(1)
                        .disable_signals()
                        .shutdown_timeout(1)
                        .bind(bind)
                        .map_err(|e| {
                            anyhow::anyhow!("cannot listen on {bind}: {e} (set HUB_METRICS_BIND)")
                        })?;
                for a in server.addrs() {
                    println!("paddock: metrics on http://{a}/metrics");
                }
                Some(server.run())
            }
            None => None,
        };
        let metrics_handle = metrics_server.as_ref().map(|s| s.handle());
        if let Some(s) = metrics_server {
            actix_web::rt::spawn(s);
        }
        let app_state = state.clone();
        let server = HttpServer::new(move || crate::app::build_app(app_state.clone()))
            .workers(workers)
            .client_request_timeout(Duration::from_secs(10))
            // Longer than clients keep an idle pooled connection (httpx: 5 s), so a
            // client never reuses one that we are closing at that moment.
            .keep_alive(hub_types::control::SERVER_KEEP_ALIVE)
            // A client that closes its connection is gone (HTTP/1.1 clients do not
            // half-close): the response being streamed to it is dropped at once, which
            // drops the gateway's stream from the worker and so cancels a generation
            // even while no byte flows (with half-closed connections allowed, actix
            // would notice only at its next write).
            .h1_allow_half_closed(false)
            // actix keeps the OS default (Nagle on). A proxied or streamed response
            // writes its head before its body arrives; with Nagle the body then waits
            // for the client's delayed ACK (up to 40 ms per response, and per event of
            // an SSE stream).
            .tcp_nodelay(true)
            .shutdown_timeout(15)
            .listen(listener)?
            .run();
        let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = match worker {
            Some(start) if !config.no_worker => {
                let run = embedded_worker(start, &config, &state, addr, worker_stopped).await?;
                Some(actix_web::rt::spawn(run))
            }
            _ => None,
        };
        // Scripts read the address from this line; behind a load balancer the
        // public URL is the balancer's, not this replica's.
        let bound = format!("http://{addr}");
        if bound == public_url {
            println!(
                "paddock: listening on {bound} (storage {})",
                state.storage.describe()
            );
        } else {
            println!(
                "paddock: listening on {bound} (public URL {public_url}, storage {})",
                state.storage.describe()
            );
        }
        tracing::info!(url = %public_url, "hub-api listening");
        let result = server.await;
        tracing::info!("hub-api stopped; shutting down");
        if let Some(h) = metrics_handle {
            h.stop(false).await;
        }
        state.live.flush_usage(&state.db).await;
        let _ = stop_worker.send(());
        if let Some(w) = worker {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
        state.db.close().await;
        drop(supervisor);
        if let Some(c) = cluster {
            c.lock().expect("cluster lock").stop();
        }
        result.map_err(Into::into)
    })
}
