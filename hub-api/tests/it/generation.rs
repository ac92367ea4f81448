//! The hub side of text generation against a real PostgreSQL: task detection and the
//! decoder memory estimate at endpoint creation, the gateway streaming a worker's SSE
//! response byte for byte (the usage event stripped wherever the chunks split it),
//! prompt and completion tokens metered per request, the worker's stream dropped when
//! the client leaves, and the daily token quota.
//!
//! The worker here is a stand-in speaking the worker's metering contract
//! ([`hub_types::metering`]) over raw TCP, so the test controls every chunk and sees
//! the moment the gateway closes the connection (hub-api cannot link the real worker;
//! the real worker is exercised end to end by the conformance suite).

use hub_testkit::{Server, TestState};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A synthetic GGUF v3 file: `general.architecture`, u32 metadata, one F32 tensor.
fn gguf(arch: &str, ints: &[(&str, u32)]) -> Vec<u8> {
    let s = |out: &mut Vec<u8>, v: &str| {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((1 + ints.len() as u64).to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, arch);
    for (k, v) in ints {
        s(&mut b, k);
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    s(&mut b, "w");
    b.extend(1u32.to_le_bytes());
    b.extend(8u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend([0u8; 32]);
    b
}

fn gemma_gguf() -> Vec<u8> {
    gguf(
        "gemma3",
        &[
            ("gemma3.block_count", 18),
            ("gemma3.attention.head_count", 4),
            ("gemma3.attention.head_count_kv", 1),
            ("gemma3.attention.key_length", 256),
            ("gemma3.embedding_length", 640),
            ("gemma3.context_length", 32768),
        ],
    )
}

/// What the stand-in worker saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    body: Value,
    /// For a held stream: how long after its first event the gateway closed the
    /// connection (None: it never did, within 10 s).
    closed_after: Option<Duration>,
}

/// The stand-in worker. Per request (its JSON body says what to do):
/// - `{"stream": false}`: a JSON answer with `X-Input-Tokens: 7`, `X-Output-Tokens: 3`;
/// - `{"stream": true, "chunks": [...]}`: an SSE response, each string one chunk
///   written separately (20 ms apart), `X-Input-Tokens: 7`;
/// - `{"stream": true, "hold": true}`: one event, then nothing until the gateway
///   closes the connection.
struct FakeWorker {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    secret: Arc<Mutex<String>>,
}

impl FakeWorker {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let secret = Arc::new(Mutex::new(String::new()));
        let (s2, sec2) = (seen.clone(), secret.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (seen, secret) = (s2.clone(), sec2.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, seen, secret).await;
                });
            }
        });
        FakeWorker { url, seen, secret }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut sock: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    secret: Arc<Mutex<String>>,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(json!({}));
    if header("authorization") != format!("Bearer {}", secret.lock().unwrap()) {
        sock.write_all(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await?;
        return Ok(());
    }
    let mut record = Seen {
        path,
        body: body.clone(),
        closed_after: None,
    };
    if body["stream"] != true {
        // Recorded before the answer goes out: the test reads the record as soon as it has
        // the answer, and this task may not run again before that.
        seen.lock().unwrap().push(record);
        let answer = json!({"choices": [{"text": " the capital"}]}).to_string();
        sock.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-input-tokens: 7\r\nx-output-tokens: 3\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )
        .await?;
        return Ok(());
    }
    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nx-input-tokens: 7\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
    if body["hold"] == true {
        sock.write_all(chunk("data: {\"token\":1}\n\n").as_bytes())
            .await?;
        let sent = Instant::now();
        // Wait for the gateway to close its side (read returns 0 or fails).
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut b = [0u8; 64];
            loop {
                match sock.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        record.closed_after = closed.is_ok().then(|| sent.elapsed());
        seen.lock().unwrap().push(record);
        return Ok(());
    }
    for c in body["chunks"].as_array().cloned().unwrap_or_default() {
        sock.write_all(chunk(c.as_str().unwrap()).as_bytes())
            .await?;
        sock.flush().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Recorded before the stream's end goes out (see above).
    seen.lock().unwrap().push(record);
    sock.write_all(b"0\r\n\r\n").await?;
    Ok(())
}

/// A worker registered with the hub, running what the scheduler assigns it.
async fn register_and_run(
    t: &TestState,
    hub: &str,
    token: &str,
    fake: &FakeWorker,
    endpoints: usize,
) {
    let http = reqwest::Client::new();
    let r: Value = http
        .post(format!("{hub}/api/v1/workers/register"))
        .bearer_auth(token)
        .json(&json!({"name": "fake", "url": fake.url, "capacity": {"memory_bytes": 8u64 << 30, "cores": 2}, "version": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    *fake.secret.lock().unwrap() = r["gateway_secret"].as_str().unwrap().to_string();
    let id = r["worker_id"].as_str().unwrap().to_string();
    let secret = r["gateway_secret"].as_str().unwrap().to_string();
    for _ in 0..50 {
        hub_api::scheduler::tick(&t.state).await.unwrap();
        let a: Value = http
            .get(format!(
                "{hub}/api/v1/workers/{id}/assignments?version=0&wait_s=1"
            ))
            .bearer_auth(token)
            .header(hub_types::control::WORKER_SECRET_HEADER, &secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = a["assignments"].as_array().cloned().unwrap_or_default();
        if list.len() == endpoints {
            let models: Vec<Value> = list
                .iter()
                .map(|a| json!({"assignment_id": a["assignment_id"], "status": "running"}))
                .collect();
            let st = http
                .post(format!("{hub}/api/v1/workers/{id}/heartbeat"))
                .bearer_auth(token)
                .header(hub_types::control::WORKER_SECRET_HEADER, &secret)
                .json(&json!({"free_memory_bytes": 8u64 << 30, "models": models}))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(st, 200);
            hub_api::scheduler::tick(&t.state).await.unwrap();
            // Keep heartbeating (a replica of a silent worker is not routed to).
            let (hub, token) = (hub.to_string(), token.to_string());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let _ = http
                        .post(format!("{hub}/api/v1/workers/{id}/heartbeat"))
                        .bearer_auth(&token)
                        .header(hub_types::control::WORKER_SECRET_HEADER, &secret)
                        .json(&json!({"free_memory_bytes": 8u64 << 30, "models": models}))
                        .send()
                        .await;
                }
            });
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the worker never got {endpoints} assignments");
}

async fn commit(http: &reqwest::Client, hub: &str, tok: &str, repo: &str, ops: &[Value]) {
    let (ns, name) = repo.split_once('/').unwrap();
    let r = http
        .post(format!("{hub}/api/repos/create"))
        .bearer_auth(tok)
        .json(&json!({"name": name, "organization": ns}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = http
        .post(format!("{hub}/api/models/{repo}/commit/main"))
        .bearer_auth(tok)
        .body(hub_testkit::ndjson("m", None, ops))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

async fn create_endpoint(
    http: &reqwest::Client,
    hub: &str,
    tok: &str,
    ns: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .post(format!("{hub}/api/v1/endpoints/{ns}"))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The usage API's rows of a namespace, once the buffered records are written.
async fn usage(http: &reqwest::Client, hub: &str, tok: &str, ns: &str) -> Vec<Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v: Value = http
        .get(format!("{hub}/api/v1/usage?namespace={ns}"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_detected_and_decoders_sized() {
    let t = TestState::new().await;
    let (owner_id, owner) = t.user("acme-admin", false, &["read", "write"]).await;
    t.org("acme", owner_id).await;
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();

    let llama_config = br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_size":64,"max_position_embeddings":2048,"torch_dtype":"bfloat16"}"#;
    commit(
        &http,
        &hub,
        &owner,
        "acme/tagged",
        &[
            hub_testkit::file_op("README.md", b"---\npipeline_tag: text-generation\n---\n"),
            hub_testkit::file_op("config.json", llama_config),
            hub_testkit::file_op("model.safetensors", &safetensors_file()),
        ],
    )
    .await;
    commit(
        &http,
        &hub,
        &owner,
        "acme/causal",
        &[hub_testkit::file_op("config.json", llama_config)],
    )
    .await;
    // f8 weights whose config.json claims float32: 1,000 elements, 1,000 bytes on disk,
    // 4,000 bytes once candle holds them as f32.
    let f8_config = br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_size":64,"max_position_embeddings":2048,"torch_dtype":"float32"}"#;
    commit(
        &http,
        &hub,
        &owner,
        "acme/f8",
        &[
            hub_testkit::file_op("config.json", f8_config),
            hub_testkit::file_op(
                "model.safetensors",
                &safetensors_with(
                    r#"{"w":{"dtype":"F8_E4M3","shape":[10,100],"data_offsets":[0,1000]}}"#,
                    1000,
                ),
            ),
        ],
    )
    .await;
    commit(
        &http,
        &hub,
        &owner,
        "acme/gguf",
        &[
            hub_testkit::file_op("model-Q4_K_M.gguf", &gemma_gguf()),
            hub_testkit::file_op("mmproj-f16.gguf", &gguf("clip", &[])),
        ],
    )
    .await;
    commit(
        &http,
        &hub,
        &owner,
        "acme/encoder",
        &[hub_testkit::file_op(
            "config.json",
            br#"{"architectures":["BertModel"]}"#,
        )],
    )
    .await;
    commit(
        &http,
        &hub,
        &owner,
        "acme/bert-gguf",
        &[
            hub_testkit::file_op("README.md", b"---\npipeline_tag: feature-extraction\n---\n"),
            hub_testkit::file_op("m.gguf", &gguf("bert", &[])),
        ],
    )
    .await;
    commit(
        &http,
        &hub,
        &owner,
        "acme/shapeless",
        &[hub_testkit::file_op(
            "config.json",
            br#"{"architectures":["MysteryForCausalLM"]}"#,
        )],
    )
    .await;

    // Detected: pipeline tag, config.json architectures, the GGUF header.
    for (name, repo) in [
        ("a", "acme/tagged"),
        ("b", "acme/causal"),
        ("c", "acme/gguf"),
        ("f8", "acme/f8"),
    ] {
        let (st, v) = create_endpoint(
            &http,
            &hub,
            &owner,
            "acme",
            json!({"name": name, "repository": repo}),
        )
        .await;
        assert_eq!(st, 201, "{repo}: {v}");
        assert_eq!(v["task"], "text-generation", "{repo}");
    }
    // An encoder GGUF stays an encoder.
    let (st, v) = create_endpoint(
        &http,
        &hub,
        &owner,
        "acme",
        json!({"name": "d", "repository": "acme/bert-gguf"}),
    )
    .await;
    assert_eq!(
        (st, v["task"].as_str()),
        (201, Some("feature-extraction")),
        "{v}"
    );
    // The wrong family is a clear 400, either way.
    for (body, words) in [
        (
            json!({"name": "x", "repository": "acme/encoder", "task": "text-generation"}),
            // The hub derived the pipeline tag from BertModel at commit time.
            ["needs a decoder", "pipeline_tag feature-extraction"],
        ),
        (
            json!({"name": "x", "repository": "acme/gguf", "task": "feature-extraction"}),
            ["needs an encoder", "gemma3"],
        ),
        (
            json!({"name": "x", "repository": "acme/causal", "task": "sentence-similarity"}),
            // Derived from LlamaForCausalLM at commit time.
            ["needs an encoder", "pipeline_tag text-generation"],
        ),
        (
            json!({"name": "x", "repository": "acme/shapeless"}),
            ["KV cache", "num_hidden_layers"],
        ),
    ] {
        let (st, v) = create_endpoint(&http, &hub, &owner, "acme", body.clone()).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (400, Some("validation_failed")),
            "{body}: {v}"
        );
        let msg = v["error"].as_str().unwrap();
        for w in words {
            assert!(msg.contains(w), "{body}: {msg} should name {w}");
        }
    }

    // The memory estimate: the GGUF file the worker maps (not the projector) plus the
    // KV cache of 4 slots x 4096 tokens of its shape, the fixed overhead, and the
    // prompt cache's default budget (llama.cpp only).
    let size = gemma_gguf().len() as i64;
    let e = hub_api::db::endpoints::get(&t.state.db, "acme", "c")
        .await
        .unwrap()
        .unwrap();
    let need = hub_api::scheduler::memory_need(&t.state, &e).await.unwrap();
    let kv = 4 * 18 * 256 * (4 * 4096);
    let cache = 256 << 20;
    assert_eq!(need, size + kv + (256 << 20) + cache);
    // The safetensors decoders: their weights as candle holds them (4 bytes per tensor
    // element, from the headers validated at commit: the config.json dtype is not
    // believed) and the config's shape, each slot's context capped at the training
    // context (2048).
    let kv_st = 4 * 2 * 2 * 16 * (4 * 2048);
    for (name, elements) in [("a", 4), ("f8", 1000)] {
        let e = hub_api::db::endpoints::get(&t.state.db, "acme", name)
            .await
            .unwrap()
            .unwrap();
        let need = hub_api::scheduler::memory_need(&t.state, &e).await.unwrap();
        assert_eq!(need, 4 * elements + kv_st + (256 << 20), "{name}");
    }
    // The scheduler places by it: a worker smaller than that is "not that big".
    let (wuser, _) = t.user("ops", true, &["worker"]).await;
    let (_, wt) = hub_api::admin::create_token(&t.state.db, wuser, "w", &["worker".into()], None)
        .await
        .unwrap();
    let small = (size + kv + (256 << 20) + cache) as u64 - 1;
    let r = http
        .post(format!("{hub}/api/v1/workers/register"))
        .bearer_auth(&wt)
        .json(&json!({"name": "small", "url": "http://127.0.0.1:1", "capacity": {"memory_bytes": small, "cores": 2}, "version": "test"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    sqlx::query("UPDATE workers SET free_memory_bytes = memory_bytes")
        .execute(&t.state.db)
        .await
        .unwrap();
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let v: Value = http
        .get(format!("{hub}/api/v1/endpoints/acme/c"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mib = (size + kv + (256 << 20) + cache) / (1 << 20);
    assert_eq!(
        v["message"],
        format!("the model needs about {mib} MiB; no worker is that big"),
        "{v}"
    );
    server.stop().await;
}

/// A tiny safetensors file (one F32 tensor of 4 values).
fn safetensors_file() -> Vec<u8> {
    safetensors_with(
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        16,
    )
}

pub(crate) fn safetensors_with(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(vec![0u8; data]);
    b
}

/// Stands up acme (with a GGUF decoder endpoint `chat`) and globex (endpoint `gen`),
/// both served by one stand-in worker.
struct Stack {
    /// Keeps the database up.
    _t: TestState,
    server: Server,
    hub: String,
    http: reqwest::Client,
    owner: String,
    other: String,
    admin: String,
    worker: FakeWorker,
}

async fn stack() -> Stack {
    let t = TestState::new().await;
    let (owner_id, owner) = t.user("acme-admin", false, &["read", "write"]).await;
    t.org("acme", owner_id).await;
    let (_, other) = t.user("globex", false, &["read", "write"]).await;
    let (admin_id, admin) = t.user("root", true, &["read", "write", "admin"]).await;
    let (_, wt) =
        hub_api::admin::create_token(&t.state.db, admin_id, "w", &["worker".into()], None)
            .await
            .unwrap();
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    let ops = [hub_testkit::file_op("model.gguf", &gemma_gguf())];
    commit(&http, &hub, &owner, "acme/g", &ops).await;
    commit(&http, &hub, &other, "globex/g", &ops).await;
    for (tok, ns, name) in [(&owner, "acme", "chat"), (&other, "globex", "gen")] {
        let (st, v) = create_endpoint(
            &http,
            &hub,
            tok,
            ns,
            json!({"name": name, "repository": format!("{ns}/g")}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    let worker = FakeWorker::start().await;
    register_and_run(&t, &hub, &wt, &worker, 2).await;
    Stack {
        _t: t,
        server,
        hub,
        http,
        owner,
        other,
        admin,
        worker,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_pass_through_and_tokens_are_metered() {
    let s = stack().await;
    let url = format!("{}/endpoints/acme/chat/v1/chat/completions", s.hub);
    // The usage event split across three chunks, the first sharing a chunk with a token.
    let chunks = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"The\"}}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\" capital\"}}]}\n\n: paddock-",
        "usage {\"prompt_tokens\":11,",
        "\"completion_tokens\":2}\n",
        "\ndata: [DONE]\n\n",
    ];
    let want = "data: {\"choices\":[{\"delta\":{\"content\":\"The\"}}]}\n\n: keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" capital\"}}]}\n\ndata: [DONE]\n\n";
    let r = s
        .http
        .post(&url)
        .bearer_auth(&s.owner)
        .json(&json!({"stream": true, "chunks": chunks}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert!(r.headers().get("x-input-tokens").is_none());
    let got = r.bytes().await.unwrap();
    assert_eq!(std::str::from_utf8(&got).unwrap(), want);
    let seen = s.worker.seen();
    assert!(
        seen[0].path.ends_with("/v1/chat/completions") && seen[0].body["stream"] == true,
        "{seen:?}"
    );

    // A stream without the usage event: one completion token per data event.
    let r = s
        .http
        .post(&url)
        .bearer_auth(&s.owner)
        .json(&json!({"stream": true, "chunks": ["data: {\"a\":1}\n\n", "data: {\"a\":2}\n\ndata: {\"a\":3}\n\n", "data: [DONE]\n\n"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: {\"a\":3}\n\ndata: [DONE]\n\n"
    );
    // Non-streamed: the headers count, and the body comes with its length.
    let r = s
        .http
        .post(&url)
        .bearer_auth(&s.owner)
        .json(&json!({"stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.content_length().is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["text"], " the capital");

    // Usage: prompt 11 + 7 + 7, completion 2 + 3 + 3; three requests.
    let items = usage(&s.http, &s.hub, &s.owner, "acme").await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["endpoint"], "chat");
    assert_eq!(items[0]["requests"], 3);
    assert_eq!(items[0]["input_tokens"], 25);
    assert_eq!(items[0]["output_tokens"], 8);
    assert_eq!(items[0]["errors"], 0);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_drops_the_workers_stream() {
    let s = stack().await;
    let mut r = s
        .http
        .post(format!("{}/endpoints/acme/chat/v1/completions", s.hub))
        .bearer_auth(&s.owner)
        .json(&json!({"stream": true, "hold": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The first event arrives while the worker still holds the stream: not buffered.
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("the first event is forwarded at once")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: {\"token\":1}\n\n");
    let left = Instant::now();
    drop(r);
    // The worker sees its connection closed soon after.
    let closed = loop {
        if let Some(seen) = s.worker.seen().into_iter().find(|x| x.body["hold"] == true) {
            break seen.closed_after;
        }
        assert!(
            left.elapsed() < Duration::from_secs(12),
            "the worker never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let closed = closed.expect("the gateway never closed the worker's stream");
    println!("upstream closed {:?} after the client left", left.elapsed());
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
    // Recorded with the prompt tokens of the headers and one completion token per
    // data event forwarded.
    let items = usage(&s.http, &s.hub, &s.owner, "acme").await;
    assert_eq!(
        (
            items[0]["input_tokens"].as_i64(),
            items[0]["output_tokens"].as_i64()
        ),
        (Some(7), Some(1)),
        "{items:?}"
    );
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_daily_token_quota_answers_429() {
    let s = stack().await;
    let quota_url = format!("{}/api/v1/namespaces/acme/quota", s.hub);
    // Only site admins set it; a bad value is named.
    let r = s
        .http
        .put(&quota_url)
        .bearer_auth(&s.owner)
        .json(&json!({"daily_token_quota": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .http
        .put(&quota_url)
        .bearer_auth(&s.admin)
        .json(&json!({"daily_token_quota": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("daily_token_quota"),
        "{v}"
    );
    let r = s
        .http
        .put(&quota_url)
        .bearer_auth(&s.admin)
        .json(&json!({"daily_token_quota": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["daily_token_quota"], 25);

    // Each call is 7 + 3 tokens: three calls pass (the third crosses the quota), the
    // fourth is refused.
    let call = |tok: String, ep: &'static str| {
        let http = s.http.clone();
        let url = format!("{}/endpoints/{ep}/v1/completions", s.hub);
        async move {
            http.post(url)
                .bearer_auth(tok)
                .json(&json!({"stream": false}))
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..3 {
        assert_eq!(
            call(s.owner.clone(), "acme/chat").await.status(),
            200,
            "call {i}"
        );
    }
    let r = call(s.owner.clone(), "acme/chat").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now();
    let to_midnight = (hub_api::token_quota::next_reset(now) - now).num_seconds() as u64;
    assert!(
        (1..=to_midnight + 1).contains(&retry),
        "{retry} vs {to_midnight}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "token_quota_exceeded");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("25") && msg.contains("acme") && msg.contains("resets at"),
        "{msg}"
    );
    assert_eq!(
        s.worker.seen().len(),
        3,
        "the refused call never reached the worker"
    );
    // Another namespace is unaffected.
    assert_eq!(call(s.other.clone(), "globex/gen").await.status(), 200);
    // Members read the quota and today's count.
    let v: Value = s
        .http
        .get(&quota_url)
        .bearer_auth(&s.owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["daily_token_quota"], 25);
    assert_eq!(v["tokens_used_today"], 30);
    assert!(
        v["tokens_reset_at"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00.000Z"),
        "{v}"
    );
    // Raising the quota lets calls through again at once (this process forgets its count).
    let r = s
        .http
        .put(&quota_url)
        .bearer_auth(&s.admin)
        .json(&json!({"daily_token_quota": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(call(s.owner.clone(), "acme/chat").await.status(), 200);
    s.server.stop().await;
}

/// The real fixture's header (when `PADDOCK_GEMMA_GGUF` names it): the bounded reader
/// finds Gemma-3-270M's shape, and the estimate is weights + KV cache + overhead.
#[test]
fn the_real_gemma_gguf_is_sized() {
    let Some(path) = std::env::var_os("PADDOCK_GEMMA_GGUF") else {
        eprintln!("PADDOCK_GEMMA_GGUF is not set; skipping");
        return;
    };
    let mut f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let s = hub_api::validate::gguf::check_stream(&mut f, size).unwrap();
    assert_eq!(s.architecture.as_deref(), Some("gemma3"));
    let dims = hub_types::decoder::from_gguf("gemma3", |k| s.integers.get(k).copied()).unwrap();
    assert_eq!(
        (dims.shape.layers, dims.shape.kv_heads, dims.shape.head_dim),
        (18, 1, 256)
    );
    assert_eq!(dims.train_context, Some(32768));
    let need = hub_types::decoder::default_gguf_decoder_bytes(size, dims);
    assert_eq!(
        need,
        size + 18 * 256 * 4 * 4 * 4096 + (256 << 20) + (256 << 20)
    );
    println!(
        "gemma-3-270m: {size} bytes of weights, need {} MiB",
        need >> 20
    );
}
