//! `hub-worker`: see `hub-worker --help`.

use clap::Parser;
use hub_worker::WorkerConfig;

/// mimalloc, as the hub binary: a fine-tuning step allocates and frees tensors
/// of megabytes, which glibc's allocator returns to the kernel each time (page
/// faults and TLB shootdowns across the compute threads); with mimalloc a
/// MiniLM step at 2 threads took 279 ms instead of 364 ms (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // A child of this worker (a chat-template helper, a GGUF probe) runs and exits here.
    hub_worker::serve_child_if_asked();
    hub_worker::allocator::configure();
    let config = WorkerConfig::parse();
    // Before any thread exists: candle/rayon read their thread counts from the environment.
    hub_worker::engine::threads::set_env_threads(config.compute_threads());
    let _logging = hub_telemetry::logging::init(&hub_telemetry::logging::Options {
        service: "paddock-worker",
        format: &config.log_format,
        filter_env: "RUST_LOG",
        default_filter: "info,hub_worker=info",
        otlp_endpoint: config.otlp_endpoint.as_deref(),
        flush_interval: std::time::Duration::from_millis(config.log_flush_ms),
    })
    .map_err(|e| anyhow::anyhow!("--otlp-endpoint: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(hub_worker::run(config, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }))
}
