//! The endpoint control plane and gateway against a real PostgreSQL, with a
//! stand-in worker speaking the worker protocol over real HTTP (the real
//! engine is exercised end to end by tests/conformance/test_endpoints.py).

use hub_testkit::{Server, TestState};
use hub_types::control::WORKER_SECRET_HEADER;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A stand-in worker: answers `/models/{key}/v1/embeddings` with a fixed
/// vector after checking the gateway secret.
async fn fake_worker(
    secret: Arc<std::sync::Mutex<String>>,
    hits: Arc<AtomicUsize>,
) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpRequest, HttpResponse};
    stand_in(move |app| {
        let secret = secret.clone();
        let hits = hits.clone();
        app.route(
            "/models/{key}/{tail:.*}",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let secret = secret.clone();
                let hits = hits.clone();
                async move {
                    let want = format!("Bearer {}", secret.lock().unwrap());
                    if req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string()) != Some(want) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    let v: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                    let n = v["input"].as_array().map(|a| a.len()).unwrap_or(1);
                    HttpResponse::Ok()
                        .insert_header(("X-Input-Tokens", (n * 5).to_string()))
                        .json(json!({"object": "list", "data": (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.6, 0.8]})).collect::<Vec<_>>(), "usage": {"prompt_tokens": n * 5, "total_tokens": n * 5}}))
                }
            }),
        );
    })
}

/// A one-thread HTTP server on a free loopback port with the routes `routes`
/// adds: its URL and handle.
fn stand_in(
    routes: impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static,
) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
    let handle = server.handle();
    tokio::spawn(server);
    (url, handle)
}

struct Worker {
    id: String,
    http: reqwest::Client,
    hub: String,
    token: String,
    /// The registration's gateway secret, sent on the worker's own calls.
    secret: String,
}

