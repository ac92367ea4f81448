//! Webhooks end to end: the hub's in-process app, a real PostgreSQL, the
//! delivery task, and a real HTTP receiver on loopback (so these run with
//! the allow-private setting on, except where the SSRF refusal is the test).

use crate::common::*;
use actix_web::test::TestRequest;
use hub_api::webhooks::Settings;
use hub_testkit::{app, TestState};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Short timeouts and backoff, so retries happen within the test.
fn fast(allow_private: bool) -> Settings {
    Settings {
        allow_private,
        timeout: Duration::from_secs(2),
        max_attempts: 5,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        lease: Duration::from_secs(3),
        poll: Duration::from_millis(50),
        batch: 16,
    }
}

async fn hub(allow_private: bool) -> TestState {
    let mut t = TestState::new().await;
    t.state.tenancy.webhooks = Arc::new(fast(allow_private));
    t
}

/// What the receiver answers, in order (200 when the script is empty).
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// Holds the request without answering.
    Hang,
}

#[derive(Debug, Clone)]
struct Hit {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn json(&self) -> Value {
        json_of(&self.body)
    }
}

/// A plain HTTP/1.1 server on 127.0.0.1 that records every request.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// Requests held without an answer right now.
    holding: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[Reply]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let holding = Arc::new(AtomicUsize::new(0));
        let (h, s, a) = (hits.clone(), script.clone(), holding.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, s, a) = (h.clone(), s.clone(), a.clone());
                tokio::spawn(async move {
                    let Some(hit) = read_request(&mut sock).await else {
                        return;
                    };
                    h.lock().unwrap().push(hit);
                    let reply = s.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
                    match reply {
                        Reply::Hang => {
                            a.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        Reply::Status(code) => {
                            let body = if code == 200 { "ok" } else { "nope" };
                            let resp = format!(
                                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            hits,
            script,
            holding,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (10 s at most).
    async fn wait_for(&self, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, expected {n}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Hit> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Hit {
        headers,
        body: buf[head_end..head_end + len].to_vec(),
    })
}

/// Creates a webhook with the HF route; returns its id.
async fn create_hook(
    app: &impl App,
    tok: &str,
    url: &str,
    watched: Value,
    secret: Option<&str>,
) -> String {
    let mut body = json!({"url": url, "watched": watched, "domains": ["repo"]});
    if let Some(s) = secret {
        body["secret"] = json!(s);
    }
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(tok))
            .set_json(body),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let v = json_of(&b);
    assert!(
        v["webhook"].get("secret").is_none(),
        "the secret is write-only"
    );
    v["webhook"]["id"].as_str().unwrap().to_string()
}

async fn deliveries(app: &impl App, tok: &str, hook: &str) -> Value {
    let (st, _, b) = call(
        app,
        TestRequest::get()
            .uri(&format!("/api/v1/webhooks/{hook}/deliveries"))
            .insert_header(bearer(tok)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json_of(&b)
}

/// Waits until every delivery of the webhook is finished (10 s at most).
async fn settled(app: &impl App, tok: &str, hook: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = deliveries(app, tok, hook).await;
        let items = d["items"].as_array().unwrap();
        if !items.is_empty() && items.iter().all(|i| i["state"] != "pending") {
            return d;
        }
        assert!(Instant::now() < deadline, "deliveries still pending: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[actix_web::test]
async fn commit_delivers_one_signed_event_and_redelivers() {
    let mut t = hub(true).await;
    // No polling within the test: deliveries leave on the commit's NOTIFY.
    let mut s = fast(true);
    s.poll = Duration::from_secs(600);
    t.state.tenancy.webhooks = Arc::new(s);
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let rx = Receiver::start(&[]).await;
    let hook = create_hook(
        &app,
        &alice,
        &rx.url(),
        json!([{"type": "model", "name": "alice/m"}]),
        Some("s3cret"),
    )
    .await;
    let worker = hub_api::webhooks::delivery::spawn(t.state.clone());
    let oid = commit_files(&app, &alice, "alice/m", &[("a.txt", b"hello")]).await;

    let hits = rx.wait_for(1).await;
    let hit = &hits[0];
    let p = hit.json();
    assert_eq!(p["event"]["action"], "update");
    assert_eq!(p["event"]["scope"], "repo.content");
    assert_eq!(p["repo"]["type"], "model");
    assert_eq!(p["repo"]["name"], "alice/m");
    assert_eq!(p["repo"]["private"], false);
    assert_eq!(p["repo"]["headSha"], oid.as_str());
    assert_eq!(p["repo"]["url"]["web"], "http://hub.test/alice/m");
    assert_eq!(
        p["repo"]["url"]["api"],
        "http://hub.test/api/models/alice/m"
    );
    assert_eq!(p["updatedRefs"][0]["ref"], "refs/heads/main");
    assert_eq!(p["updatedRefs"][0]["newSha"], oid.as_str());
    assert!(p["updatedRefs"][0]["oldSha"].is_string());
    assert_eq!(p["webhook"]["id"], hook.as_str());
    assert_eq!(p["webhook"]["version"], 3);
    let event_id = p["event"]["id"].as_str().unwrap().to_string();
    assert_eq!(hit.headers["x-webhook-secret"], "s3cret");
    assert_eq!(hit.headers["x-webhook-event-id"], event_id);
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(
        hit.headers["x-webhook-signature"],
        hmac_hex("s3cret", &hit.body),
        "the signature is HMAC-SHA256 of the raw body"
    );

    // Exactly one delivery, logged with its attempt.
    let log = settled(&app, &alice, &hook).await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(items[0]["state"], "delivered");
    assert_eq!(items[0]["event_id"], event_id.as_str());
    assert_eq!(items[0]["attempt_log"][0]["status_code"], 200);
    assert_eq!(items[0]["attempt_log"][0]["response"], "ok");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.hits().len(), 1, "sent once");

    // The dashboard lists the webhook and its deliveries, with a Redeliver button.
    let delivery = items[0]["id"].as_str().unwrap();
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/settings/webhooks")
            .insert_header(bearer(&alice)),
    )
    .await;
    let html = String::from_utf8_lossy(&b).to_string();
    assert_eq!(st, 200, "{html}");
    assert!(
        html.contains(&format!("href=\"/settings/webhooks/{hook}\"")),
        "{html}"
    );
    assert!(!html.contains("s3cret"));
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/settings/webhooks/{hook}"))
            .insert_header(bearer(&alice)),
    )
    .await;
    let html = String::from_utf8_lossy(&b).to_string();
    assert_eq!(st, 200, "{html}");
    assert!(html.contains(&event_id), "{html}");
    assert!(
        html.contains(&format!("data-redeliver=\"{delivery}\"")),
        "{html}"
    );
    assert!(html.contains("status 200"), "{html}");

    // Redelivery: a new delivery of the same event, byte for byte.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri(&format!(
                "/api/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"
            ))
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&b));
    let again = json_of(&b);
    assert_eq!(again["redelivery_of"], delivery);
    assert_eq!(again["event_id"], event_id.as_str());
    let hits = rx.wait_for(2).await;
    assert_eq!(hits[1].body, hits[0].body);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!(
                "/api/v1/webhooks/{hook}/deliveries/{}",
                again["id"].as_str().unwrap()
            ))
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b)["payload"]["event"]["id"], event_id.as_str());
    worker.abort();
}

