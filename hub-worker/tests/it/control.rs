//! A whole worker (`hub_worker::run`) against a fake hub: registration, heartbeats with
//! statuses, long-polled assignments reconciled (load, fail with a reason, unload,
//! reload from cache), the gateway secret on the served routes, re-registration, and a
//! cache too small for two models (a running one keeps its files).

use crate::common::fake_hub::*;
use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn assignment(id: &str, key: &str, repo: &str, task: &str) -> Value {
    json!({
        "assignment_id": id, "model_key": key, "repo_type": "model", "repo_id": repo,
        "revision": COMMIT, "task": task, "pull_token": PULL_TOKEN,
    })
}

fn with_precision(mut a: Value, precision: &str) -> Value {
    a["precision"] = json!(precision);
    a
}

/// Waits until the latest heartbeat satisfies `pred`.
async fn wait_heartbeat(hub: &FakeHub, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(hb) = hub.state.last_heartbeat() {
            if pred(&hb) {
                return hb;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last heartbeat: {:?}",
            hub.state.last_heartbeat()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn model_status<'a>(hb: &'a Value, id: &str) -> Option<&'a Value> {
    hb["models"]
        .as_array()?
        .iter()
        .find(|m| m["assignment_id"] == id)
}

fn status_is(hb: &Value, id: &str, status: &str) -> bool {
    model_status(hb, id).is_some_and(|m| m["status"] == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_follows_its_assignments() {
    let hub = FakeHub::start().await;
    let (dir, _) = tiny_dir("distilbert", &small_tokenizer_dir());
    hub.state
        .add_repo("acme/tiny", COMMIT, files_from_dir(&dir));
    hub.state.set_assignments(vec![
        assignment("a1", "k1", "acme/tiny", "text-classification"),
        assignment("a2", "k2", "acme/tiny", "translation"),
        assignment("a3", "k3", "acme/missing", "feature-extraction"),
        json!({"assignment_id": "a4", "model_key": "k4"}),
        with_precision(
            assignment("a6", "k6", "acme/tiny", "feature-extraction"),
            "fp8",
        ),
        with_precision(
            assignment("a7", "k7", "acme/tiny", "feature-extraction"),
            "bf16",
        ),
    ]);

    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_worker::WorkerConfig::new(&hub.url, WORKER_TOKEN);
    cfg.cache_dir = cache.path().to_path_buf();
    // No free-space floor: the tests must not depend on the disk they run on.
    cfg.cache_min_free_gib = Some(0.0);
    // candle: starting ONNX Runtime here would switch the `auto` engine of the other
    // tests in this binary (tests/graph_engines.rs covers it in a process of its own).
    cfg.engine = hub_worker::engine::EnginePreference::Candle;
    cfg.name = Some("test-worker".into());
    cfg.poll_wait_s = 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(hub_worker::run(cfg, async {
        let _ = stopped.await;
    }));

    let hb = wait_heartbeat(&hub, "a1 running, a2, a3, a4, a6 and a7 failed", |hb| {
        status_is(hb, "a1", "running")
            && ["a2", "a3", "a4", "a6", "a7"]
                .iter()
                .all(|id| status_is(hb, id, "failed"))
    })
    .await;
    assert!(hb["free_memory_bytes"].as_u64().unwrap() > 0);
    let msg = |id: &str| {
        model_status(&hb, id).unwrap()["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(msg("a2").contains("translation"), "{}", msg("a2"));
    assert!(msg("a3").contains("not found"), "{}", msg("a3"));
    assert_eq!(model_status(&hb, "a1").unwrap()["in_flight"], 0);
    // A malformed assignment fails alone, with the parse error.
    assert!(msg("a4").contains("invalid assignment"), "{}", msg("a4"));
    // Precision: an unknown one is refused; bf16 needs OpenVINO, which this worker
    // (candle only) lacks: it says so instead of silently serving f32.
    assert!(
        msg("a6").contains("\"fp8\" is not supported"),
        "{}",
        msg("a6")
    );
    assert!(
        msg("a7").contains("bf16") && msg("a7").contains("OpenVINO"),
        "{}",
        msg("a7")
    );
    let reg = hub.state.control.lock().unwrap().registrations[0].clone();
    assert_eq!(reg["name"], "test-worker");
    assert!(reg["capacity"]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(reg["capacity"]["cores"].as_u64().unwrap() >= 1);
    let base = reg["url"].as_str().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    // Served with the gateway secret, refused without.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/models/k1"))
        .bearer_auth(GATEWAY_SECRET)
        .json(&json!({"inputs": "i love this movie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-input-tokens"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0].as_array().unwrap().len(), 2);
    let resp = client
        .post(format!("{base}/models/k1"))
        .json(&json!({"inputs": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // New desired set: a1 goes, a5 (same repo, embeddings) comes from the cache.
    hub.state.set_assignments(vec![assignment(
        "a5",
        "k5",
        "acme/tiny",
        "feature-extraction",
    )]);
    wait_heartbeat(&hub, "a5 running and a1 gone", |hb| {
        status_is(hb, "a5", "running") && model_status(hb, "a1").is_none()
    })
    .await;
    assert_eq!(
        hub.state.downloads_of("model.safetensors"),
        1,
        "weights fetched twice"
    );
    let resp = client
        .post(format!("{base}/models/k1"))
        .bearer_auth(GATEWAY_SECRET)
        .json(&json!({"inputs": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .post(format!("{base}/models/k5/v1/embeddings"))
        .bearer_auth(GATEWAY_SECRET)
        .json(&json!({"input": ["hello", "world"], "model": "acme/tiny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);

    // The hub forgets the worker: it registers again and keeps serving.
    hub.state.control.lock().unwrap().forget = true;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.state.control.lock().unwrap().registrations.len() < 2 {
        assert!(Instant::now() < deadline, "worker did not re-register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = hub.state.control.lock().unwrap().heartbeats.len();
    wait_heartbeat(&hub, "heartbeats after re-registering", |hb| {
        status_is(hb, "a5", "running")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.state.control.lock().unwrap().heartbeats.len() <= before {
        assert!(
            Instant::now() < deadline,
            "no heartbeat after re-registering"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client
        .post(format!("{base}/models/k5"))
        .bearer_auth(GATEWAY_SECRET)
        .json(&json!({"inputs": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("worker did not stop")
        .unwrap()
        .unwrap();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_worker_token_stops_the_worker_with_a_reason() {
    let hub = FakeHub::start().await;
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_worker::WorkerConfig::new(&hub.url, "not-a-worker-token");
    cfg.cache_dir = cache.path().to_path_buf();
    // No free-space floor: the tests must not depend on the disk they run on.
    cfg.cache_min_free_gib = Some(0.0);
    cfg.engine = hub_worker::engine::EnginePreference::Candle;
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        hub_worker::run(cfg, std::future::pending()),
    )
    .await
    .expect("run did not give up")
    .unwrap_err();
    assert!(err.to_string().contains("scope `worker`"), "{err}");
    hub.stop().await;
}

/// Bytes of a directory's files.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                std::fs::metadata(&p).unwrap().len()
            }
        })
        .sum()
}

/// A worker whose cache holds one of two models, not both: a running model keeps its
/// files (the second assignment fails with the reason, the first keeps serving); once the
/// first is unassigned, the second evicts it and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_model_keeps_its_files_when_the_cache_is_full() {
    let hub = FakeHub::start().await;
    let tok = small_tokenizer_dir();
    let (a_dir, _) = tiny_dir("distilbert", &tok);
    let (b_dir, _) = tiny_dir("xlm-roberta", &tok);
    hub.state.add_repo("acme/a", COMMIT, files_from_dir(&a_dir));
    hub.state.add_repo("acme/b", COMMIT, files_from_dir(&b_dir));
    // Room for the larger and half the smaller (markers and pins are small beside them).
    let (a_bytes, b_bytes) = (dir_bytes(&a_dir), dir_bytes(&b_dir));
    let budget = a_bytes.max(b_bytes) + a_bytes.min(b_bytes) / 2;

    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_worker::WorkerConfig::new(&hub.url, WORKER_TOKEN);
    cfg.cache_dir = cache.path().to_path_buf();
    cfg.cache_max_gib = Some(budget as f64 / (1u64 << 30) as f64);
    cfg.cache_min_free_gib = Some(0.0);
    cfg.engine = hub_worker::engine::EnginePreference::Candle;
    cfg.poll_wait_s = 2;
    hub.state.set_assignments(vec![assignment(
        "a1",
        "k1",
        "acme/a",
        "text-classification",
    )]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(hub_worker::run(cfg, async {
        let _ = stopped.await;
    }));
    wait_heartbeat(&hub, "a1 running", |hb| status_is(hb, "a1", "running")).await;

    hub.state.set_assignments(vec![
        assignment("a1", "k1", "acme/a", "text-classification"),
        assignment("a2", "k2", "acme/b", "text-classification"),
    ]);
    let hb = wait_heartbeat(&hub, "a2 failed", |hb| status_is(hb, "a2", "failed")).await;
    let msg = model_status(&hb, "a2").unwrap()["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.starts_with("the worker's model cache needs ")
            && msg.contains("in use by models loaded or loading on this worker"),
        "{msg}"
    );
    assert!(status_is(&hb, "a1", "running"));
    let reg = hub.state.control.lock().unwrap().registrations[0].clone();
    let base = reg["url"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/models/k1"))
        .bearer_auth(GATEWAY_SECRET)
        .json(&json!({"inputs": "i love this movie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let models = cache.path().join("models");
    let listed = || -> Vec<String> {
        std::fs::read_dir(&models)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(listed(), vec![format!("acme--a--{COMMIT}")]);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("paddock_worker_cache_refused_pulls_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "paddock_worker_cache_limit_bytes{{limit=\"max\"}} {}",
            (budget as f64 / (1u64 << 30) as f64 * (1u64 << 30) as f64) as u64
        )),
        "{metrics}"
    );

    // A unassigned: B (a new assignment) evicts it and runs.
    hub.state.set_assignments(vec![assignment(
        "a3",
        "k3",
        "acme/b",
        "text-classification",
    )]);
    wait_heartbeat(&hub, "a3 running, a1 gone", |hb| {
        status_is(hb, "a3", "running") && model_status(hb, "a1").is_none()
    })
    .await;
    assert_eq!(listed(), vec![format!("acme--b--{COMMIT}")]);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("paddock_worker_cache_evictions_total{kind=\"model\"} 1"),
        "{metrics}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("worker did not stop")
        .unwrap()
        .unwrap();
    hub.stop().await;
}
