//! `hub-worker`: see `hub-worker --help`.

use clap::Parser;
use hub_worker::WorkerConfig;

fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    // Before any thread exists: candle/rayon read their thread counts from the environment.
    hub_worker::engine::threads::set_env_threads(config.compute_threads());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hub_worker=info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(hub_worker::run(config, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }))
}
