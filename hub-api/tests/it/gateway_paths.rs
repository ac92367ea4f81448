//! The path a gateway call forwards stays below its own replica on the worker.
//!
//! A worker serves several tenants' replicas under `/models/{replica}/...` and
//! trusts the gateway's secret for all of them, so the part of the path after
//! `/endpoints/{namespace}/{name}/` must never climb out of the replica: not by
//! `..`, not by a backslash that a URL parser would read as a separator, not by
//! percent-encoded dots. Two tenants' endpoints share one stand-in worker here,
//! and every path the worker receives is checked.

use actix_web::test::{call_service, read_body, TestRequest};
use hub_testkit::{StandInWorker, TestState};

struct Two {
    t: TestState,
    worker: StandInWorker,
    /// bob's token with the inference scope; bob may call `acme/emb` only.
    bob: String,
    mine: uuid::Uuid,
    victim: uuid::Uuid,
}

async fn two_tenants() -> Two {
    let t = TestState::new().await;
    let (bob_id, _) = t.user("bob", false, &["read"]).await;
    let (eve_id, _) = t.user("eve", false, &["read"]).await;
    let acme = t.org("acme", bob_id).await;
    let other = t.org("victim", eve_id).await;
    let (_, bob) =
        hub_api::admin::create_token(&t.state.db, bob_id, "call", &["inference".into()], None)
            .await
            .unwrap();
    let worker = StandInWorker::start();
    let (_, mine) =
        hub_testkit::ready_endpoint(&t.state.db, acme, "emb", "protected", &worker).await;
    let (_, victim) =
        hub_testkit::ready_endpoint(&t.state.db, other, "secret", "protected", &worker).await;
    Two {
        t,
        worker,
        bob,
        mine,
        victim,
    }
}

fn post(uri: &str, token: &str) -> actix_http::Request {
    TestRequest::post()
        .uri(uri)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(r#"{"input": ["hi"]}"#)
        .to_request()
}

fn seen(w: &StandInWorker) -> Vec<String> {
    w.paths.lock().unwrap().clone()
}

#[actix_web::test]
async fn a_call_cannot_leave_its_replica_on_the_worker() {
    let s = two_tenants().await;
    let app = hub_testkit::app(&s.t.state).await;
    let v = s.victim;

    // bob cannot call the other tenant's endpoint directly.
    let r = call_service(&app, post("/endpoints/victim/secret/v1/embeddings", &s.bob)).await;
    assert!(r.status().is_client_error(), "direct call: {}", r.status());
    assert!(seen(&s.worker).is_empty());

    // Nor through his own endpoint, by any spelling of "up one level".
    for tail in [
        format!("..%5C{v}/v1/embeddings"),
        format!("v1%5C..%5C..%5C{v}%5Cv1%5Cembeddings"),
        format!("v1/..%5C..%5C{v}/v1/embeddings"),
        format!("%2e%2e/{v}/v1/embeddings"),
        format!(".%2E/{v}/v1/embeddings"),
        format!("%2e%2e%5C{v}/v1/embeddings"),
        format!("..%2F{v}/v1/embeddings"),
        format!("v1/%2e%2e%2f%2e%2e%2f{v}/v1/embeddings"),
        "..%5C..%5Cmetrics".to_string(),
        format!("..%252F{v}/v1/embeddings"),
    ] {
        let uri = format!("/endpoints/acme/emb/{tail}");
        let r = call_service(&app, post(&uri, &s.bob)).await;
        let status = r.status();
        let body = read_body(r).await;
        let paths = seen(&s.worker);
        for p in &paths {
            assert!(
                p.starts_with(&format!("/models/{}/", s.mine)),
                "{uri} reached {p} on the worker ({status}: {body:?})"
            );
            assert!(
                !p.contains(&v.to_string()) || p.contains("%"),
                "{uri} named the victim's replica as a path segment: {p}"
            );
        }
        if status.is_success() {
            // Only acceptable if it stayed inside the replica (checked above)
            // and the climbing segment arrived as data, not as a separator.
            let last = paths.last().expect("a 200 came from the worker");
            assert!(
                !last.contains("/../") && !last.contains('\\'),
                "{uri} forwarded as {last}"
            );
        } else {
            assert_eq!(status, 400, "{uri}: {body:?}");
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("invalid_path"), "{uri}: {text}");
        }
    }
}