#[actix_web::test]
async fn failed_attempt_is_retried_with_the_same_event() {
    let t = hub(true).await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let rx = Receiver::start(&[Reply::Status(500), Reply::Status(200)]).await;
    let hook = create_hook(
        &app,
        &alice,
        &rx.url(),
        json!([{"type": "user", "name": "alice"}]),
        None,
    )
    .await;
    let worker = hub_api::webhooks::delivery::spawn(t.state.clone());
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"x")]).await;
    let hits = rx.wait_for(2).await;
    assert_eq!(hits[0].body, hits[1].body, "a retry sends the same bytes");
    assert_eq!(hits[0].json()["event"]["id"], hits[1].json()["event"]["id"]);
    assert!(!hits[0].headers.contains_key("x-webhook-secret"));
    let log = settled(&app, &alice, &hook).await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(items[0]["state"], "delivered");
    assert_eq!(items[0]["attempts"], 2);
    let attempts = items[0]["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{log}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["response"], "nope");
    assert_eq!(attempts[1]["status_code"], 200);
    let metrics = t.state.metrics.render(&t.state);
    for line in [
        "paddock_webhook_attempts_total{outcome=\"retry\"} 1",
        "paddock_webhook_attempts_total{outcome=\"delivered\"} 1",
        "paddock_webhook_attempt_duration_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    worker.abort();
}

#[actix_web::test]
async fn a_replica_dying_mid_delivery_loses_nothing_and_replicas_never_double_send() {
    let mut t = hub(true).await;
    let mut s = fast(true);
    s.lease = Duration::from_secs(1);
    t.state.tenancy.webhooks = Arc::new(s);
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let rx = Receiver::start(&[]).await;
    let hook = create_hook(
        &app,
        &alice,
        &rx.url(),
        json!([{"type": "model", "name": "alice/m"}]),
        None,
    )
    .await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"x")]).await;
    // Replica A claims the delivery and dies before sending it.
    let claimed = hub_api::webhooks::delivery::claim(&t.state, 16)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    drop(claimed);
    // Replica B (and a third replica) take over; until the lease ends the
    // delivery is A's, then it is sent once.
    let mut b = t.replica().await;
    b.tenancy.webhooks = t.state.tenancy.webhooks.clone();
    let mut c = t.replica().await;
    c.tenancy.webhooks = t.state.tenancy.webhooks.clone();
    let wb = hub_api::webhooks::delivery::spawn(b);
    let wc = hub_api::webhooks::delivery::spawn(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.hits().len(), 0, "held by the dead replica's lease");
    let hits = rx.wait_for(1).await;
    let first_event = hits[0].json()["event"]["id"].clone();
    // More events with two replicas sending: each exactly once.
    for i in 0..6 {
        commit_files(&app, &alice, "alice/m", &[(&format!("f{i}.txt"), b"y")]).await;
    }
    let log = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = settled(&app, &alice, &hook).await;
            if d["items"].as_array().unwrap().len() == 7 {
                break d;
            }
            assert!(Instant::now() < deadline, "{d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 7, "each event sent once");
    let ids: std::collections::BTreeSet<String> = hits
        .iter()
        .map(|h| h.json()["event"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 7);
    assert!(ids.contains(first_event.as_str().unwrap()));
    let items = log["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["state"] == "delivered"), "{log}");
    // The dead replica's claim counted as an attempt; only the real one is logged.
    let recovered = items.iter().find(|i| i["event_id"] == first_event).unwrap();
    assert_eq!(recovered["attempts"], 2);
    assert_eq!(recovered["attempt_log"].as_array().unwrap().len(), 1);
    wb.abort();
    wc.abort();
}

#[actix_web::test]
async fn a_hanging_receiver_does_not_hold_up_commits() {
    let t = hub(true).await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let rx = Receiver::start(&[Reply::Hang]).await;
    let hook = create_hook(
        &app,
        &alice,
        &rx.url(),
        json!([{"type": "model", "name": "alice/m"}]),
        None,
    )
    .await;
    let worker = hub_api::webhooks::delivery::spawn(t.state.clone());
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"1")]).await;
    rx.wait_for(1).await;
    // The receiver holds the first delivery; commits go on meanwhile.
    for i in 0..3 {
        commit_files(&app, &alice, "alice/m", &[(&format!("b{i}.txt"), b"2")]).await;
    }
    assert_eq!(
        rx.holding.load(Ordering::SeqCst),
        1,
        "the commits returned while the first delivery was held unanswered"
    );
    // The hung attempt times out and is retried; everything arrives.
    let log = settled(&app, &alice, &hook).await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{log}");
    assert!(items.iter().all(|i| i["state"] == "delivered"), "{log}");
    let retried = items.iter().find(|i| i["attempts"] == 2).expect("{log}");
    let first = &retried["attempt_log"][0];
    assert!(first["status_code"].is_null());
    assert!(
        first["error"].as_str().unwrap().contains("timed out"),
        "{first}"
    );
    assert!(rx.script.lock().unwrap().is_empty());
    worker.abort();
}

