//! `hub-api`, the single-node binary: the hub library ([`hub_api`]) with a
//! [`hub_worker`] running in process (unless `--no-worker`), so one command serves
//! models. Serve (default), migrate, admin. The hub library links no inference engine;
//! this package is where the two meet.

use clap::Parser;

/// mimalloc rather than glibc's malloc: the hub's request path allocates many
/// small objects, and glibc's allocator was about 14% of the gateway's CPU per
/// proxied call (`docs/BENCHMARKS.md`, issue 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hub_api::server::{EmbeddedWorker, WorkerHandoff};

fn main() -> std::process::ExitCode {
    // A child of this worker (a chat-template helper, a GGUF probe) runs and exits here.
    hub_worker::serve_child_if_asked();
    hub_worker::allocator::configure();
    let cli = hub_api::config::Cli::parse();
    // Before any thread exists: the in-process worker's compute pools read these.
    let threads = cli.config.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    hub_worker::engine::threads::set_env_threads(threads);
    match hub_api::server::run_cli(cli, Some(in_process_worker())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The in-process worker: a `hub-worker` talking to this hub over loopback with a
/// hub-signed control-plane token (no database credentials, exactly like a remote
/// worker). It takes the standalone worker's engine settings from the environment.
fn in_process_worker() -> EmbeddedWorker {
    Box::new(|h: WorkerHandoff| {
        let mut cfg = hub_worker::WorkerConfig::new(&h.hub_url, &h.token);
        cfg.cache_dir = h.cache_dir;
        cfg.threads = h.threads;
        cfg.name = Some("embedded".into());
        cfg.token_refresh = Some(h.token_refresh);
        cfg.ort_dylib = std::env::var_os("ORT_DYLIB_PATH").map(Into::into);
        cfg.openvino_lib = std::env::var_os(hub_worker::engine::openvino::LIB_ENV).map(Into::into);
        if let Ok(v) = std::env::var("HUB_WORKER_ENGINE") {
            match v.parse::<hub_worker::engine::EnginePreference>() {
                Ok(engine) => cfg.engine = engine,
                Err(e) => {
                    let e = anyhow::anyhow!("HUB_WORKER_ENGINE: {e}");
                    return Box::pin(async move { Err(e) });
                }
            }
        }
        // The cache budget and free-space floor (`hub-worker --help`); checked by
        // `WorkerConfig::validate` when the worker starts.
        if let Err(e) = cfg.cache_limits_from_env() {
            return Box::pin(async move { Err(e) });
        }
        let env_usize = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        if let Some(n) = env_usize("HUB_WORKER_FORWARD_BATCH_SIZE") {
            cfg.forward_batch_size = n;
        }
        if let Some(n) = env_usize("HUB_WORKER_REPLICAS") {
            cfg.replicas = n;
        }
        if let Some(n) = env_usize("HUB_WORKER_FILL_WAIT_US") {
            cfg.fill_wait_us = n as u64;
        }
        Box::pin(hub_worker::run(cfg, h.stop))
    })
}
