//! Paddock inference worker: pulls model weights through the hub's own HF-compatible API,
//! loads them into an in-process engine and serves inference over HTTP.
//!
//! * [`engine`]: the engine, usable on its own (`Model::load`, `embed`, `classify`).
//! * [`http`]: the worker's inference API (OpenAI `/v1/embeddings`, HF task API).
//! * [`pull`]: fetching and verifying files into the content-addressed cache.
//! * [`control`]: registration, heartbeats and assignments with hub-api.
//! * [`finetune`]: fine-tuning jobs claimed from the hub, trained with candle.
//! * [`run`]: all of it together, as `hub-worker` runs it (also in-process in hub-api).

pub mod allocator;
mod child_exe;
pub mod config;
pub mod control;
pub mod engine;
pub mod finetune;
pub mod fixtures;
pub mod fuzzing;
pub mod host;
pub mod http;
pub mod pull;
pub mod registry;
pub mod runtime_fetch;

pub use config::WorkerConfig;

/// Call first thing in `main` of a binary that runs a worker. A child process of a
/// worker runs its role here and exits: a chat-template helper
/// (`engine::generate::sandbox`) or a GGUF probe (`engine::generate::llama::probe`). Any
/// other run returns, and the binary becomes its own executable for both roles.
pub fn serve_child_if_asked() {
    engine::generate::sandbox::serve_if_asked();
    #[cfg(feature = "engine-llama")]
    engine::generate::llama::probe::serve_probe_if_asked();
    #[cfg(feature = "engine-llama")]
    engine::generate::llama::host::serve_host_if_asked();
}

use std::future::Future;
use std::sync::Arc;

fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "hub-worker".to_string())
}

fn public_url_for(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}", addr.port())
}

/// Runs a worker until `shutdown` resolves: binds the inference API, registers with the hub
/// and serves what it is assigned. Fails at start for bad configuration, and later only
/// if the hub rejects the worker token.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let mut cfg = hub_worker::WorkerConfig::new("http://127.0.0.1:8080", "hf_worker_token");
/// cfg.cache_dir = "/var/lib/paddock/worker".into();
/// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
/// let worker = tokio::spawn(hub_worker::run(cfg, async { let _ = rx.await; }));
/// // ... later
/// let _ = tx.send(());
/// worker.await??;
/// # Ok(()) }
/// ```
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    let threads = engine::threads::init_compute_threads(config.compute_threads());
    // OpenVINO from --openvino-lib, else fetched into the cache dir on first use
    // (`runtime_fetch`); model loads wait on `engines_ready`. The other graph
    // engines start here (`engine::select::init_engines`).
    let engines_ready = runtime_fetch::start(&config, threads).await?;
    let libraries = engine::select::EngineLibraries {
        ort_dylib: config.ort_dylib.as_deref(),
        openvino_lib: config.openvino_lib.as_deref(),
        ort_spinning: config.ort_spinning,
        openvino_started_elsewhere: true,
    };
    engine::select::init_engines(config.engine, &libraries, threads)
        .map_err(|e| anyhow::anyhow!("--engine {}: {e}", config.engine))?;
    let cache = pull::cache::BlobCache::open_with(&config.cache_dir, config.cache_limits())
        .map_err(|e| {
            anyhow::anyhow!("cannot use --cache-dir {}: {e}", config.cache_dir.display())
        })?;
    let cache_metrics = cache.metrics();
    tracing::info!(
        cache_dir = %cache.root().display(),
        max = %config.cache_limits().max_bytes.map_or("none".to_string(), pull::evict::human),
        min_free = %match config.cache_limits().min_free {
            pull::evict::MinFree::Auto => "5 GiB or 10% of its file system, whichever is smaller".to_string(),
            pull::evict::MinFree::Bytes(b) => pull::evict::human(b),
        },
        used_bytes = cache_metrics.used_bytes.get(&[]),
        "model cache"
    );
    let registry = Arc::new(registry::ModelRegistry::new());
    let auth = Arc::new(http::GatewayAuth::pending());
    let server = http::Server::start(
        &config.bind,
        http::HttpState {
            registry: registry.clone(),
            auth: auth.clone(),
            metrics: Arc::new(http::metrics::WorkerMetrics::with_cache(cache_metrics)),
        },
        config.http_threads,
    )
    .map_err(|e| anyhow::anyhow!("cannot listen on --bind {}: {e}", config.bind))?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| public_url_for(server.addr))
        .trim_end_matches('/')
        .to_string();
    tracing::info!(addr = %server.addr, public_url = %public_url, threads, "worker listening");

    let engine_cfg = config.engine_config();
    let ctx = Arc::new(control::ControlContext {
        hub_url: config.hub_url.trim_end_matches('/').to_string(),
        token: config.token.clone(),
        token_refresh: config.token_refresh.clone(),
        name: config.name.clone().unwrap_or_else(default_name),
        public_url,
        capacity: control::wire::Capacity {
            memory_bytes: host::mem_total_bytes().unwrap_or(0),
            cores: threads as u32,
        },
        registry: registry.clone(),
        auth,
        puller: pull::Puller::new(cache, &config.hub_url),
        engine: engine_cfg,
        wait_s: config.poll_wait_s,
        load_slots: Arc::new(tokio::sync::Semaphore::new(2)),
        engines_ready,
        changed: Arc::new(tokio::sync::Notify::new()),
        registration: control::SharedRegistration::default(),
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let jobs = if config.jobs {
        let client =
            control::Client::new(&ctx.hub_url, &config.token, config.token_refresh.clone())?;
        let runner = Arc::new(finetune::runner::RunnerContext {
            client: Arc::new(client),
            puller: ctx.puller.clone(),
            name: ctx.name.clone(),
            registration: ctx.registration.clone(),
            work_dir: config.cache_dir.join("jobs"),
            poll: std::time::Duration::from_secs(2),
        });
        Some(tokio::spawn(finetune::runner::run(runner, cancel.clone())))
    } else {
        None
    };
    let mut control = tokio::spawn(control::run(ctx, cancel.clone()));
    let (result, finished) = tokio::select! {
        _ = shutdown => (Ok(()), false),
        r = &mut control => (match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e)),
            Err(e) => Err(anyhow::anyhow!("control loop panicked: {e}")),
        }, true),
    };
    cancel.cancel();
    if !finished {
        let _ = control.await;
    }
    if let Some(jobs) = jobs {
        let _ = jobs.await;
    }
    server.stop().await;
    tracing::info!("worker stopped");
    result
}
