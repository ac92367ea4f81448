//! Unit tests of the generation HTTP layer (parameters, chunk shapes, SSE framing,
//! metering, cancellation) over a scripted fake [`Generator`]. The real engine is
//! exercised in `tests/it/http_generate.rs`.

use super::{configure, GatewayAuth, HttpState};
use crate::engine::generate::{
    DecoderInfo, DecoderModel, DecoderStats, Finish, FinishReason, GenEvent, GenStream, GenToken,
    GenerateRequest, Generator, Prompt, TokenLogprob, Usage,
};
use crate::engine::{EngineError, Model, ModelInfo, ScoreFn, Task};
use crate::registry::ModelRegistry;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers every request with `output` split at spaces (one token per word, the space
/// kept), one token per `delay`, honouring max_tokens, stop strings, logprobs and the
/// context; counts cancellations (a dropped receiver).
struct Fake {
    info: DecoderInfo,
    output: String,
    delay: Duration,
    limit: u32,
    active: Arc<AtomicU32>,
    cancelled: Arc<AtomicU64>,
    requests: Mutex<Vec<GenerateRequest>>,
    /// Answered to every submit while set: the model's process is restarting.
    restarting: Mutex<Option<String>>,
    /// [`Generator::failure`]: the model was given up.
    failure: Mutex<Option<String>>,
}

fn lp(id: u32, text: &str, logprob: f32) -> TokenLogprob {
    TokenLogprob {
        id,
        text: text.to_string(),
        bytes: text.as_bytes().to_vec(),
        logprob,
    }
}

impl Generator for Fake {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }
    fn stats(&self) -> DecoderStats {
        DecoderStats {
            active_slots: self.active.load(Ordering::SeqCst),
            cancelled_total: self.cancelled.load(Ordering::SeqCst),
            ..DecoderStats::default()
        }
    }
    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        let n = text.split_whitespace().count() + usize::from(add_special);
        Ok((0..n as u32).collect())
    }
    fn detokenize(&self, _ids: &[u32]) -> Result<String, EngineError> {
        Ok(String::new())
    }
    fn submit(&self, req: GenerateRequest) -> Result<GenStream, EngineError> {
        if let Some(why) = self.restarting.lock().unwrap().clone() {
            return Err(EngineError::Restarting(why));
        }
        let prompt_tokens = match &req.prompt {
            Prompt::Text { text, add_special } => self.tokenize(text, *add_special)?.len(),
            Prompt::Tokens(t) => t.len(),
        };
        if prompt_tokens + req.max_tokens.unwrap_or(0) > self.info.context_length {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens,
                max_tokens: req.max_tokens,
                context: self.info.context_length,
            });
        }
        if self.active.load(Ordering::SeqCst) >= self.limit {
            return Err(EngineError::Overloaded {
                in_flight: self.limit as usize,
                limit: self.limit as usize,
            });
        }
        self.requests.lock().unwrap().push(req.clone());
        self.active.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let words: Vec<String> = self
            .output
            .split_inclusive(' ')
            .map(str::to_string)
            .collect();
        let (delay, active, cancelled) = (self.delay, self.active.clone(), self.cancelled.clone());
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut n = 0;
            let mut reason = FinishReason::Stop;
            let mut stop_string = None;
            for (i, w) in words.iter().enumerate() {
                if req.max_tokens.is_some_and(|m| n >= m) {
                    reason = FinishReason::Length;
                    break;
                }
                std::thread::sleep(delay);
                n += 1;
                text.push_str(w);
                let hit = req.stop.iter().find(|s| text.contains(s.as_str())).cloned();
                let released = if hit.is_some() {
                    String::new()
                } else {
                    w.clone()
                };
                let tok = GenToken {
                    id: i as u32 + 100,
                    text: released,
                    logprob: req.logprobs.map(|_| lp(i as u32 + 100, w, -0.25)),
                    top_logprobs: (0..req.logprobs.unwrap_or(0))
                        .map(|k| lp(k as u32, &format!("alt{k}"), -1.0 - k as f32))
                        .collect(),
                };
                if tx.send(GenEvent::Token(tok)).is_err() {
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    active.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                if hit.is_some() {
                    stop_string = hit;
                    break;
                }
            }
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(GenEvent::Done(Finish {
                reason,
                usage: Usage {
                    prompt_tokens,
                    completion_tokens: n,
                    cached_tokens: 1,
                },
                stop_string,
                tail: String::new(),
            }));
        });
        Ok(GenStream { prompt_tokens, rx })
    }
}

