//! Cold start of a worker with an empty cache: time from an assignment appearing on the
//! (fake, in-process) hub to the first successful embedding through the worker's HTTP API.
//! The fake hub is the one the tests use (`tests/common/fake_hub.rs`); pulls go through
//! `hf-hub` over local HTTP exactly as against hub-api.
//!
//! ```text
//! cargo run --release -p hub-worker --example cold-start -- MINILM_DIR [--engine candle|ort]
//! ```

#[path = "../tests/common/fake_hub.rs"]
mod fake_hub;

use fake_hub::*;
use serde_json::json;
use std::time::{Duration, Instant};

const COMMIT: &str = "c0ffee0123456789abcdef0123456789abcdef01";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let minilm = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: cold-start MINILM_DIR [--engine E]"))?
        .clone();
    let engine = args
        .iter()
        .position(|a| a == "--engine")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "auto".into());
    let threads = hub_worker::host::cores();
    hub_worker::engine::threads::set_env_threads(threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let hub = FakeHub::start().await;
        hub.state.add_repo(
            "sentence-transformers/all-MiniLM-L6-v2",
            COMMIT,
            files_from_dir(std::path::Path::new(&minilm)),
        );
        let cache = tempfile::tempdir()?;
        let mut cfg = hub_worker::WorkerConfig::new(&hub.url, WORKER_TOKEN);
        cfg.cache_dir = cache.path().to_path_buf();
        cfg.engine = engine.parse()?;
        cfg.poll_wait_s = 25;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(hub_worker::run(cfg, async {
            let _ = stopped.await;
        }));
        // Wait for registration (not part of cold start: the worker is already up).
        let base = loop {
            if let Some(r) = hub.state.control.lock().unwrap().registrations.first() {
                break r["url"].as_str().unwrap_or_default().to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        hub.state.set_assignments(vec![json!({
            "assignment_id": "a1", "model_key": "minilm", "repo_type": "model",
            "repo_id": "sentence-transformers/all-MiniLM-L6-v2", "revision": COMMIT,
            "task": "feature-extraction", "pull_token": PULL_TOKEN,
        })]);
        loop {
            if let Some(hb) = hub.state.last_heartbeat() {
                if hb["models"][0]["status"] == "failed" {
                    anyhow::bail!("load failed: {}", hb["models"][0]["message"]);
                }
            }
            let resp = client
                .post(format!("{base}/models/minilm/v1/embeddings"))
                .bearer_auth(GATEWAY_SECRET)
                .json(&json!({"input": "hello world", "model": "minilm"}))
                .send()
                .await?;
            if resp.status() == 200 {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("no embedding after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = t0.elapsed();
        println!(
            "{}",
            json!({
                "engine": engine,
                "assignment_to_first_embedding_ms": first.as_millis(),
                "downloads": hub.state.downloads.lock().unwrap().len(),
            })
        );
        let _ = stop.send(());
        let _ = worker.await;
        hub.stop().await;
        Ok(())
    })
}