#[actix_web::test]
async fn private_and_internal_targets_are_refused() {
    let t = hub(false).await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://[::1]:8080/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0.0.0.0/",
        "http://localhost:9/hook",
    ] {
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri("/api/settings/webhooks")
                .insert_header(bearer(&alice))
                .set_json(json!({"url": url, "watched": [{"type": "user", "name": "alice"}]})),
        )
        .await;
        let v = json_of(&b);
        assert_eq!(st, 400, "{url}: {v}");
        assert_eq!(v["code"], "webhook_target_refused", "{url}: {v}");
    }
    // A name that does not resolve yet is taken (the delivery checks what it
    // resolves to then); `.invalid` never resolves (RFC 2606).
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(&alice))
            .set_json(json!({"url": "https://hooks.example.invalid/x", "watched": [{"type": "user", "name": "alice"}]})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    for (url, watched) in [
        (
            "ftp://example.com/",
            json!([{"type": "user", "name": "alice"}]),
        ),
        (
            "http://u:p@93.184.216.34/",
            json!([{"type": "user", "name": "alice"}]),
        ),
        ("http://93.184.216.34/", json!([])),
        (
            "http://93.184.216.34/",
            json!([{"type": "space", "name": "alice/x"}]),
        ),
        (
            "http://93.184.216.34/",
            json!([{"type": "user", "name": "nobody"}]),
        ),
    ] {
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri("/api/settings/webhooks")
                .insert_header(bearer(&alice))
                .set_json(json!({"url": url, "watched": watched})),
        )
        .await;
        let v = json_of(&b);
        assert_eq!(
            (st, v["code"].as_str()),
            (400, Some("validation_failed")),
            "{url} {watched}: {v}"
        );
    }
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(&alice))
            .set_json(json!({"url": "http://93.184.216.34/", "watched": [{"type": "user", "name": "alice"}], "domains": ["push"]})),
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));

    // At most 100 webhooks per owner.
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    for i in 0..101 {
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri("/api/settings/webhooks")
                .insert_header(bearer(&bob))
                .set_json(json!({"url": format!("http://93.184.216.34/{i}"), "watched": [{"type": "user", "name": "bob"}]})),
        )
        .await;
        if i < 100 {
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        } else {
            let v = json_of(&b);
            assert_eq!(
                (st, v["code"].as_str()),
                (400, Some("validation_failed")),
                "{v}"
            );
            assert!(v["error"].as_str().unwrap().contains("100 webhooks"), "{v}");
        }
    }

    // At delivery time, on the address connected to: a name that resolves
    // to loopback is refused by a hub without the allow-private setting,
    // even when the webhook was saved while it was allowed.
    let mut permissive = t.replica().await;
    permissive.tenancy.webhooks = Arc::new(fast(true));
    let papp = hub_testkit::app(&permissive).await;
    create_repo(&papp, &alice, "alice/m", false).await;
    let rx = Receiver::start(&[]).await;
    let hook = create_hook(
        &papp,
        &alice,
        &format!("http://localhost:{}/hook", rx.port),
        json!([{"type": "model", "name": "alice/m"}]),
        None,
    )
    .await;
    let mut strict = t.replica().await;
    let mut s = fast(false);
    s.max_attempts = 2;
    strict.tenancy.webhooks = Arc::new(s);
    let worker = hub_api::webhooks::delivery::spawn(strict);
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"x")]).await;
    let log = settled(&app, &alice, &hook).await;
    let item = &log["items"][0];
    assert_eq!(item["state"], "failed", "{log}");
    let err = item["attempt_log"][0]["error"].as_str().unwrap();
    assert!(err.contains("refused") && err.contains("loopback"), "{err}");
    assert_eq!(rx.hits().len(), 0, "nothing reached the loopback receiver");
    worker.abort();
}

