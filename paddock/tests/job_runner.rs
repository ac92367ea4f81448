//! The fine-tuning job runner of a real worker against a real hub, end to end
//! but without training: a LoRA job whose base is not a decoder is claimed,
//! its base's listing and config.json are read with the claim's pull token,
//! and the job is finished with the reason. The claim is made in the name of
//! the worker's registration and every call of it proves that registration's
//! secret (the hub records both), as the hub now requires.

use hub_testkit::TestState;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A valid one-tensor safetensors file.
fn safetensors() -> Vec<u8> {
    let mut header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(1.0f32.to_le_bytes());
    out
}

#[actix_web::test]
async fn the_runner_claims_as_its_registered_worker_and_finishes_the_job() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let server = hub_testkit::Server::start(t.state.clone());
    let state = server.state.clone();
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", server.url))
            .bearer_auth(&alice)
    };
    for (kind, name) in [("model", "bert"), ("dataset", "rows")] {
        let r = send(reqwest::Method::POST, "/api/repos/create")
            .json(&json!({"name": name, "organization": "alice", "type": kind}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let commit = |path: &'static str, files: Vec<(&'static str, Vec<u8>)>| {
        let ops: Vec<Value> = files
            .iter()
            .map(|(p, c)| hub_testkit::file_op(p, c))
            .collect();
        send(reqwest::Method::POST, path).body(hub_testkit::ndjson("files", None, &ops))
    };
    for (path, files) in [
        (
            "/api/models/alice/bert/commit/main",
            vec![
                (
                    "config.json",
                    br#"{"model_type": "bert", "architectures": ["BertModel"]}"#.to_vec(),
                ),
                ("model.safetensors", safetensors()),
            ],
        ),
        (
            "/api/datasets/alice/rows/commit/main",
            vec![
                ("train.csv", b"prompt,completion\nhi,there\n".to_vec()),
                ("test.csv", b"prompt,completion\nyo,there\n".to_vec()),
            ],
        ),
    ] {
        let r = commit(path, files).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let r = send(reqwest::Method::POST, "/api/v1/jobs/alice")
        .json(
            &json!({"task": "causal-lm-lora", "base_model": "alice/bert",
                      "dataset": "alice/rows", "output_repo": "alice/out"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();

    let token = hub_api::auth::service_tokens::worker_token(&state, 3600)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_worker::WorkerConfig::new(&server.url, &token);
    cfg.cache_dir = cache.path().to_path_buf();
    // No free-space floor: the tests must not depend on the disk they run on.
    cfg.cache_min_free_gib = Some(0.0);
    cfg.name = Some("runner-e2e".into());
    cfg.engine = hub_worker::engine::EnginePreference::Candle;
    cfg.threads = Some(1);
    cfg.poll_wait_s = 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(hub_worker::run(cfg, async {
        let _ = stopped.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(90);
    let ended = loop {
        let v: Value = send(reqwest::Method::GET, &format!("/api/v1/jobs/alice/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            v["state"].as_str(),
            Some("failed" | "succeeded" | "cancelled")
        ) {
            break v;
        }
        assert!(!worker.is_finished(), "the worker stopped");
        assert!(Instant::now() < deadline, "the job never ended: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Finished by the worker (its finish call proved the claim's secret), with
    // the reason it read through the claim's pull token.
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .contains("is not a causal LM"),
        "{ended}"
    );
    assert_eq!(ended["runner"], "runner-e2e");
    let (worker_id, secret): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, gateway_secret FROM workers WHERE name = 'runner-e2e'")
            .fetch_one(&state.db)
            .await
            .unwrap();
    let (bound_to, secret_sha256): (Option<uuid::Uuid>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT worker_id, worker_secret_sha256 FROM finetune_jobs WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&state.db)
    .await
    .unwrap();
    assert_eq!(bound_to, Some(worker_id));
    assert_eq!(secret_sha256, Some(hub_api::auth::secrets::hash(&secret)));
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
}