#[actix_web::test]
async fn ordinary_tails_arrive_as_sent() {
    let s = two_tenants().await;
    let app = hub_testkit::app(&s.t.state).await;
    for (tail, want) in [
        ("v1/embeddings", "v1/embeddings"),
        ("pipeline/feature-extraction", "pipeline/feature-extraction"),
        // Percent-encoded bytes stay encoded; a space is encoded once.
        ("a%20b/%7e", "a%20b/~"),
        ("x~y/z-1_2.3", "x~y/z-1_2.3"),
    ] {
        let before = seen(&s.worker).len();
        let r = call_service(&app, post(&format!("/endpoints/acme/emb/{tail}"), &s.bob)).await;
        assert_eq!(r.status(), 200, "{tail}");
        let paths = seen(&s.worker);
        assert_eq!(paths.len(), before + 1, "{tail}");
        assert_eq!(
            paths.last().unwrap(),
            &format!("/models/{}/{want}", s.mine),
            "{tail}"
        );
    }
    // The replica itself (no tail) is `/models/{replica}`.
    call_service(&app, post("/endpoints/acme/emb", &s.bob)).await;
    assert_eq!(
        seen(&s.worker).last().unwrap(),
        &format!("/models/{}", s.mine)
    );
}

/// A browser's session cookie rides along on any same-site GET, such as an
/// image in a model card someone else wrote (`![](/endpoints/acme/emb/v1/models)`):
/// on a safe method the gateway takes the caller as anonymous, so the
/// viewer's protected endpoint is neither called, woken nor billed. The
/// dashboard's playground POSTs with the cookie and the CSRF token, which works.
#[actix_web::test]
async fn a_session_cookie_calls_endpoints_only_with_unsafe_methods() {
    let t = TestState::new().await;
    let alice = crate::common::user_with_password(&t, "alice", "correct horse", false).await;
    let acme = t.org("acme", alice).await;
    let worker = StandInWorker::start();
    hub_testkit::ready_endpoint(&t.state.db, acme, "emb", "protected", &worker).await;
    let app = hub_testkit::app(&t.state).await;
    let r = call_service(
        &app,
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .set_json(serde_json::json!({"username": "alice", "password": "correct horse"}))
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("paddock_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = serde_json::from_slice::<serde_json::Value>(&read_body(r).await).unwrap()
        ["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    for method in [actix_web::http::Method::GET, actix_web::http::Method::HEAD] {
        let r = call_service(
            &app,
            TestRequest::default()
                .method(method.clone())
                .uri("/endpoints/acme/emb/v1/models")
                .insert_header(("Cookie", cookie.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(r.status(), 401, "{method}");
    }
    assert!(seen(&worker).is_empty(), "{:?}", seen(&worker));
    let r = call_service(
        &app,
        TestRequest::post()
            .uri("/endpoints/acme/emb/v1/embeddings")
            .insert_header(("Cookie", cookie.clone()))
            .insert_header(("X-CSRF-Token", csrf))
            .insert_header((
                "Origin",
                t.state.public_url.trim_end_matches('/').to_string(),
            ))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(r#"{"input": ["hi"]}"#)
            .to_request(),
    )
    .await;
    let st = r.status();
    assert_eq!(st, 200, "{:?}", read_body(r).await);
    assert_eq!(seen(&worker).len(), 1);
}

/// The gateway forwards request bodies up to `gateway::MAX_BODY` (2 MiB: a batch of
/// long inputs, a large `response_format` schema) and refuses a larger one with the
/// API's own 413, not the web framework's 256 KiB default.
#[actix_web::test]
async fn bodies_up_to_the_documented_limit_are_forwarded() {
    let s = two_tenants().await;
    let app = hub_testkit::app(&s.t.state).await;
    let call = |n: usize| {
        let pad = "x".repeat(n - r#"{"input": [""]}"#.len());
        TestRequest::post()
            .uri("/endpoints/acme/emb/v1/embeddings")
            .insert_header(("Authorization", format!("Bearer {}", s.bob)))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(format!(r#"{{"input": ["{pad}"]}}"#))
            .to_request()
    };
    for n in [300 * 1024, hub_api::gateway::MAX_BODY] {
        let r = call_service(&app, call(n)).await;
        assert_eq!(r.status(), 200, "a body of {n} bytes");
    }
    let r = call_service(&app, call(hub_api::gateway::MAX_BODY + 1)).await;
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = serde_json::from_slice(&read_body(r).await).unwrap();
    assert_eq!(v["code"], "payload_too_large", "{v}");
    assert_eq!(s.worker.paths.lock().unwrap().len(), 2);
}