#[actix_web::test]
async fn other_tenants_cannot_see_change_or_redeliver() {
    let t = hub(true).await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (mallory_id, mallory) = t.user("mallory", false, &["read", "write"]).await;
    let _ = mallory_id;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/secret", true).await;
    let rx = Receiver::start(&[]).await;
    let hook = create_hook(
        &app,
        &alice,
        &rx.url(),
        json!([{"type": "model", "name": "alice/secret"}]),
        Some("k"),
    )
    .await;
    // Mallory cannot watch alice's private repo (same answer as a missing one)...
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(&mallory))
            .set_json(
                json!({"url": rx.url(), "watched": [{"type": "model", "name": "alice/secret"}]}),
            ),
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("does not exist or you cannot read it"));
    // ...and watching alice herself does not bring her private repo's events.
    let mallory_hook = create_hook(
        &app,
        &mallory,
        &rx.url(),
        json!([{"type": "user", "name": "alice"}]),
        None,
    )
    .await;
    let worker = hub_api::webhooks::delivery::spawn(t.state.clone());
    commit_files(&app, &alice, "alice/secret", &[("a.txt", b"x")]).await;
    let log = settled(&app, &alice, &hook).await;
    let delivery = log["items"][0]["id"].as_str().unwrap().to_string();
    let theirs = deliveries(&app, &mallory, &mallory_hook).await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0, "{theirs}");
    assert_eq!(rx.hits().len(), 1);

    // Alice's webhook and its log are invisible to mallory: 404 everywhere.
    let attempts: Vec<(TestRequest, &str)> = vec![
        (
            TestRequest::get().uri(&format!("/api/settings/webhooks/{hook}")),
            "get",
        ),
        (
            TestRequest::post()
                .uri(&format!("/api/settings/webhooks/{hook}"))
                .set_json(json!({"watched": [], "url": "http://93.184.216.34/"})),
            "update",
        ),
        (
            TestRequest::post().uri(&format!("/api/settings/webhooks/{hook}/disable")),
            "disable",
        ),
        (
            TestRequest::delete().uri(&format!("/api/settings/webhooks/{hook}")),
            "delete",
        ),
        (
            TestRequest::get().uri(&format!("/api/v1/webhooks/{hook}/deliveries")),
            "log",
        ),
        (
            TestRequest::get().uri(&format!("/api/v1/webhooks/{hook}/deliveries/{delivery}")),
            "delivery",
        ),
        (
            TestRequest::post().uri(&format!(
                "/api/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"
            )),
            "redeliver",
        ),
    ];
    for (req, what) in attempts {
        let (st, _, b) = call(&app, req.insert_header(bearer(&mallory))).await;
        assert_eq!(st, 404, "{what}: {}", String::from_utf8_lossy(&b));
        assert!(!String::from_utf8_lossy(&b).contains("secret"), "{what}");
    }
    // Her own delivery id under her own webhook is not found either.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri(&format!(
                "/api/v1/webhooks/{mallory_hook}/deliveries/{delivery}/redeliver"
            ))
            .insert_header(bearer(&mallory)),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(&mallory)),
    )
    .await;
    assert_eq!(st, 200);
    let listed = json_of(&b);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], mallory_hook.as_str());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.hits().len(), 1, "nothing redelivered");
    // Still alice's, unchanged.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/api/settings/webhooks/{hook}"))
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 200);
    let w = json_of(&b);
    assert_eq!(w["webhook"]["disabled"], false);
    assert_eq!(w["webhook"]["url"], rx.url());
    worker.abort();
}

