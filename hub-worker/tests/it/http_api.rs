//! The worker's HTTP API in process (actix test service) with loaded models and no hub:
//! OpenAI embeddings, the HF task API shapes, the gateway secret, input errors, 429.

use crate::common::*;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use base64::Engine as _;
use futures::FutureExt;
use hub_worker::engine::{EmbedOptions, EngineConfig, Model, Task};
use hub_worker::http::{self, GatewayAuth, HttpState};
use hub_worker::registry::{ModelRegistry, Slot, SlotStatus};
use serde_json::{json, Value};
use std::sync::Arc;

const SECRET: &str = "gw-secret";

struct Fixture {
    state: HttpState,
    embedder: Model,
}

async fn fixture(max_concurrent: usize) -> Fixture {
    let (dir, _) = tiny_dir("distilbert", &small_tokenizer_dir());
    let cfg = EngineConfig {
        max_concurrent,
        ..EngineConfig::default()
    };
    let embedder = load(&dir, Some(Task::FeatureExtraction), cfg.clone()).await;
    let classifier = load(&dir, None, cfg).await;
    let registry = Arc::new(ModelRegistry::new());
    registry.insert_model("emb", "acme/tiny-embedder", embedder.clone());
    registry.insert_model("cls", "acme/tiny-classifier", classifier);
    registry.upsert(Slot {
        assignment_id: "a-loading".into(),
        model_key: "warming".into(),
        served_name: "acme/big".into(),
        fingerprint: String::new(),
        status: SlotStatus::Loading,
        message: None,
        model: None,
    });
    registry.upsert(Slot {
        assignment_id: "a-failed".into(),
        model_key: "broken".into(),
        served_name: "acme/broken".into(),
        fingerprint: String::new(),
        status: SlotStatus::Failed,
        message: Some("only pickle weights (pytorch_model.bin)".into()),
        model: None,
    });
    Fixture {
        state: HttpState {
            registry,
            auth: Arc::new(GatewayAuth::with_secret(SECRET)),
            metrics: Default::default(),
        },
        embedder,
    }
}

macro_rules! app {
    ($state:expr) => {{
        let state = $state.clone();
        test::init_service(App::new().configure(move |c| http::configure(c, state))).await
    }};
}