const TEMPLATE: &str = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}\
{% if tools %}TOOLS {{ tools | length }} <tool_call>\n{% endif %}<assistant>";

struct Setup {
    state: HttpState,
    fake: Arc<Fake>,
}

fn setup(output: &str, delay_ms: u64, template: Option<&str>) -> Setup {
    setup_templates(output, delay_ms, template, None)
}

/// [`setup`] with a `tool_use` template too.
fn setup_templates(
    output: &str,
    delay_ms: u64,
    template: Option<&str>,
    tool_use: Option<&str>,
) -> Setup {
    let fake = Arc::new(Fake {
        info: DecoderInfo {
            architecture: "fake".into(),
            engine: "fake",
            context_length: 64,
            train_context_length: 64,
            slots: 2,
            vocab_size: 1000,
            chat_template: template.map(str::to_string),
            tool_use_template: tool_use.map(str::to_string),
            bos_token: Some("<bos>".into()),
            eos_token: Some("<eos>".into()),
        },
        output: output.to_string(),
        delay: Duration::from_millis(delay_ms),
        limit: 4,
        active: Arc::default(),
        cancelled: Arc::default(),
        requests: Mutex::default(),
        restarting: Mutex::default(),
        failure: Mutex::default(),
    });
    let info = ModelInfo {
        task: Task::TextGeneration,
        model_type: "fake".into(),
        engine: "fake",
        replicas: 1,
        dim: 0,
        labels: vec![],
        max_input_tokens: 64,
        normalize: false,
        pooling: vec![],
        score_fn: ScoreFn::None,
    };
    let registry = Arc::new(ModelRegistry::new());
    registry.insert_model(
        "gen",
        "acme/fake-lm",
        Model::Decoder(DecoderModel::new(info, fake.clone())),
    );
    Setup {
        state: HttpState {
            registry,
            auth: Arc::new(GatewayAuth::open()),
            metrics: Default::default(),
        },
        fake,
    }
}

macro_rules! app {
    ($state:expr) => {{
        let state = $state.clone();
        test::init_service(App::new().configure(move |c| configure(c, state))).await
    }};
}

/// Status, headers and raw body text of a POST.
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

/// The `data:` payloads of an SSE body (`[DONE]` included as a string), and its
/// comment lines.
fn events(body: &str) -> (Vec<Value>, Vec<String>) {
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "ends with [DONE]: {body}"
    );
    let mut data = Vec::new();
    let mut comments = Vec::new();
    for frame in body.split("\n\n").filter(|f| !f.is_empty()) {
        if let Some(d) = frame.strip_prefix("data: ") {
            data.push(if d == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            });
        } else if let Some(c) = frame.strip_prefix(": ") {
            comments.push(c.to_string());
        } else {
            panic!("unexpected frame {frame:?}");
        }
    }
    (data, comments)
}

