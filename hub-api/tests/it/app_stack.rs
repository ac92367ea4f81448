//! The one app builder: the real-socket test server runs the production
//! middleware stack (rate limits, CSRF form fields), and per-app state
//! (facets cache, scheduler doorbell) is not shared between two apps in one
//! process.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_api::ratelimit::{Rate, RateDefaults, RateLimiter};
use hub_testkit::{app, Server, TestState};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn limits(token: Rate, anonymous: Rate) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(RateDefaults {
        token,
        anonymous,
        trust_forwarded_for: false,
    }))
}

/// The real-socket server (what `hub-clients` and the load tests use) runs
/// the production stack: a burst past the configured limit is answered 429
/// `rate_limited`, per token and per anonymous client, with `Retry-After`.
#[actix_web::test]
async fn socket_server_enforces_rate_limits() {
    let mut t = TestState::new().await;
    t.state.tenancy.rate = limits(Rate { per_s: 1, burst: 3 }, Rate { per_s: 1, burst: 2 });
    let (_, tok) = t.user("alice", false, &["read"]).await;
    let server = Server::start(t.state.clone());
    let http = reqwest::Client::new();
    let whoami = || {
        http.get(format!("{}/api/whoami-v2", server.url))
            .bearer_auth(&tok)
            .send()
    };
    let mut codes = vec![];
    for _ in 0..6 {
        codes.push(whoami().await.unwrap().status().as_u16());
    }
    assert_eq!(&codes[..3], &[200; 3], "{codes:?}");
    assert!(codes[3..].contains(&429), "{codes:?}");
    let r = whoami().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");

    let mut anon = vec![];
    for _ in 0..5 {
        let r = http
            .get(format!("{}/api/models", server.url))
            .send()
            .await
            .unwrap();
        anon.push(r.status().as_u16());
    }
    assert_eq!(&anon[..2], &[200; 2], "{anon:?}");
    assert!(anon[2..].contains(&429), "{anon:?}");
    server.stop().await;
}

/// The rate limiter counts the caller the authentication middleware
/// resolved: a token's requests share the token's bucket; a bad token is
/// still a 401 with the same message, and counts as its client IP (not as a
/// token), so it cannot borrow the token rate.
#[actix_web::test]
async fn rate_limit_keys_on_the_authenticated_caller() {
    let mut t = TestState::new().await;
    t.state.tenancy.rate = limits(Rate { per_s: 1, burst: 2 }, Rate { per_s: 1, burst: 4 });
    let (_, tok) = t.user("alice", false, &["read"]).await;
    let app = app(&t.state).await;
    let who = |auth: String| {
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(("Authorization", auth))
    };
    let mut good = vec![];
    for _ in 0..3 {
        good.push(call(&app, who(format!("Bearer {tok}"))).await.0);
    }
    assert_eq!(good, [200, 200, 429]);
    let mut bad = vec![];
    for _ in 0..5 {
        let (st, _, b) = call(&app, who("Bearer pdk_not_a_token".into())).await;
        if st == 401 {
            assert_eq!(
                json_of(&b)["error"],
                hub_api::auth::principal::INVALID_CREDENTIALS
            );
        }
        bad.push(st);
    }
    // The anonymous burst of 4 applies, not the token's 2 (nor its empty bucket).
    assert_eq!(bad, [401, 401, 401, 401, 429]);
}

/// Signs in on a socket server; returns (session cookie, csrf token).
async fn login(http: &reqwest::Client, url: &str) -> (String, String) {
    let r = http
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("paddock_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: Value = r.json().await.unwrap();
    (session, body["csrf_token"].as_str().unwrap().to_string())
}

/// The CSRF middleware runs on the socket server too: an HTML form post
/// with the session's `csrf_token` field passes (the handler still reads
/// the body), a wrong field or a foreign origin is 403 `csrf_rejected`, and
/// a session JWT sent as a bearer token is not subject to CSRF.
#[actix_web::test]
async fn socket_server_checks_csrf_form_fields() {
    let t = TestState::new().await;
    user_with_password(&t, "alice", "correct horse", false).await;
    let server = Server::start(t.state.clone());
    let http = reqwest::Client::new();
    let (session, csrf) = login(&http, &server.url).await;
    let form = |origin: &str, body: String| {
        http.post(format!("{}/api/v1/orgs", server.url))
            .header("Cookie", &session)
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = form(&server.url, "name=x&csrf_token=nope".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "csrf_rejected");
    let r = form("http://evil.test", format!("name=x&csrf_token={csrf}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "csrf_rejected");
    // The right field passes the check; the handler reads the (form) body
    // as JSON and refuses it, so the body reached it.
    let r = form(&server.url, format!("name=x&csrf_token={csrf}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"].as_str().unwrap().contains("invalid JSON body"),
        "{b}"
    );
    // The same session as a bearer token: no CSRF (browsers never add it).
    let jwt = session.trim_start_matches("paddock_session=");
    let r = http
        .post(format!("{}/api/v1/orgs", server.url))
        .bearer_auth(jwt)
        .header("Origin", "http://evil.test")
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    server.stop().await;
}

/// Two apps over one database (two replicas, or two hubs in one test
/// process) keep their own browse facets: a fresh app sees a new license at
/// once, while the app that cached the choices keeps them for its TTL. (The
/// process-wide cache keyed by database name this replaces handed the second
/// app the first one's choices.)
#[actix_web::test]
async fn apps_keep_their_own_facets_cache() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let first = app(&t.state).await;
    let second_state = t.replica().await;
    let second = app(&second_state).await;
    let browse = |page: &str| page.contains("<option value=\"wtfpl\"");
    let page = |b: Vec<u8>| String::from_utf8(b).unwrap();

    let (st, _, b) = call(&first, TestRequest::get().uri("/models")).await;
    assert_eq!(st, 200);
    assert!(!browse(&page(b)));
    create_repo(&first, &tok, "alice/m", false).await;
    commit_files(
        &first,
        &tok,
        "alice/m",
        &[("README.md", b"---\nlicense: wtfpl\n---\n# m\n")],
    )
    .await;

    let (st, _, b) = call(&second, TestRequest::get().uri("/models")).await;
    assert_eq!(st, 200);
    assert!(browse(&page(b)), "the second app computed its own choices");
    let (_, _, b) = call(&first, TestRequest::get().uri("/models")).await;
    assert!(
        !browse(&page(b)),
        "the first app still serves its cached choices"
    );
}

/// Each app's scheduler has its own doorbell: a handler of one app that
/// changes what endpoints want wakes that app's scheduler only.
#[actix_web::test]
async fn apps_have_their_own_scheduler_doorbell() {
    let t = TestState::new().await;
    let other = t.replica().await;
    t.state.scheduler.nudge();
    assert!(!other.scheduler.wait(Duration::from_millis(50)).await);
    assert!(t.state.scheduler.wait(Duration::from_millis(50)).await);
}