#[actix_web::test]
async fn repo_lifecycle_discussion_and_endpoint_events_follow_domains() {
    let t = hub(true).await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    let rx = Receiver::start(&[]).await;
    // One webhook per domain, all watching the user alice.
    let mut hooks = HashMap::new();
    for domain in ["repo", "discussion", "endpoint"] {
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri("/api/settings/webhooks")
                .insert_header(bearer(&alice))
                .set_json(json!({"url": rx.url(), "domains": [domain],
                                 "watched": [{"type": "user", "name": "alice"}]})),
        )
        .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        hooks.insert(
            domain,
            json_of(&b)["webhook"]["id"].as_str().unwrap().to_string(),
        );
    }
    let worker = hub_api::webhooks::delivery::spawn(t.state.clone());
    // Repo lifecycle: create, settings, move, delete.
    create_repo(&app, &alice, "alice/m", false).await;
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri("/api/models/alice/m/settings")
            .insert_header(bearer(&alice))
            .set_json(json!({"gated": "auto"})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/move")
            .insert_header(bearer(&alice))
            .set_json(json!({"fromRepo": "alice/m", "toRepo": "alice/n"})),
    )
    .await;
    assert_eq!(st, 200);
    // A discussion event, as the discussions module will send it.
    let repo_id: (i64,) = sqlx::query_as("SELECT id FROM repos WHERE name = 'n'")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    let mut tx = t.state.db.begin().await.unwrap();
    hub_api::webhooks::enqueue(
        &mut tx,
        hub_api::webhooks::Event::Discussion {
            repo_id: repo_id.0,
            action: "create",
            discussion: json!({"num": 1, "title": "Hi", "isPullRequest": false, "status": "open"}),
            comment: Some(json!({"id": "c1", "content": "hello"})),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (st, _, b) = call(
        &app,
        TestRequest::delete()
            .uri("/api/repos/delete")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "n", "organization": "alice"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    // An endpoint status change (the scheduler's `set_status`).
    create_repo(&app, &alice, "alice/e", false).await;
    commit_files(&app, &alice, "alice/e", &[("f.txt", b"x")]).await;
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/endpoints/alice")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "ep", "repository": "alice/e", "task": "feature-extraction"})),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let (ep,): (i64,) =
        sqlx::query_as("SELECT id FROM endpoints WHERE namespace_id = $1 AND name = 'ep'")
            .bind(alice_id)
            .fetch_one(&t.state.db)
            .await
            .unwrap();
    let mut conn = t.state.db.acquire().await.unwrap();
    hub_api::db::endpoints::set_status(&mut conn, ep, "failed", Some("no worker"))
        .await
        .unwrap();
    drop(conn);
    // And the scheduler's batched path (one statement for many endpoints).
    let changed =
        hub_api::db::endpoints::set_statuses(&t.state.db, &[(ep, "running".to_string(), None)])
            .await
            .unwrap();
    assert_eq!(changed, 1);

    let scopes = |domain: &str| {
        let hook = hooks[domain].clone();
        let app = &app;
        let alice = &alice;
        async move {
            let log = settled(app, alice, &hook).await;
            let mut v: Vec<String> = log["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        i["scope"].as_str().unwrap(),
                        i["action"].as_str().unwrap()
                    )
                })
                .collect();
            v.reverse();
            v
        }
    };
    let repo = scopes("repo").await;
    assert_eq!(repo[0], "repo create", "{repo:?}");
    for want in [
        "repo.content update",
        "repo.config update",
        "repo move",
        "repo delete",
    ] {
        assert!(repo.contains(&want.to_string()), "{want} in {repo:?}");
    }
    // The log pages newest first with `cursor`.
    let mut seen = vec![];
    let mut uri = format!("/api/v1/webhooks/{}/deliveries?limit=2", hooks["repo"]);
    loop {
        let (st, _, b) = call(
            &app,
            TestRequest::get().uri(&uri).insert_header(bearer(&alice)),
        )
        .await;
        assert_eq!(st, 200);
        let page = json_of(&b);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| {
            format!(
                "{} {}",
                i["scope"].as_str().unwrap(),
                i["action"].as_str().unwrap()
            )
        }));
        match page["next_cursor"].as_str() {
            Some(c) => {
                uri = format!(
                    "/api/v1/webhooks/{}/deliveries?limit=2&cursor={c}",
                    hooks["repo"]
                )
            }
            None => break,
        }
    }
    seen.reverse();
    assert_eq!(seen, repo);
    assert_eq!(
        scopes("discussion").await,
        vec!["discussion.comment create"]
    );
    let endpoint = scopes("endpoint").await;
    assert!(
        endpoint.iter().all(|s| s == "endpoint update"),
        "{endpoint:?}"
    );
    // The payloads, as received.
    let hits: Vec<Value> = rx.hits().iter().map(Hit::json).collect();
    let find = |scope: &str, action: &str| {
        hits.iter()
            .find(|p| p["event"]["scope"] == scope && p["event"]["action"] == action)
            .unwrap_or_else(|| panic!("no {scope} {action} in {hits:?}"))
            .clone()
    };
    assert_eq!(
        find("repo.config", "update")["updatedConfig"],
        json!({"gated": "auto"})
    );
    let moved = find("repo", "move");
    assert_eq!(moved["repo"]["name"], "alice/m");
    assert_eq!(moved["movedTo"]["name"], "alice/n");
    assert_eq!(find("repo", "delete")["repo"]["name"], "alice/n");
    let d = find("discussion.comment", "create");
    assert_eq!(d["discussion"]["title"], "Hi");
    assert_eq!(d["comment"]["content"], "hello");
    assert_eq!(d["repo"]["name"], "alice/n");
    let failed = hits
        .iter()
        .find(|p| p["event"]["scope"] == "endpoint" && p["endpoint"]["status"] == "failed")
        .unwrap_or_else(|| panic!("{hits:?}"));
    assert_eq!(failed["endpoint"]["name"], "ep");
    assert!(
        hits.iter().any(|p| p["endpoint"]["status"] == "running"),
        "{hits:?}"
    );
    assert_eq!(failed["endpoint"]["message"], "no worker");
    assert!(failed.get("repo").is_none());
    worker.abort();

    // Pruning keeps recent deliveries and drops finished old ones with their events.
    assert_eq!(
        hub_api::webhooks::delivery::prune(&t.state, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let n = hub_api::webhooks::delivery::prune(&t.state, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(n as usize, rx.hits().len());
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_events")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[actix_web::test]
async fn discussion_routes_send_discussion_events() {
    let t = hub(true).await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let rx = Receiver::start(&[]).await;
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/settings/webhooks")
            .insert_header(bearer(&alice))
            .set_json(json!({"url": rx.url(), "domains": ["discussion"],
                             "watched": [{"type": "model", "name": "alice/m"}]})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let hook = json_of(&b)["webhook"]["id"].as_str().unwrap().to_string();
    let worker = hub_api::webhooks::delivery::spawn(t.state.clone());
    let post = |tok: &str, uri: &str, body: Value| {
        TestRequest::post()
            .uri(uri)
            .insert_header(bearer(tok))
            .set_json(body)
    };
    let (st, _, b) = call(
        &app,
        post(
            &bob,
            "/api/models/alice/m/discussions",
            json!({"title": "Question", "description": "Why?"}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let num = json_of(&b)["num"].as_i64().unwrap();
    let d = format!("/api/models/alice/m/discussions/{num}");
    for (uri, body) in [
        (format!("{d}/comment"), json!({"comment": "Because."})),
        (format!("{d}/title"), json!({"title": "Answered"})),
        (format!("{d}/status"), json!({"status": "closed"})),
    ] {
        let (st, _, b) = call(&app, post(&alice, &uri, body)).await;
        assert_eq!(st, 200, "{uri}: {}", String::from_utf8_lossy(&b));
    }
    let log = settled(&app, &alice, &hook).await;
    let mut got: Vec<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{} {}",
                i["scope"].as_str().unwrap(),
                i["action"].as_str().unwrap()
            )
        })
        .collect();
    got.reverse();
    assert_eq!(
        got,
        [
            "discussion create",
            "discussion.comment create",
            "discussion update",
            "discussion update"
        ]
    );
    let hits: Vec<Value> = rx.wait_for(4).await.iter().map(Hit::json).collect();
    let comment = hits
        .iter()
        .find(|p| p["event"]["scope"] == "discussion.comment")
        .unwrap();
    assert_eq!(comment["comment"]["content"], "Because.");
    assert_eq!(comment["comment"]["author"]["name"], "alice");
    assert_eq!(comment["discussion"]["num"], num);
    assert_eq!(comment["discussion"]["isPullRequest"], false);
    assert_eq!(comment["repo"]["name"], "alice/m");
    assert_eq!(
        comment["discussion"]["url"]["web"],
        format!("http://hub.test/alice/m/discussions/{num}")
    );
    let closed = hits
        .iter()
        .find(|p| p["discussion"]["status"] == "closed")
        .unwrap();
    assert_eq!(closed["discussion"]["title"], "Answered");
    assert_eq!(closed["event"]["action"], "update");
    // A `create_pr` commit that fails takes its pull request back and
    // announces nothing; one that succeeds announces its pull request.
    let commit = |ops: Vec<Value>| {
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main?create_pr=1")
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson("proposal", None, &ops))
    };
    let missing = json!({"key": "deletedFile", "value": {"path": "nowhere.txt"}});
    let (st, _, b) = call(&app, commit(vec![missing])).await;
    assert!(
        (400..500).contains(&st),
        "{st}: {}",
        String::from_utf8_lossy(&b)
    );
    let (st, _, b) = call(
        &app,
        commit(vec![hub_testkit::file_op("new.txt", b"proposed")]),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let pr = json_of(&b)["pullRequestUrl"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let hits: Vec<Value> = rx.wait_for(5).await.iter().map(Hit::json).collect();
    let created: Vec<(i64, bool)> = hits
        .iter()
        .filter(|p| p["event"]["scope"] == "discussion" && p["event"]["action"] == "create")
        .map(|p| {
            (
                p["discussion"]["num"].as_i64().unwrap(),
                p["discussion"]["isPullRequest"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(created, [(num, false), (pr, true)]);
    let log = settled(&app, &alice, &hook).await;
    assert_eq!(log["items"].as_array().unwrap().len(), 5, "{log:#}");
    worker.abort();
}