#[actix_web::test]
async fn completion_non_streamed_shape_and_metering() {
    let s = setup("Paris is nice ", 0, None);
    let app = app!(s.state);
    let (status, headers, body) = post(
        &app,
        "/models/gen/v1/completions",
        json!({"model": "x", "prompt": "The capital of France is", "max_tokens": 2,
               "temperature": 0, "logprobs": 2, "user": "u1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["model"], "acme/fake-lm");
    assert_eq!(v["choices"][0]["text"], "Paris is ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["Paris ", "is "]));
    assert_eq!(lp["token_logprobs"], json!([-0.25, -0.25]));
    assert_eq!(lp["text_offset"], json!([0, 6]));
    assert_eq!(lp["top_logprobs"][0], json!({"alt0": -1.0, "alt1": -2.0}));
    // 5 words + BOS.
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 8);
    assert_eq!(headers.get("x-input-tokens").unwrap(), "6");
    assert_eq!(headers.get("x-output-tokens").unwrap(), "2");
    let req = s.fake.requests.lock().unwrap()[0].clone();
    assert_eq!(
        req.prompt,
        Prompt::Text {
            text: "The capital of France is".into(),
            add_special: true
        }
    );
    assert!(req.sampling.is_greedy());
    assert_eq!(req.logprobs, Some(2));
}

#[actix_web::test]
async fn completion_stream_frames_usage_and_done() {
    let s = setup("a b c ", 0, None);
    let app = app!(s.state);
    let (status, headers, body) = post(
        &app,
        "/models/gen/v1/completions",
        json!({"prompt": [[1, 2, 3]], "stream": true, "stream_options": {"include_usage": true},
               "stop": ["c"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "text/event-stream");
    assert_eq!(headers.get("x-input-tokens").unwrap(), "3");
    let (data, comments) = events(&body);
    let texts: String = data
        .iter()
        .filter_map(|d| d["choices"].get(0).and_then(|c| c["text"].as_str()))
        .collect();
    assert_eq!(texts, "a b ");
    let last_choice = &data[data.len() - 3]["choices"][0];
    assert_eq!(last_choice["finish_reason"], "stop");
    let usage = &data[data.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    assert!(data[0]["usage"].is_null() && data[0].get("usage").is_some());
    assert_eq!(
        comments,
        vec![r#"paddock-usage {"prompt_tokens":3,"completion_tokens":3}"#.to_string()]
    );
    assert!(body.ends_with(
        ": paddock-usage {\"prompt_tokens\":3,\"completion_tokens\":3}\n\ndata: [DONE]\n\n"
    ));
    assert_eq!(
        s.fake.requests.lock().unwrap()[0].prompt,
        Prompt::Tokens(vec![1, 2, 3])
    );
}

#[actix_web::test]
async fn chat_renders_template_and_streams_role_first() {
    let s = setup("Hi there ", 0, Some(TEMPLATE));
    let app = app!(s.state);
    let (status, _, body) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": [{"role": "developer", "content": "be brief"},
                            {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
               "stream": true, "n": 2, "logprobs": true, "top_logprobs": 1, "seed": 7}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (data, _) = events(&body);
    assert_eq!(data[0]["object"], "chat.completion.chunk");
    assert!(data[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
    for (i, d) in data.iter().enumerate().take(2) {
        assert_eq!(d["choices"][0]["index"], i);
        assert_eq!(d["choices"][0]["delta"]["role"], "assistant");
    }
    for i in 0..2 {
        let content: String = data
            .iter()
            .filter(|d| d["choices"].get(0).is_some_and(|c| c["index"] == i))
            .filter_map(|d| d["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hi there ");
        let finish: Vec<&Value> = data
            .iter()
            .filter(|d| d["choices"].get(0).is_some_and(|c| c["index"] == i))
            .map(|d| &d["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, vec![&json!("stop")]);
    }
    let lp = data
        .iter()
        .find(|d| d["choices"][0]["delta"]["content"] == "Hi ")
        .unwrap();
    assert_eq!(lp["choices"][0]["logprobs"]["content"][0]["token"], "Hi ");
    assert_eq!(
        lp["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["token"],
        "alt0"
    );
    let reqs = s.fake.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].prompt,
        Prompt::Text {
            text: "<system>be brief\n<user>hello\n<assistant>".into(),
            add_special: false
        }
    );
    let seeds: Vec<_> = reqs.iter().map(|r| r.sampling.seed).collect();
    assert!(seeds.contains(&Some(7)) && seeds.contains(&Some(8)));
}

#[actix_web::test]
async fn chat_forced_tool_call_becomes_tool_calls() {
    let s = setup(
        r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
        0,
        Some(TEMPLATE),
    );
    let app = app!(s.state);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (status, headers, body) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools,
               "tool_choice": "required"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert!(headers.get("x-output-tokens").is_some());
    let req = s.fake.requests.lock().unwrap()[0].clone();
    assert!(matches!(
        req.constraint,
        crate::engine::generate::Constraint::JsonSchema(_)
    ));
    match &req.prompt {
        Prompt::Text { text, .. } => assert!(text.contains("TOOLS 1"), "{text}"),
        p => panic!("{p:?}"),
    }

    // Streamed: one tool_calls delta and finish_reason tool_calls.
    let (_, _, body) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools,
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "stream": true}),
    )
    .await;
    let (data, _) = events(&body);
    let calls: Vec<&Value> = data
        .iter()
        .filter_map(|d| d["choices"].get(0)?.get("delta")?.get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0][0]["index"], 0);
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert!(data.iter().any(|d| d["choices"]
        .get(0)
        .is_some_and(|c| c["finish_reason"] == "tool_calls")));
}

#[actix_web::test]
async fn bad_parameters_answer_openai_shaped_400s() {
    let s = setup("x ", 0, None);
    let app = app!(s.state);
    let cases = [
        (
            json!({"prompt": "hi", "frobnicate": 1}),
            "unsupported_parameter",
            Some("frobnicate"),
        ),
        (
            json!({"prompt": "hi", "temperature": 3.5}),
            "invalid_parameter",
            Some("temperature"),
        ),
        (
            json!({"prompt": "hi", "presence_penalty": -2.5}),
            "invalid_parameter",
            Some("presence_penalty"),
        ),
        (
            json!({"prompt": "hi", "n": 0}),
            "invalid_parameter",
            Some("n"),
        ),
        (
            json!({"prompt": "hi", "stop": [""]}),
            "invalid_parameter",
            Some("stop"),
        ),
        (
            json!({"prompt": "hi", "logit_bias": {"5": 1}}),
            "unsupported_parameter",
            Some("logit_bias"),
        ),
        (
            json!({"prompt": "hi", "echo": true}),
            "unsupported_parameter",
            Some("echo"),
        ),
        (
            json!({"prompt": "hi", "stream_options": {"include_usage": true}}),
            "invalid_parameter",
            Some("stream_options"),
        ),
        (
            json!({"prompt": "hi", "response_format": {"type": "yaml"}}),
            "invalid_parameter",
            Some("response_format"),
        ),
        (json!({"prompt": ["a", "b"]}), "invalid_input", None),
        (
            json!({"prompt": "one two three", "max_tokens": 62}),
            "context_length_exceeded",
            Some("messages"),
        ),
    ];
    for (body, code, param) in cases {
        let (status, _, text) = post(&app, "/models/gen/v1/completions", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {text}");
        assert_eq!(v["error_type"], code);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"].as_str(), param, "{body}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // Chat on a model without a template.
    let (status, _, text) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "no_chat_template");
    // Unknown model: OpenAI shape too.
    let (status, _, text) = post(
        &app,
        "/models/nope/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[actix_web::test]
async fn overload_answers_429_with_retry_after() {
    let s = setup("w w w w w w w w w w ", 50, None);
    let app = app!(s.state);
    // n = 5 over a limit of 4: refused whole, the 4 queued ones cancelled.
    let (status, headers, text) = post(
        &app,
        "/models/gen/v1/completions",
        json!({"prompt": "hi", "n": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    // Taken and refused for load: not one for the gateway to send elsewhere.
    assert!(headers
        .get(hub_types::control::NOT_STARTED_HEADER)
        .is_none());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "overloaded");
}

/// A model whose process is restarting answers 503 `model_restarting`, and one given
/// up 503 `model_not_ready` with the reason (the heartbeat reports its slot `failed`);
/// both are marked not started, so the gateway may send the call to another replica.
#[actix_web::test]
async fn a_restarting_or_given_up_model_refuses_calls_as_not_started() {
    let s = setup("w w ", 1, None);
    let app = app!(s.state);
    let not_started = |h: &actix_web::http::header::HeaderMap| {
        h.get(hub_types::control::NOT_STARTED_HEADER)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, headers, _) =
        post(&app, "/models/gen/v1/completions", json!({"prompt": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(not_started(&headers), None);

    *s.fake.restarting.lock().unwrap() = Some("killed by signal 9".into());
    let (status, headers, text) =
        post(&app, "/models/gen/v1/completions", json!({"prompt": "hi"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(not_started(&headers).as_deref(), Some("1"));
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "model_restarting", "{v}");
    assert!(text.contains("killed by signal 9"), "{text}");
    let reports = s.state.registry.reports();
    assert_eq!(reports[0].status, crate::registry::SlotStatus::Running);

    *s.fake.failure.lock().unwrap() = Some("3 attempts in a row failed".into());
    let (status, headers, text) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(not_started(&headers).as_deref(), Some("1"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "model_not_ready", "{v}");
    assert!(
        text.contains("failed: 3 attempts in a row failed"),
        "{text}"
    );
    let reports = s.state.registry.reports();
    assert_eq!(reports[0].status, crate::registry::SlotStatus::Failed);
    assert_eq!(
        reports[0].message.as_deref(),
        Some("3 attempts in a row failed")
    );
}

#[actix_web::test]
async fn tgi_generate_plain_details_and_stream() {
    let s = setup("Paris is nice ", 0, None);
    let app = app!(s.state);
    let (status, headers, body) = post(
        &app,
        "/models/gen",
        json!({"inputs": "Capital:", "parameters": {"max_new_tokens": 2, "details": true,
               "return_full_text": true, "watermark": false}, "stream": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["generated_text"], "Capital:Paris is ");
    assert_eq!(v[0]["details"]["finish_reason"], "length");
    assert_eq!(v[0]["details"]["generated_tokens"], 2);
    assert_eq!(v[0]["details"]["tokens"][0]["text"], "Paris ");
    assert_eq!(v[0]["details"]["tokens"][0]["logprob"], -0.25);
    assert_eq!(headers.get("x-output-tokens").unwrap(), "2");
    // Greedy unless asked to sample.
    assert!(s.fake.requests.lock().unwrap()[0].sampling.is_greedy());

    let (status, _, body) = post(
        &app,
        "/models/gen/pipeline/text-generation",
        json!({"inputs": "Capital:", "parameters": {"stop": ["nice"], "do_sample": true, "seed": 3},
               "stream": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (data, comments) = events(&body);
    assert_eq!(data.len(), 4, "{body}");
    assert_eq!(data[0]["index"], 1);
    assert_eq!(data[0]["token"]["text"], "Paris ");
    assert!(data[0]["generated_text"].is_null());
    assert_eq!(data[2]["generated_text"], "Paris is ");
    assert_eq!(data[2]["details"]["finish_reason"], "stop_sequence");
    assert_eq!(data[2]["details"]["generated_tokens"], 3);
    assert_eq!(data[2]["details"]["seed"], 3);
    assert_eq!(comments.len(), 1);

    // Unsupported TGI parameters are named.
    let (status, _, body) = post(
        &app,
        "/models/gen",
        json!({"inputs": "x", "parameters": {"watermark": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error_type"], "unsupported_parameter");
    assert!(v["error"].as_str().unwrap().contains("watermark"));
}

#[actix_web::test]
async fn dropping_a_stream_cancels_the_generation() {
    let s = setup(&"w ".repeat(500), 5, Some(TEMPLATE));
    let app = app!(s.state);
    let req = test::TestRequest::post()
        .uri("/models/gen/v1/chat/completions")
        .set_json(json!({"messages": [{"role": "user", "content": "go"}], "stream": true}))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // Read a couple of frames, then hang up.
    for _ in 0..3 {
        let frame = std::future::poll_fn(|cx| {
            actix_web::body::MessageBody::poll_next(std::pin::Pin::new(&mut body), cx)
        })
        .await;
        assert!(frame.is_some());
    }
    assert_eq!(s.fake.active.load(Ordering::SeqCst), 1);
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.fake.cancelled.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "not cancelled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/models/gen/info")
            .to_request(),
    )
    .await;
    let v: Value = test::read_body_json(info).await;
    assert_eq!(v["stats"]["cancelled_total"], 1);
    assert_eq!(v["stats"]["active_slots"], 0);
    for k in [
        "prompt_cache_entries",
        "prompt_cache_bytes",
        "prompt_cache_hits_total",
    ] {
        assert_eq!(v["stats"][k], 0, "{k}");
    }
    assert_eq!(v["decoder"]["context_length"], 64);
}

#[actix_web::test]
async fn models_lists_context_length() {
    let s = setup("x ", 0, None);
    let app = app!(s.state);
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/models/gen/v1/models")
            .to_request(),
    )
    .await;
    let v: Value = test::read_body_json(resp).await;
    assert_eq!(v["data"][0]["id"], "acme/fake-lm");
    assert_eq!(v["data"][0]["max_model_len"], 64);
    assert_eq!(v["data"][0]["context_length"], 64);
}

#[::core::prelude::v1::test]
fn raw_fields_keep_the_text_of_each_field() {
    let body =
        r#" { "tools" : [{"b": 1, "a": "x,}"}], "n":2 ,"s":"q\"}" , "o": {"z":[1,{"y":2}]}} "#;
    let raw = super::genparams::raw_fields(body);
    assert_eq!(raw["tools"], r#"[{"b": 1, "a": "x,}"}]"#);
    assert_eq!(raw["n"], "2");
    assert_eq!(raw["s"], r#""q\"}""#);
    assert_eq!(raw["o"], r#"{"z":[1,{"y":2}]}"#);
}

#[::core::prelude::v1::test]
fn response_formats_map_to_constraints() {
    use super::genparams::response_format;
    use crate::engine::generate::Constraint;
    let rf = |raw: &str| {
        let v: Value = serde_json::from_str(raw).unwrap();
        response_format(Some(&v), Some(raw))
    };
    assert_eq!(response_format(None, None).unwrap(), Constraint::None);
    assert_eq!(rf(r#"{"type": "text"}"#).unwrap(), Constraint::None);
    assert_eq!(
        rf(r#"{"type": "json_object"}"#).unwrap(),
        Constraint::JsonObject
    );
    // The schema is passed on as the client wrote it: properties in declared order.
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}"#;
    assert_eq!(
        rf(&format!(
            r#"{{"type": "json_schema", "json_schema": {{"name": "x", "schema": {schema}}}}}"#
        ))
        .unwrap(),
        Constraint::JsonSchema(schema.to_string())
    );
    // huggingface_hub's chat_completion sends TGI's shape.
    assert_eq!(
        rf(&format!(r#"{{"type": "json_object", "value": {schema}}}"#)).unwrap(),
        Constraint::JsonSchema(schema.to_string())
    );
    assert!(rf(r#"{"type": "json_schema"}"#).is_err());
    assert!(rf(r#"{"type": "json_schema", "json_schema": {"schema": 3}}"#).is_err());
    // Without the raw text (TGI's parsed parameters) the parsed schema is used.
    let v = json!({"type": "json", "value": {"type": "object"}});
    assert_eq!(
        response_format(Some(&v), None).unwrap(),
        Constraint::JsonSchema(r#"{"type":"object"}"#.to_string())
    );
}

#[::core::prelude::v1::test]
fn raw_at_follows_object_keys() {
    use super::genparams::raw_at;
    let raw = r#"{"a": {"b": {"z": 1, "y": [2]}}, "a2": 3, "a": {"b": {"last": true}}}"#;
    assert_eq!(raw_at(raw, &["a", "b"]), Some(r#"{"last": true}"#));
    assert_eq!(raw_at(raw, &["a2"]), Some("3"));
    assert_eq!(raw_at(raw, &["a2", "x"]), None);
    assert_eq!(raw_at(raw, &["nope"]), None);
}

#[::core::prelude::v1::test]
fn openai_parameters_map_to_the_request() {
    let body = json!({"max_tokens": 5, "max_completion_tokens": 9, "temperature": 0.5, "top_p": 0.9,
                      "top_k": -1, "min_p": 0.05, "seed": -1, "stop": "END",
                      "presence_penalty": 1.5, "frequency_penalty": -1.0, "n": 3});
    let p = super::genparams::openai(body.as_object().unwrap(), &Default::default(), true).unwrap();
    assert_eq!(p.max_tokens, Some(9));
    assert_eq!(p.n, 3);
    assert_eq!(p.stop, vec!["END".to_string()]);
    assert_eq!(p.sampling.temperature, 0.5);
    assert_eq!(p.sampling.top_p, 0.9);
    assert_eq!(p.sampling.top_k, 0);
    assert_eq!(p.sampling.min_p, 0.05);
    assert_eq!(p.sampling.seed, Some(u64::MAX));
    assert_eq!(p.sampling.presence_penalty, 1.5);
    assert_eq!(p.sampling.frequency_penalty, -1.0);
    assert_eq!(p.logprobs, None);
    let err = super::genparams::openai(
        json!({"top_logprobs": 2}).as_object().unwrap(),
        &Default::default(),
        true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("top_logprobs"), "{err}");
    let many = vec!["a"; 17];
    let err = super::genparams::openai(
        json!({"stop": many}).as_object().unwrap(),
        &Default::default(),
        true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("at most 16"), "{err}");
}

#[::core::prelude::v1::test]
fn tgi_parameters_map_like_tgi() {
    use super::genparams::tgi;
    let p = tgi(None, None).unwrap();
    assert!(p.sampling.is_greedy());
    assert_eq!(p.max_new_tokens, None);
    let p = tgi(
        Some(
            &json!({"temperature": 0.7, "top_k": 10, "max_new_tokens": 4,
                              "repetition_penalty": 1.2, "top_n_tokens": 3}),
        ),
        None,
    )
    .unwrap();
    assert_eq!(p.sampling.temperature, 0.7);
    assert_eq!(p.sampling.top_k, 10);
    assert_eq!(p.sampling.repetition_penalty, 1.2);
    assert_eq!(p.top_n_tokens, 3);
    assert_eq!(p.max_new_tokens, Some(4));
    for bad in [
        json!({"temperature": 0}),
        json!({"top_p": 1.0}),
        json!({"typical_p": 0.5}),
        json!({"grammar": {"type": "regex", "value": "a+"}}),
        json!({"frob": 1}),
    ] {
        assert!(tgi(Some(&bad), None).is_err(), "{bad}");
    }
}

#[::core::prelude::v1::test]
fn tgi_grammar_keeps_the_declared_property_order() {
    use super::genparams::{raw_at, tgi};
    use crate::engine::generate::Constraint;
    let body = r#"{"inputs": "x", "parameters": {"grammar": {"type": "json", "value":
        {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}},
         "required": ["zeta", "alpha"]}}}}"#;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let p = tgi(v.get("parameters"), raw_at(body, &["parameters"])).unwrap();
    let Constraint::JsonSchema(schema) = &p.constraint else {
        panic!("{:?}", p.constraint)
    };
    let (z, a) = (schema.find("zeta").unwrap(), schema.find("alpha").unwrap());
    assert!(z < a, "declared order kept: {schema}");
    // Without the text, the parsed value's sorted keys are all there is.
    let p = tgi(v.get("parameters"), None).unwrap();
    let Constraint::JsonSchema(schema) = &p.constraint else {
        panic!()
    };
    assert!(schema.find("alpha").unwrap() < schema.find("zeta").unwrap());
}

#[actix_web::test]
async fn tool_choice_is_validated() {
    let s = setup("x ", 0, Some(TEMPLATE));
    let app = app!(s.state);
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (body, want) in [
        (json!({"tool_choice": "required"}), "needs tools"),
        (
            json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "not in tools",
        ),
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": tools, "tool_choice": "required",
                "response_format": {"type": "json_object"}}),
            "cannot be combined",
        ),
    ] {
        let mut body = body;
        body["messages"] = json!([{"role": "user", "content": "hi"}]);
        let (status, _, text) = post(&app, "/models/gen/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(want), "{text}");
    }
}

/// The request's key order reaches the template and the engine untouched: tools render
/// with their keys as declared (transformers' `tojson` keeps insertion order), and the
/// forced call's schema (and a `response_format` schema) lists properties as declared.
#[actix_web::test]
async fn declared_key_order_reaches_the_template_and_the_grammar() {
    let template = "{% for m in messages %}{{ m.content }}{% endfor %}|{{ tools | tojson }}|";
    let s = setup(r#"{"name": "f", "arguments": {}}"#, 0, Some(template));
    let app = app!(s.state);
    let tools = r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}}}}}]"#;
    let post_text = |body: String| {
        test::TestRequest::post()
            .uri("/models/gen/v1/chat/completions")
            .insert_header(("content-type", "application/json"))
            .set_payload(body)
            .to_request()
    };
    let body = format!(
        r#"{{"messages": [{{"role": "user", "content": "hi"}}], "tools": {tools}, "tool_choice": "auto"}}"#
    );
    let resp = test::call_service(&app, post_text(body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let in_order = |text: &str, keys: &[&str]| {
        let at: Vec<usize> = keys
            .iter()
            .map(|k| {
                text.find(&format!("\"{k}\""))
                    .unwrap_or_else(|| panic!("{k} in {text}"))
            })
            .collect();
        at.windows(2).all(|w| w[0] < w[1])
    };
    let prompt = match &s.fake.requests.lock().unwrap()[0].prompt {
        Prompt::Text { text, .. } => text.clone(),
        p => panic!("{p:?}"),
    };
    assert!(in_order(&prompt, &["type", "function"]), "{prompt}");
    assert!(in_order(&prompt, &["name", "age", "city"]), "{prompt}");

    let body = format!(
        r#"{{"messages": [{{"role": "user", "content": "hi"}}], "tools": {tools}, "tool_choice": "required"}}"#
    );
    let resp = test::call_service(&app, post_text(body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let schema = match &s.fake.requests.lock().unwrap()[1].constraint {
        crate::engine::generate::Constraint::JsonSchema(schema) => schema.clone(),
        c => panic!("{c:?}"),
    };
    // `name` before `arguments`, then the tool's properties as declared.
    assert!(
        in_order(&schema, &["name", "arguments", "age", "city"]),
        "{schema}"
    );

    let body = r#"{"messages": [{"role": "user", "content": "hi"}], "response_format":
        {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object",
        "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}}}"#;
    let resp = test::call_service(&app, post_text(body.to_string())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let schema = match &s.fake.requests.lock().unwrap()[2].constraint {
        crate::engine::generate::Constraint::JsonSchema(schema) => schema.clone(),
        c => panic!("{c:?}"),
    };
    assert!(in_order(&schema, &["zeta", "alpha"]), "{schema}");
}

/// A repo with named templates: requests with tools render `tool_use`, requests without
/// render `default`, and without a `default` a plain request has no template (400).
#[actix_web::test]
async fn the_tool_use_template_renders_requests_with_tools() {
    let s = setup_templates(
        "ok",
        0,
        Some("DEFAULT"),
        Some("TOOL_USE {{ tools | length }}"),
    );
    let app = app!(s.state);
    let messages = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for body in [
        json!({"messages": messages}),
        json!({"messages": messages, "tools": tools}),
        json!({"messages": messages, "tools": tools, "tool_choice": "none"}),
    ] {
        let (status, _, text) = post(&app, "/models/gen/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let prompts: Vec<String> = s
        .fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| match &r.prompt {
            Prompt::Text { text, .. } => text.clone(),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(prompts, ["DEFAULT", "TOOL_USE 1", "DEFAULT"]);

    let s = setup_templates("ok", 0, None, Some("TOOL_USE"));
    let app = app!(s.state);
    let (status, _, text) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": messages}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("no_chat_template"), "{text}");
    let (status, _, text) = post(
        &app,
        "/models/gen/v1/chat/completions",
        json!({"messages": messages, "tools": tools}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
