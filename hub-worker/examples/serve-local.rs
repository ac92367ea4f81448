//! Serves model directories with the worker's HTTP API and no hub, for client checks and
//! HTTP benchmarks:
//!
//! ```text
//! cargo run --release -p hub-worker --example serve-local -- \
//!     --bind 127.0.0.1:8099 [--secret S] KEY=DIR[:TASK] [KEY=DIR[:TASK] ...]
//! ```
//! Prints `listening on http://ADDR` once the models are loaded.

use hub_worker::engine::{EngineConfig, Model, Task};
use hub_worker::http::{GatewayAuth, HttpState, Server};
use hub_worker::registry::ModelRegistry;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    // Chat templates render in helpers and GGUF files are probed, as in `hub-worker`.
    hub_worker::serve_child_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut bind = "127.0.0.1:0".to_string();
    let mut secret = None;
    let mut models = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bind" => bind = it.next().ok_or_else(|| anyhow::anyhow!("--bind ADDR"))?,
            "--secret" => secret = it.next(),
            spec => {
                let (key, rest) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("expected KEY=DIR[:TASK], got {spec}"))?;
                let (dir, task) = match rest.rsplit_once(':') {
                    Some((d, t)) if Task::parse(t).is_ok() => (d.to_string(), Task::parse(t).ok()),
                    _ => (rest.to_string(), None),
                };
                models.push((key.to_string(), dir, task));
            }
        }
    }
    let threads = hub_worker::host::cores();
    hub_worker::engine::threads::set_env_threads(threads);
    tracing_subscriber::fmt().with_env_filter("info").init();
    #[cfg(feature = "engine-ort")]
    if let Err(e) = hub_worker::engine::ort::init(None, threads) {
        tracing::info!(reason = %e, "ONNX Runtime not available; using candle");
    }
    let registry = Arc::new(ModelRegistry::new());
    for (key, dir, task) in models {
        let model = Model::load(std::path::Path::new(&dir), task, &EngineConfig::default())?;
        registry.insert_model(&key, &key, model);
    }
    let auth = match &secret {
        Some(s) => GatewayAuth::with_secret(s),
        None => GatewayAuth::open(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::start(
            &bind,
            HttpState {
                registry,
                auth: Arc::new(auth),
                metrics: Default::default(),
            },
            2,
        )?;
        println!("listening on http://{}", server.addr);
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        Ok(())
    })
}