impl Worker {
    async fn register(hub: &str, token: &str, url: &str, memory: u64) -> (Self, String) {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!("{hub}/api/v1/workers/register"))
            .bearer_auth(token)
            .json(&json!({"name": "fake", "url": url, "capacity": {"memory_bytes": memory, "cores": 2}, "version": "test"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let w = Worker {
            id: r["worker_id"].as_str().unwrap().to_string(),
            http,
            hub: hub.into(),
            token: token.into(),
            secret: r["gateway_secret"].as_str().unwrap().to_string(),
        };
        (w, r["gateway_secret"].as_str().unwrap().to_string())
    }

    async fn poll(&self, version: i64) -> Value {
        self.http
            .get(format!(
                "{}/api/v1/workers/{}/assignments?version={version}&wait_s=5",
                self.hub, self.id
            ))
            .bearer_auth(&self.token)
            .header(WORKER_SECRET_HEADER, &self.secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn heartbeat(&self, models: Value) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/api/v1/workers/{}/heartbeat", self.hub, self.id))
            .bearer_auth(&self.token)
            .header(WORKER_SECRET_HEADER, &self.secret)
            .json(&json!({"free_memory_bytes": 8u64 << 30, "models": models}))
            .send()
            .await
            .unwrap()
            .status()
    }
}

async fn scheduler_until<F: Fn(&Value) -> bool>(
    state: &hub_api::state::AppState,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    ok: F,
) -> Value {
    for _ in 0..100 {
        hub_api::scheduler::tick(state).await.unwrap();
        let v: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ok(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v: Value = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    panic!("condition never held: {v}");
}

/// A hub serving user `solo` (read/write token `owner`, worker token
/// `worker_token`) with a model repo `solo/m` holding a BERT `config.json`.
struct Solo {
    server: Server,
    hub: String,
    http: reqwest::Client,
    owner: String,
    worker_token: String,
}

impl Solo {
    async fn start(t: &TestState) -> Self {
        let (uid, owner) = t.user("solo", false, &["read", "write"]).await;
        let (_, wt) = hub_api::admin::create_token(&t.state.db, uid, "w", &["worker".into()], None)
            .await
            .unwrap();
        let server = Server::start(t.state.clone());
        let hub = server.url.clone();
        let http = reqwest::Client::new();
        http.post(format!("{hub}/api/repos/create"))
            .bearer_auth(&owner)
            .json(&json!({"name": "m"}))
            .send()
            .await
            .unwrap();
        let body = hub_testkit::ndjson(
            "m",
            None,
            &[hub_testkit::file_op(
                "config.json",
                br#"{"architectures":["BertModel"]}"#,
            )],
        );
        http.post(format!("{hub}/api/models/solo/m/commit/main"))
            .bearer_auth(&owner)
            .body(body)
            .send()
            .await
            .unwrap();
        Solo {
            server,
            hub,
            http,
            owner,
            worker_token: wt,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_lifecycle_gateway_usage_and_isolation() {
    let t = TestState::new().await;
    let (owner_id, owner) = t.user("acme-admin", false, &["read", "write"]).await;
    t.org("acme", owner_id).await;
    let (_, other) = t
        .user("globex", false, &["read", "write", "inference"])
        .await;
    let (worker_user, _) = t.user("ops", true, &["worker"]).await;
    let (_, worker_token) =
        hub_api::admin::create_token(&t.state.db, worker_user, "w", &["worker".into()], None)
            .await
            .unwrap();
    let (_, inference_only) =
        hub_api::admin::create_token(&t.state.db, owner_id, "inf", &["inference".into()], None)
            .await
            .unwrap();
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();

    // A model repo with a config and a tiny weights file.
    let r = http
        .post(format!("{hub}/api/repos/create"))
        .bearer_auth(&owner)
        .json(&json!({"name": "embedder", "organization": "acme", "private": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let body = hub_testkit::ndjson(
        "model",
        None,
        &[
            hub_testkit::file_op(
                "config.json",
                br#"{"architectures":["BertModel"],"model_type":"bert"}"#,
            ),
            hub_testkit::file_op(
                "README.md",
                b"---\npipeline_tag: sentence-similarity\n---\n",
            ),
        ],
    );
    assert!(http
        .post(format!("{hub}/api/models/acme/embedder/commit/main"))
        .bearer_auth(&owner)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // Bad input is refused with clear errors.
    for (bad, code) in [
        (
            json!({"name": "e", "repository": "acme/embedder", "task": "translation"}),
            "validation_failed",
        ),
        (
            json!({"name": "e", "repository": "acme/embedder", "min_replicas": 3, "max_replicas": 2}),
            "validation_failed",
        ),
        (
            json!({"name": "e", "repository": "acme/embedder", "access": "open"}),
            "invalid_request",
        ),
        (
            json!({"name": "e", "repository": "acme/embedder", "min_replicas": 1.5}),
            "invalid_request",
        ),
        (
            json!({"name": "e", "repository": "acme/nope"}),
            "repo_not_found",
        ),
        (
            json!({"name": "e", "repository": "acme/embedder", "revision": "nope"}),
            "revision_not_found",
        ),
        (
            json!({"name": "bad name", "repository": "acme/embedder"}),
            "validation_failed",
        ),
        (
            json!({"name": "e", "repository": "acme/embedder", "bogus": 1}),
            "invalid_request",
        ),
        (
            json!({"name": "e", "repository": "acme/embedder", "precision": "fp8"}),
            "invalid_request",
        ),
    ] {
        let r = http
            .post(format!("{hub}/api/v1/endpoints/acme"))
            .bearer_auth(&owner)
            .json(&bad)
            .send()
            .await
            .unwrap();
        let st = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(st.is_client_error(), "{bad}: {st}");
        assert_eq!(v["code"], code, "{bad}: {v}");
    }
    // Another tenant cannot create endpoints in acme or read its repo.
    let r = http
        .post(format!("{hub}/api/v1/endpoints/acme"))
        .bearer_auth(&other)
        .json(&json!({"name": "x", "repository": "acme/embedder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{hub}/api/v1/endpoints/globex"))
        .bearer_auth(&other)
        .json(&json!({"name": "x", "repository": "acme/embedder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "private repo of another tenant");

    let r = http.post(format!("{hub}/api/v1/endpoints/acme")).bearer_auth(&owner)
        .json(&json!({"name": "emb", "repository": "acme/embedder", "min_replicas": 1, "max_replicas": 2, "access": "protected"}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let ep: Value = r.json().await.unwrap();
    assert_eq!(ep["task"], "sentence-similarity");
    assert_eq!(ep["precision"], "f32");
    assert_eq!(ep["commit"].as_str().unwrap().len(), 40);
    assert_eq!(ep["url"], format!("{hub}/endpoints/acme/emb"));
    let ep_url = format!("{hub}/api/v1/endpoints/acme/emb");

    // No worker yet: pending with a reason.
    let v = scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "pending"
    })
    .await;
    assert_eq!(v["message"], "no worker is registered");

    // A worker registers, gets the assignment with a pull token that reads exactly that repo.
    let secret = Arc::new(std::sync::Mutex::new(String::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let (wurl, _wh) = fake_worker(secret.clone(), hits.clone()).await;
    let (w, s) = Worker::register(&hub, &worker_token, &wurl, 8 << 30).await;
    *secret.lock().unwrap() = s;
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let a = w.poll(0).await;
    let asg = a["assignments"][0].clone();
    assert_eq!(asg["repo_id"], "acme/embedder");
    assert_eq!(asg["revision"], ep["commit"]);
    assert_eq!(asg["precision"], "f32");
    let pull = asg["pull_token"].as_str().unwrap();
    let r = http
        .get(format!(
            "{hub}/acme/embedder/resolve/{}/config.json",
            ep["commit"].as_str().unwrap()
        ))
        .bearer_auth(pull)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "pull token reads the repo: {:?}",
        r.text().await
    );
    let r = http
        .post(format!("{hub}/api/models/acme/embedder/commit/main"))
        .bearer_auth(pull)
        .body(hub_testkit::ndjson(
            "x",
            None,
            &[hub_testkit::file_op("x", b"x")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "pull token cannot write");
    // The long-poll returns at once when the version is stale, waits when current.
    let version = a["version"].as_i64().unwrap();
    let started = std::time::Instant::now();
    let again = w.poll(version).await;
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(again["version"], version);

    // Report loading then running.
    let id = asg["assignment_id"].clone();
    assert_eq!(
        w.heartbeat(json!([{"assignment_id": id, "status": "loading"}]))
            .await,
        200
    );
    scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "loading"
    })
    .await;
    assert_eq!(
        w.heartbeat(json!([{"assignment_id": id, "status": "running"}]))
            .await,
        200
    );
    let v = scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "running"
    })
    .await;
    let statuses: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"loading") && statuses.contains(&"pending"),
        "{statuses:?}"
    );

    // The gateway: owner's inference-only token works; anonymous 401; other tenant 404.
    let call = |tok: Option<String>| {
        let http = http.clone();
        let hub = hub.clone();
        async move {
            let mut r = http
                .post(format!("{hub}/endpoints/acme/emb/v1/embeddings"))
                .json(&json!({"input": ["a", "b"], "model": "emb"}));
            if let Some(t) = tok {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap()
        }
    };
    let r = call(Some(inference_only.clone())).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(call(None).await.status(), 401);
    assert_eq!(call(Some(other.clone())).await.status(), 404);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The gateway is a static prefix that splits the path itself: a path
    // without a name is the unknown-route 404, and reaches no worker.
    for path in [
        "/endpoints",
        "/endpoints/acme",
        "/endpoints//emb/v1/embeddings",
    ] {
        let r = http
            .post(format!("{hub}{path}"))
            .bearer_auth(&inference_only)
            .json(&json!({"input": ["a"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "not_found", "{path}: {v}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Other tenants cannot read or change it, nor read usage.
    assert_eq!(
        http.get(&ep_url)
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.delete(&ep_url)
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{hub}/api/v1/usage?namespace=acme"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Usage is metered per endpoint and day.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let u: Value = http
        .get(format!("{hub}/api/v1/usage?namespace=acme"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = &u["items"][0];
    assert_eq!(item["endpoint"], "emb");
    assert_eq!(item["requests"], 1);
    assert_eq!(item["input_tokens"], 10);
    assert!(item["latency_p50_ms"].as_f64().unwrap() > 0.0);
    let r = http
        .get(format!("{hub}/api/v1/usage?namespace=acme&from=nonsense"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Pause: the replica goes away, calls are refused; resume brings it back.
    assert!(http
        .post(format!("{ep_url}/pause"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "paused" && v["replicas"]["total"] == 0
    })
    .await;
    assert_eq!(call(Some(owner.clone())).await.status(), 503);
    assert!(http
        .post(format!("{ep_url}/resume"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let a = w.poll(0).await;
    let id = a["assignments"][0]["assignment_id"].clone();
    w.heartbeat(json!([{"assignment_id": id, "status": "running"}]))
        .await;
    scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "running"
    })
    .await;

    // A new precision replaces the replicas; the worker is asked for bf16.
    let r = http
        .patch(&ep_url)
        .bearer_auth(&owner)
        .json(&json!({"precision": "bf16"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["precision"], "bf16");
    assert_eq!(v["events"][0]["message"], "precision changed to bf16");
    let r = http
        .patch(&ep_url)
        .bearer_auth(&owner)
        .json(&json!({"precision": "int4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown precision");
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let a = w.poll(0).await;
    let asg = &a["assignments"][0];
    assert_ne!(asg["assignment_id"], id, "a new replica");
    assert_eq!(asg["precision"], "bf16");
    let id = asg["assignment_id"].clone();
    w.heartbeat(json!([{"assignment_id": id, "status": "running"}]))
        .await;
    scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "running"
    })
    .await;

    // A failed replica puts the endpoint in failed with the worker's reason.
    w.heartbeat(json!([{"assignment_id": id, "status": "failed", "message": "unsupported architecture GPT2LMHeadModel"}])).await;
    let v = scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "failed"
    })
    .await;
    assert_eq!(v["message"], "unsupported architecture GPT2LMHeadModel");

    // The worker stops heartbeating: it is dropped and its replicas go with it.
    sqlx::query("UPDATE workers SET last_heartbeat = now() - interval '1 minute'")
        .execute(&t.state.db)
        .await
        .unwrap();
    hub_api::scheduler::tick(&t.state).await.unwrap();
    assert_eq!(
        w.heartbeat(json!([])).await,
        404,
        "a lost worker must re-register"
    );

    // Deleting the endpoint.
    assert!(http
        .delete(&ep_url)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    assert_eq!(
        http.get(&ep_url)
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_to_zero_and_wake_on_request() {
    let t = TestState::new().await;
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    let r = http.post(format!("{hub}/api/v1/endpoints/solo")).bearer_auth(&owner)
        .json(&json!({"name": "cold", "repository": "solo/m", "min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 10, "access": "public"}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let ep_url = format!("{hub}/api/v1/endpoints/solo/cold");
    let secret = Arc::new(std::sync::Mutex::new(String::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let (wurl, _wh) = fake_worker(secret.clone(), hits.clone()).await;
    let (w, s) = Worker::register(&hub, &wt, &wurl, 8 << 30).await;
    *secret.lock().unwrap() = s;

    // Idle past the timeout: scaled to zero, no replica.
    sqlx::query("UPDATE endpoints SET created_at = now() - interval '1 hour'")
        .execute(&t.state.db)
        .await
        .unwrap();
    let v = scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "scaled_to_zero"
    })
    .await;
    assert_eq!(v["replicas"]["total"], 0);

    // A public call wakes it and is held until a replica is ready.
    let state = t.state.clone();
    let driver = tokio::spawn(async move {
        let mut version = 0;
        for _ in 0..100 {
            hub_api::scheduler::tick(&state).await.unwrap();
            let a = w.poll(version).await;
            version = a["version"].as_i64().unwrap();
            if let Some(asg) = a["assignments"].as_array().and_then(|l| l.first()) {
                w.heartbeat(json!([{"assignment_id": asg["assignment_id"], "status": "running"}]))
                    .await;
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    let r = http
        .post(format!("{hub}/endpoints/solo/cold/v1/embeddings"))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert!(started.elapsed() < Duration::from_secs(30));
    driver.await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// The control-plane contract at the hub's edge: replica names in a heartbeat
/// are parsed as before (a malformed id is a malformed body, an unknown status
/// a validation error), and a stored task no worker serves fails its replica at
/// the hub instead of reaching the worker.
#[actix_web::test]
async fn the_hub_parses_the_control_plane_names() {
    let t = TestState::new().await;
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    let r = http
        .post(format!("{hub}/api/v1/endpoints/solo"))
        .bearer_auth(&owner)
        .json(&json!({"name": "e", "repository": "solo/m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A worker URL the gateway could not append a replica's path to (a query
    // or fragment would swallow it) or that carries credentials is refused.
    for bad in [
        "http://169.254.169.254/latest/meta-data/?",
        "http://127.0.0.1:1/?x=1",
        "http://127.0.0.1:1/#f",
        "http://user:pw@127.0.0.1:1",
        "http://user@127.0.0.1:1",
        "ftp://127.0.0.1:1",
    ] {
        let r = http
            .post(format!("{hub}/api/v1/workers/register"))
            .bearer_auth(&wt)
            .json(&json!({"name": "w", "url": bad, "capacity": {"memory_bytes": 1, "cores": 1}, "version": "t"}))
            .send()
            .await
            .unwrap();
        let st = r.status();
        let b: Value = r.json().await.unwrap();
        assert_eq!(
            (st.as_u16(), b["code"].as_str()),
            (400, Some("validation_failed")),
            "{bad}: {b}"
        );
    }
    let (w, _) = Worker::register(&hub, &wt, "http://127.0.0.1:1", 8 << 30).await;
    hub_api::scheduler::tick(&t.state).await.unwrap();
    // Another holder of a worker credential who knows this worker's id, but
    // not its registration's secret, neither polls its assignments (their
    // pull tokens) nor reports on its replicas.
    for secret in [None, Some("0".repeat(64)), Some(w.secret.to_uppercase())] {
        let with = |r: reqwest::RequestBuilder| match &secret {
            Some(s) => r.header(WORKER_SECRET_HEADER, s),
            None => r,
        };
        let poll = with(http.get(format!(
            "{hub}/api/v1/workers/{}/assignments?version=0&wait_s=0",
            w.id
        )))
        .bearer_auth(&wt)
        .send()
        .await
        .unwrap();
        let st = poll.status();
        let body = poll.text().await.unwrap();
        assert_eq!(st, 403, "{secret:?}: {body}");
        assert!(!body.contains("pull_token"), "{body}");
        let beat = with(http.post(format!("{hub}/api/v1/workers/{}/heartbeat", w.id)))
            .bearer_auth(&wt)
            .json(&json!({"free_memory_bytes": 1, "models": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(beat.status(), 403, "{secret:?}");
    }
    let a = w.poll(0).await;
    let id = a["assignments"][0]["assignment_id"].clone();
    assert_eq!(a["assignments"][0]["task"], "feature-extraction");

    let heartbeat = |models: Value| {
        let req = http
            .post(format!("{hub}/api/v1/workers/{}/heartbeat", w.id))
            .bearer_auth(&wt)
            .header(WORKER_SECRET_HEADER, &w.secret)
            .json(&json!({"free_memory_bytes": 1, "models": models}));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, b) = heartbeat(json!([{"assignment_id": id, "status": "done"}])).await;
    assert_eq!(
        (st, b["code"].as_str()),
        (400, Some("validation_failed")),
        "{b}"
    );
    let (st, b) = heartbeat(json!([{"assignment_id": "a1", "status": "running"}])).await;
    assert_eq!(
        (st, b["code"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );

    sqlx::query("UPDATE endpoints SET task = 'translation'")
        .execute(&t.state.db)
        .await
        .unwrap();
    let a = w.poll(0).await;
    assert_eq!(a["assignments"], json!([]), "{a}");
    let (status, message): (String, Option<String>) =
        sqlx::query_as("SELECT status, message FROM replicas")
            .fetch_one(&t.state.db)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(message
        .unwrap_or_default()
        .contains("\"translation\" is not supported"));
    server.stop().await;
}

/// A worker that takes a request and then goes silent: the gateway answers
/// 504 `upstream_timeout` once its read timeout passes (not a 503, which says
/// nothing could be reached), meters the call as a 504, and does not send
/// the request again (it may still be running on that worker).
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_worker_is_a_gateway_timeout() {
    let mut t = TestState::new().await;
    t.state.live = Arc::new(hub_api::gateway::Live::with_read_timeout(
        Duration::from_millis(600),
    ));
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    // The silent worker: reads each request, answers nothing, counts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wurl = format!("http://{}", listener.local_addr().unwrap());
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            held.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        seen.clear();
                    }
                }
            }));
        }
    });
    running_on(&t, &hub, &http, &owner, &wt, "slow", &wurl).await;

    let started = std::time::Instant::now();
    let r = http
        .post(format!("{hub}/endpoints/solo/slow/v1/embeddings"))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "upstream_timeout", "{v}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(taken.load(Ordering::SeqCst), 1, "sent once, not again");
    // Metered as what the client got.
    t.state.live.flush_usage(&t.state.db).await;
    let statuses: Vec<(i32, i32)> = sqlx::query_as("SELECT status, requests FROM usage_counts")
        .fetch_all(&t.state.db)
        .await
        .unwrap();
    assert_eq!(statuses, vec![(504, 1)]);
    server.stop().await;
}

/// A public endpoint `solo/{name}` with one replica, running on a worker at
/// `wurl` (registered here; the caller serves that address).
async fn running_on(
    t: &TestState,
    hub: &str,
    http: &reqwest::Client,
    owner: &str,
    wt: &str,
    name: &str,
    wurl: &str,
) {
    let r = http
        .post(format!("{hub}/api/v1/endpoints/solo"))
        .bearer_auth(owner)
        .json(&json!({"name": name, "repository": "solo/m", "min_replicas": 1, "max_replicas": 1, "access": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (w, _) = Worker::register(hub, wt, wurl, 8 << 30).await;
    let ep_url = format!("{hub}/api/v1/endpoints/solo/{name}");
    let mut version = 0;
    for _ in 0..100 {
        hub_api::scheduler::tick(&t.state).await.unwrap();
        let a = w.poll(version).await;
        version = a["version"].as_i64().unwrap();
        if let Some(asg) = a["assignments"].as_array().and_then(|l| l.first()) {
            w.heartbeat(json!([{"assignment_id": asg["assignment_id"], "status": "running"}]))
                .await;
            break;
        }
    }
    scheduler_until(&t.state, http, &ep_url, owner, |v| v["status"] == "running").await;
}

/// A worker that sends its response head and a first event, then goes silent:
/// the client gets the head and the event at once, and the stream ends (not
/// completed) after the read timeout between two chunks, metered as 502.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_silent_mid_stream_is_cut_after_the_read_timeout() {
    let mut t = TestState::new().await;
    t.state.live = Arc::new(hub_api::gateway::Live::with_read_timeout(
        Duration::from_millis(600),
    ));
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wurl = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            held.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let event = "data: {\"n\":1}\n\n";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     transfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                );
                sock.write_all(head.as_bytes()).await.unwrap();
                // Silent from here on, the connection held open.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }));
        }
    });
    running_on(&t, &hub, &http, &owner, &wt, "stall", &wurl).await;

    let started = std::time::Instant::now();
    let mut r = http
        .post(format!("{hub}/endpoints/solo/stall/v1/completions"))
        .json(&json!({"prompt": "hello", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().expect("the first event");
    assert_eq!(&first[..], b"data: {\"n\":1}\n\n");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Then the stream breaks off (an incomplete chunked body), after the read timeout.
    let rest = r.chunk().await;
    let waited = started.elapsed();
    assert!(
        rest.is_err(),
        "the cut stream must not look complete: {rest:?}"
    );
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    t.state.live.flush_usage(&t.state.db).await;
    let statuses: Vec<(i32, i32, i64)> =
        sqlx::query_as("SELECT status, requests, output_tokens FROM usage_counts")
            .fetch_all(&t.state.db)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![(502, 1, 1)],
        "metered as broken, one event forwarded"
    );
    server.stop().await;
}

/// Replicas placed in one pass go to different workers: with worker `busy`
/// holding two endpoints and `idle` none, an endpoint that wants two replicas
/// gets one on each (before the fix, both went to `idle`, the least loaded
/// at each step, found by the fleet test).
#[actix_web::test]
async fn replicas_placed_in_one_pass_go_to_different_workers() {
    let t = TestState::new().await;
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    let create = |name: &str, replicas: i32| {
        http.post(format!("{hub}/api/v1/endpoints/solo"))
            .bearer_auth(&owner)
            .json(&json!({"name": name, "repository": "solo/m", "min_replicas": replicas, "max_replicas": replicas}))
            .send()
    };
    let (busy, _) = Worker::register(&hub, &wt, "http://127.0.0.1:9", 8 << 30).await;
    for name in ["one", "two"] {
        assert_eq!(create(name, 1).await.unwrap().status(), 201);
    }
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let (idle, _) = Worker::register(&hub, &wt, "http://127.0.0.1:9", 8 << 30).await;
    assert_eq!(create("pair", 2).await.unwrap().status(), 201);
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let hosts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e.name, count(DISTINCT r.worker_id) FROM replicas r JOIN endpoints e ON e.id = r.endpoint_id
         WHERE r.worker_id = $1::uuid GROUP BY e.name ORDER BY e.name",
    )
    .bind(&busy.id)
    .fetch_all(&t.state.db)
    .await
    .unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["one", "pair", "two"]
    );
    let pair: Vec<(String,)> = sqlx::query_as(
        "SELECT r.worker_id::text FROM replicas r JOIN endpoints e ON e.id = r.endpoint_id
         WHERE e.name = 'pair' ORDER BY 1",
    )
    .fetch_all(&t.state.db)
    .await
    .unwrap();
    let mut want = vec![busy.id.clone(), idle.id.clone()];
    want.sort();
    assert_eq!(pair.into_iter().map(|p| p.0).collect::<Vec<_>>(), want);
    server.stop().await;
}

/// The scheduler places a model where the worker's model cache can take its
/// weight files (the heartbeat's `cache_room_bytes`), though another worker
/// comes first in the order of choice; a worker's room is used up by what
/// it is given; when no worker has the room, the first with the memory still
/// gets the replica (it may hold the files already).
#[actix_web::test]
async fn a_model_goes_to_a_worker_whose_cache_has_room() {
    let t = TestState::new().await;
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    // 40 KiB of weights.
    let st = crate::generation::safetensors_with(
        r#"{"w":{"dtype":"F32","shape":[10240],"data_offsets":[0,40960]}}"#,
        40_960,
    );
    let body = hub_testkit::ndjson(
        "weights",
        None,
        &[hub_testkit::file_op("model.safetensors", &st)],
    );
    let st_status = http
        .post(format!("{hub}/api/models/solo/m/commit/main"))
        .bearer_auth(&owner)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st_status, 200);
    let (full, _) = Worker::register(&hub, &wt, "http://127.0.0.1:9", 8 << 30).await;
    let (roomy, _) = Worker::register(&hub, &wt, "http://127.0.0.1:9", 8 << 30).await;
    let room = |w: &Worker, bytes: u64| {
        w.http
            .post(format!("{}/api/v1/workers/{}/heartbeat", w.hub, w.id))
            .bearer_auth(&w.token)
            .header(WORKER_SECRET_HEADER, &w.secret)
            .json(
                &json!({"free_memory_bytes": 8u64 << 30, "cache_room_bytes": bytes, "models": []}),
            )
            .send()
    };
    assert_eq!(room(&full, 10_000).await.unwrap().status(), 200);
    assert_eq!(room(&roomy, 100_000).await.unwrap().status(), 200);
    let room_col: Option<i64> =
        sqlx::query_scalar("SELECT cache_room_bytes FROM workers WHERE id = $1::uuid")
            .bind(&roomy.id)
            .fetch_one(&t.state.db)
            .await
            .unwrap();
    assert_eq!(room_col, Some(100_000));
    let place = |name: &'static str| {
        let http = http.clone();
        let (hub, owner) = (hub.clone(), owner.clone());
        let state = t.state.clone();
        async move {
            let r = http
                .post(format!("{hub}/api/v1/endpoints/solo"))
                .bearer_auth(&owner)
                .json(&json!({"name": name, "repository": "solo/m"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            hub_api::scheduler::tick(&state).await.unwrap();
            let (w,): (String,) = sqlx::query_as(
                "SELECT r.worker_id::text FROM replicas r JOIN endpoints e ON e.id = r.endpoint_id WHERE e.name = $1",
            )
            .bind(name)
            .fetch_one(&state.db)
            .await
            .unwrap();
            w
        }
    };
    // `full` registered first and both have no replica: without the room it
    // would be chosen.
    assert_eq!(place("one").await, roomy.id);
    // 100,000 - 41,000 left on roomy: the next fits there too, though it now
    // has a replica and full has none.
    assert_eq!(place("two").await, roomy.id);
    // Roomy has ~18,000 left: no worker has the room; the first with the
    // memory in the order of choice (full: no replica) gets it.
    assert_eq!(place("three").await, full.id);
    server.stop().await;
}

/// Changing an endpoint's revision is a read of the model as the caller, as
/// creating it is: a member who may manage the namespace's endpoints but
/// cannot read the (private) model neither learns its branches nor deploys
/// one of them. Scaling stays theirs to change.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_revision_needs_read_access_to_the_model() {
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let (bob_id, bob) = t.user("bob", false, &["read", "write"]).await;
    let org = t.org("o", alice_id).await;
    hub_api::db::namespaces::set_member(
        &t.state.db,
        org,
        bob_id,
        hub_api::db::namespaces::Role::Write,
    )
    .await
    .unwrap();
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{hub}/api/repos/create"))
        .bearer_auth(&alice)
        .json(&json!({"name": "secret", "private": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let body = hub_testkit::ndjson(
        "m",
        None,
        &[hub_testkit::file_op(
            "config.json",
            br#"{"architectures":["BertModel"]}"#,
        )],
    );
    let r = http
        .post(format!("{hub}/api/models/alice/secret/commit/main"))
        .bearer_auth(&alice)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .post(format!("{hub}/api/models/alice/secret/branch/dev"))
        .bearer_auth(&alice)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = http
        .post(format!("{hub}/api/v1/endpoints/o"))
        .bearer_auth(&alice)
        .json(&json!({"name": "ep", "repository": "alice/secret", "min_replicas": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let patch = |tok: &str, body: Value| {
        http.patch(format!("{hub}/api/v1/endpoints/o/ep"))
            .bearer_auth(tok)
            .json(&body)
            .send()
    };
    // bob manages the org's endpoints...
    let r = patch(&bob, json!({"max_replicas": 2})).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // ...but cannot read alice/secret: every revision, existing or not, is the
    // same 404 (no oracle), and nothing changes.
    for rev in ["dev", "main", "nope"] {
        let r = patch(&bob, json!({"revision": rev})).await.unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(st, 404, "{rev}: {text}");
        assert!(!text.contains("alice/secret@"), "{text}");
    }
    let e: Value = http
        .get(format!("{hub}/api/v1/endpoints/o/ep"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e["revision"], "main", "{e}");
    // alice can.
    let r = patch(&alice, json!({"revision": "dev"})).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    server.stop().await;
}

/// A stand-in worker that answers every call `200 {"worker": name}`, or, while
/// `restarting` is set, `503` marked not started (`NOT_STARTED_HEADER`), as a
/// worker whose model's process is being started again does.
async fn restartable_worker(
    name: &'static str,
    restarting: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicUsize>,
) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpResponse};
    stand_in(move |app| {
        let (restarting, hits) = (restarting.clone(), hits.clone());
        app.route(
            "/models/{key}/{tail:.*}",
            web::post().to(move || {
                let (restarting, hits) = (restarting.clone(), hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if restarting.load(Ordering::SeqCst) {
                        return HttpResponse::ServiceUnavailable()
                            .insert_header((hub_types::control::NOT_STARTED_HEADER, "1"))
                            .insert_header(("Retry-After", "1"))
                            .json(json!({"error": format!("{name}: the model's process stopped (killed by signal 9) and is being started again"), "error_type": "model_restarting"}));
                    }
                    HttpResponse::Ok().json(json!({"worker": name}))
                }
            }),
        );
    })
}

/// A call a replica refused before starting it (its model's process is being
/// started again) goes to another replica of the endpoint, and is metered once;
/// with no other replica to try, the worker's own answer reaches the client.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_one_replica_did_not_start_goes_to_another() {
    use std::sync::atomic::AtomicBool;
    let t = TestState::new().await;
    let Solo {
        server,
        hub,
        http,
        owner,
        worker_token: wt,
    } = Solo::start(&t).await;
    let (a_down, b_down) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let (a_hits, b_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a_url, a_srv) = restartable_worker("a", a_down.clone(), a_hits.clone()).await;
    let (b_url, b_srv) = restartable_worker("b", b_down.clone(), b_hits.clone()).await;
    let r = http
        .post(format!("{hub}/api/v1/endpoints/solo"))
        .bearer_auth(&owner)
        .json(&json!({"name": "pair", "repository": "solo/m", "min_replicas": 2, "max_replicas": 2, "access": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (a, _) = Worker::register(&hub, &wt, &a_url, 8 << 30).await;
    let (b, _) = Worker::register(&hub, &wt, &b_url, 8 << 30).await;
    // Both replicas running; `b` reports load, so the gateway tries `a` first.
    let ep_url = format!("{hub}/api/v1/endpoints/solo/pair");
    let mut running = 0;
    for _ in 0..100 {
        hub_api::scheduler::tick(&t.state).await.unwrap();
        running = 0;
        for (w, in_flight) in [(&a, 0), (&b, 50)] {
            let asg = w.poll(0).await;
            if let Some(x) = asg["assignments"].as_array().and_then(|l| l.first()) {
                w.heartbeat(json!([{"assignment_id": x["assignment_id"], "status": "running", "in_flight": in_flight, "queue_depth": 0}]))
                    .await;
                running += 1;
            }
        }
        if running == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running, 2, "both replicas placed");
    scheduler_until(&t.state, &http, &ep_url, &owner, |v| {
        v["status"] == "running"
    })
    .await;
    t.state.live.forget_routes();

    let call = || {
        http.post(format!("{hub}/endpoints/solo/pair/v1/completions"))
            .json(&json!({"prompt": "hi"}))
            .send()
    };
    for _ in 0..5 {
        let r = call().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["worker"], "b", "answered by the replica that started it");
    }
    assert_eq!(
        a_hits.load(Ordering::SeqCst),
        5,
        "each call went to `a` first"
    );
    assert_eq!(b_hits.load(Ordering::SeqCst), 5);

    // Both restarting: the last worker's own 503 is relayed, with its Retry-After.
    b_down.store(true, Ordering::SeqCst);
    let r = call().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_type"], "model_restarting", "{v}");
    assert_eq!(a_hits.load(Ordering::SeqCst), 6);
    assert_eq!(b_hits.load(Ordering::SeqCst), 6, "each replica tried once");

    // One usage row per call, by its final answer.
    t.state.live.flush_usage(&t.state.db).await;
    let statuses: Vec<(i32, i32)> =
        sqlx::query_as("SELECT status, requests FROM usage_counts ORDER BY status")
            .fetch_all(&t.state.db)
            .await
            .unwrap();
    assert_eq!(statuses, vec![(200, 5), (503, 1)]);
    a_srv.stop(true).await;
    b_srv.stop(true).await;
    server.stop().await;
}