async fn post(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
    uri: &str,
    body: Value,
) -> (StatusCode, actix_web::http::header::HeaderMap, Value) {
    let req = test::TestRequest::post()
        .uri(uri)
        .insert_header(("Authorization", format!("Bearer {SECRET}")))
        .set_json(body)
        .to_request();
    let resp = test::call_service(app, req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

#[actix_web::test]
async fn gateway_secret_guards_models_not_health() {
    let f = fixture(64).await;
    let app = app!(f.state);
    let resp = test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["status"], "ok");

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("gw-secret"),
        Some("Basic Z3ctc2VjcmV0"),
    ] {
        let mut req = test::TestRequest::post()
            .uri("/models/emb/v1/embeddings")
            .set_json(json!({"input": "hello", "model": "x"}));
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a));
        }
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error_type"], "unauthorized");
    }
    // A worker whose registration is pending refuses everything.
    let pending = HttpState {
        registry: f.state.registry.clone(),
        auth: Arc::new(GatewayAuth::pending()),
        metrics: Default::default(),
    };
    let app = app!(pending);
    let (status, _, _) = post(&app, "/models/emb/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn openai_embeddings_round_trip() {
    let f = fixture(64).await;
    let app = app!(f.state);
    let (status, headers, body) = post(
        &app,
        "/models/emb/v1/embeddings",
        json!({"input": ["hello world", "the quick brown fox"], "model": "tiny"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "tiny");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let v0 = f32s(&data[0]["embedding"]);
    assert_eq!(v0.len(), 32);
    // Same numbers as the engine API.
    let direct = f
        .embedder
        .embed(vec!["hello world".into()], EmbedOptions::default())
        .await
        .unwrap();
    assert!(cosine(&v0, &direct.vectors[0]) > 0.999999);
    // Tokens: [CLS] hello world [SEP] + [CLS] the quick brown fox [SEP].
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    assert_eq!(body["usage"]["total_tokens"], 10);
    assert_eq!(headers.get("x-input-tokens").unwrap(), "10");

    // base64: little-endian f32, what the openai client asks for by default.
    let (status, _, b64) = post(
        &app,
        "/models/emb/v1/embeddings",
        json!({"input": "hello world", "model": "tiny", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // Same request as floats: the same numbers (a different batch could pad differently).
    let (_, _, floats) = post(
        &app,
        "/models/emb/v1/embeddings",
        json!({"input": "hello world", "model": "tiny"}),
    )
    .await;
    assert_eq!(decoded, f32s(&floats["data"][0]["embedding"]));
    assert!(cosine(&decoded, &v0) > 0.999999);
    // Model name defaults to the repo when the client sends none.
    let (_, _, body) = post(&app, "/models/emb/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(body["model"], "acme/tiny-embedder");

    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/models/emb/v1/models")
            .insert_header(("Authorization", format!("Bearer {SECRET}")))
            .to_request(),
    )
    .await;
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["data"][0]["id"], "acme/tiny-embedder");
    assert_eq!(body["data"][0]["object"], "model");
}

#[actix_web::test]
async fn hf_task_api_shapes() {
    let f = fixture(64).await;
    let app = app!(f.state);
    // feature-extraction: a single string is still a list of one vector.
    for uri in [
        "/models/emb",
        "/models/emb/",
        "/models/emb/pipeline/feature-extraction",
    ] {
        let (status, headers, body) = post(&app, uri, json!({"inputs": "hello world"})).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let rows = body.as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].as_array().unwrap().len(), 32);
        assert_eq!(headers.get("x-input-tokens").unwrap(), "4");
    }
    let (_, _, body) = post(&app, "/models/emb", json!({"inputs": ["a", "b", "c"]})).await;
    assert_eq!(body.as_array().unwrap().len(), 3);
    // InferenceClient sends feature-extraction parameters at the top level.
    let (_, _, body) = post(
        &app,
        "/models/emb",
        json!({"inputs": "hello", "normalize": true, "truncate": true}),
    )
    .await;
    let v = f32s(&body[0]);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    let (_, _, body) = post(
        &app,
        "/models/emb",
        json!({"inputs": "hello", "parameters": {"dimensions": 8}}),
    )
    .await;
    assert_eq!(body[0].as_array().unwrap().len(), 8);

    // sentence-similarity.
    let (status, _, body) = post(
        &app,
        "/models/emb",
        json!({"inputs": {"source_sentence": "hello world", "sentences": ["hello world", "lazy dog"]}, "parameters": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = f32s(&body);
    assert_eq!(s.len(), 2);
    assert!((s[0] - 1.0).abs() < 1e-5);
    assert!(s[1] < s[0]);

    // text-classification: a list of lists of {label, score}, best first.
    let (status, headers, body) =
        post(&app, "/models/cls", json!({"inputs": "i love this movie"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.contains_key("x-input-tokens"));
    let labels = body[0].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    let scores: Vec<f64> = labels
        .iter()
        .map(|l| l["score"].as_f64().unwrap())
        .collect();
    assert!(scores[0] >= scores[1]);
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert!(["no", "yes"].contains(&labels[0]["label"].as_str().unwrap()));
    let (_, _, body) = post(
        &app,
        "/models/cls",
        json!({"inputs": ["a", {"text": "hello", "text_pair": "world"}], "parameters": {"top_k": 1, "function_to_apply": "none"}}),
    )
    .await;
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(body[1].as_array().unwrap().len(), 1);

    // Info.
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/models/cls/info")
            .insert_header(("Authorization", format!("Bearer {SECRET}")))
            .to_request(),
    )
    .await;
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["task"], "text-classification");
    assert_eq!(body["labels"], json!(["no", "yes"]));
    assert_eq!(body["engine"], "candle");
    // Batching counters: every input answered above went through a forward pass.
    let batching = &body["batching"];
    let passes = batching["passes_total"].as_u64().unwrap();
    let inputs = batching["inputs_total"].as_u64().unwrap();
    assert!(passes >= 1 && inputs >= passes, "{batching}");
    assert!(batching["fill_waits_total"].is_u64(), "{batching}");
}

#[actix_web::test]
async fn bad_input_is_a_clear_4xx() {
    let f = fixture(64).await;
    let app = app!(f.state);
    let long = "word ".repeat(300);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/models/emb/v1/embeddings",
            json!({"input": []}),
            400,
            "empty_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": ""}),
            400,
            "empty_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": ["a", ""]}),
            400,
            "empty_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"model": "x"}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": 5}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": [1, 2, 3]}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": ["a", null]}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!(["a"]),
            400,
            "invalid_input",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": "a", "encoding_format": "int8"}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/emb/v1/embeddings",
            json!({"input": vec!["a"; 257]}),
            400,
            "too_many_inputs",
        ),
        (
            "/models/emb",
            json!({"inputs": {"x": 1}}),
            400,
            "invalid_input",
        ),
        ("/models/emb", json!({"inputs": 3.5}), 400, "invalid_input"),
        (
            "/models/emb",
            json!({"parameters": {}}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb",
            json!({"inputs": "a", "parameters": 7}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb",
            json!({"inputs": "a", "normalize": "yes"}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/emb",
            json!({"inputs": "a", "prompt_name": "query"}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/emb",
            json!({"inputs": "a", "dimensions": 0}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/emb",
            json!({"inputs": "a", "dimensions": 33}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/emb",
            json!({"inputs": long.clone(), "truncate": false}),
            413,
            "input_too_long",
        ),
        (
            "/models/emb",
            json!({"inputs": {"source_sentence": "a", "sentences": []}}),
            400,
            "empty_input",
        ),
        (
            "/models/emb",
            json!({"inputs": {"source_sentence": "a", "sentences": "b"}}),
            400,
            "invalid_input",
        ),
        (
            "/models/emb/pipeline/text-classification",
            json!({"inputs": "a"}),
            400,
            "wrong_task",
        ),
        (
            "/models/emb/pipeline/summarization",
            json!({"inputs": "a"}),
            400,
            "invalid_input",
        ),
        (
            "/models/cls/v1/embeddings",
            json!({"input": "a"}),
            400,
            "wrong_task",
        ),
        (
            "/models/cls",
            json!({"inputs": "a", "parameters": {"top_k": 0}}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/cls",
            json!({"inputs": "a", "parameters": {"function_to_apply": "relu"}}),
            400,
            "invalid_parameter",
        ),
        (
            "/models/cls",
            json!({"inputs": [{"text_pair": "x"}]}),
            400,
            "invalid_input",
        ),
        (
            "/models/nope",
            json!({"inputs": "a"}),
            404,
            "model_not_found",
        ),
        (
            "/models/warming",
            json!({"inputs": "a"}),
            503,
            "model_not_ready",
        ),
        (
            "/models/broken",
            json!({"inputs": "a"}),
            503,
            "model_not_ready",
        ),
        ("/elsewhere", json!({"inputs": "a"}), 404, "not_found"),
    ];
    for (uri, body, status, kind) in cases {
        let (got, headers, resp) = post(&app, uri, body.clone()).await;
        assert_eq!(got.as_u16(), status, "{uri} {body}: {resp}");
        assert_eq!(resp["error_type"], kind, "{uri} {body}: {resp}");
        assert!(
            resp["error"].as_str().is_some_and(|m| m.len() > 10),
            "{uri}: no message in {resp}"
        );
        if status == 503 {
            assert_eq!(headers.get("retry-after").unwrap(), "1");
        }
    }
    // The failed model's reason is in the message.
    let (_, _, resp) = post(&app, "/models/broken", json!({"inputs": "a"})).await;
    assert!(resp["error"]
        .as_str()
        .unwrap()
        .contains("pytorch_model.bin"));

    // Long inputs are truncated to the model's limit by default (64 positions here).
    let (status, headers, _) = post(&app, "/models/emb", json!({"inputs": long})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("x-input-tokens").unwrap(), "64");

    // Invalid JSON, empty and oversized bodies.
    for (payload, status, kind) in [
        (b"{not json".to_vec(), 400, "invalid_json"),
        (Vec::new(), 400, "invalid_json"),
        (
            vec![b' '; http::MAX_BODY_BYTES + 10],
            413,
            "payload_too_large",
        ),
    ] {
        let req = test::TestRequest::post()
            .uri("/models/emb")
            .insert_header(("Authorization", format!("Bearer {SECRET}")))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(payload)
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status().as_u16(), status);
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error_type"], kind);
    }
}

#[actix_web::test]
async fn overload_answers_429_with_retry_after() {
    let f = fixture(4).await;
    let app = app!(f.state);
    // Another client holds all 4 permits (admitted, not finished).
    let mut held = Box::pin(f.embedder.embed(
        vec!["the quick brown fox".into(); 4],
        EmbedOptions::default(),
    ));
    assert!((&mut held).now_or_never().is_none());
    let (status, headers, body) =
        post(&app, "/models/emb/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error_type"], "overloaded");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let (status, _, _) = post(&app, "/models/emb", json!({"inputs": "a"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    held.await.unwrap();
    let (status, _, _) = post(&app, "/models/emb/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(status, StatusCode::OK);
}

/// Over real sockets: many concurrent clients against a small admission limit get either
/// an answer or a 429, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_answers_or_429() {
    let f = fixture(8).await;
    let server = http::Server::start("127.0.0.1:0", f.state.clone(), 2).unwrap();
    let url = format!("http://{}/models/emb/v1/embeddings", server.addr);
    let client = reqwest::Client::new();
    // 8 inputs per request against 8 permits: one request at a time is admitted.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(6);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let client = client.clone();
        let url = url.clone();
        let body = json!({"input": vec![long.clone(); 8]});
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(&url)
                .bearer_auth(SECRET)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").is_some();
            (status, retry)
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (status, retry) = tokio::time::timeout(std::time::Duration::from_secs(60), t)
            .await
            .expect("a request hung")
            .unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert!(retry);
                limited += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0, "nothing succeeded");
    assert!(
        limited > 0,
        "no request was refused: admission is not limiting"
    );
    server.stop().await;
}

/// `GET /metrics` (no credentials, like `/health`) in the Prometheus text
/// format: requests by route pattern and status, prompt tokens per model, and
/// the models' load states and queues; every response echoes the gateway's
/// `X-Request-Id` (or carries a fresh one).
#[actix_web::test]
async fn metrics_count_requests_tokens_and_model_states() {
    let f = fixture(64).await;
    let app = test::init_service(http::app(f.state.clone())).await;
    let req = test::TestRequest::post()
        .uri("/models/emb/v1/embeddings")
        .insert_header(("Authorization", format!("Bearer {SECRET}")))
        .insert_header(("X-Request-Id", "gw-req-1"))
        .set_json(json!({"input": ["hello world", "bye"], "model": "x"}))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "gw-req-1");
    let prompt: u64 = resp
        .headers()
        .get("x-input-tokens")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(prompt > 0);
    let _ = test::read_body(resp).await;
    let resp = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/models/emb/v1/embeddings")
            .set_json(json!({"input": "x", "model": "x"}))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers().get("x-request-id").unwrap().len(), 36);

    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    for line in [
        "# TYPE paddock_worker_http_requests_total counter".to_string(),
        "paddock_worker_http_requests_total{route=\"/models/{key}/v1/embeddings\",method=\"POST\",status=\"200\"} 1".to_string(),
        "paddock_worker_http_requests_total{route=\"/models/{key}/v1/embeddings\",method=\"POST\",status=\"401\"} 1".to_string(),
        format!("paddock_worker_tokens_total{{model=\"acme/tiny-embedder\",kind=\"prompt\"}} {prompt}"),
        "paddock_worker_tokens_total{model=\"acme/tiny-embedder\",kind=\"generated\"} 0".to_string(),
        "paddock_worker_http_request_duration_seconds_count{route=\"/models/{key}/v1/embeddings\",method=\"POST\"} 2".to_string(),
        "paddock_worker_models{state=\"running\"} 2".to_string(),
        "paddock_worker_models{state=\"loading\"} 1".to_string(),
        "paddock_worker_models{state=\"failed\"} 1".to_string(),
        "paddock_worker_models{state=\"pulling\"} 0".to_string(),
        "paddock_worker_requests_in_flight{model=\"acme/tiny-embedder\"} 0".to_string(),
        "paddock_worker_queue_depth{model=\"acme/tiny-classifier\"} 0".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
}
