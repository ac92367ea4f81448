//! Secrets never in logs (reliability test 29): requests carrying a unique
//! canary in tokens, cookies, CSRF headers, passwords and signed links run
//! with every log line (trace level, sqlx statements included) captured; the
//! canary must appear in no log line, no response (body or header) and no
//! database row.

mod common;

use actix_web::test::TestRequest;
use common::*;
use hub_testkit::{app, TestState};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Buf {
    static BUF: OnceLock<Buf> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Buf::default();
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || w.clone())
            .with_ansi(false)
            .init();
        buf
    })
    .clone()
}

#[actix_web::test]
async fn canary_never_logged_echoed_or_stored() {
    let logs = capture();
    let canary = format!("CANARY{}", uuid::Uuid::new_v4().simple());
    let t = TestState::new().await;
    let (uid, _) = t.user("alice", false, &["read"]).await;
    user_with_password(&t, "bob", "correct horse", false).await;
    // A real token whose secret carries the canary.
    let secret = format!("pdk_{canary}");
    let hash = hub_api::auth::secrets::hash(&secret);
    let scopes = vec!["read".to_string(), "write".to_string(), "admin".to_string()];
    hub_api::db::tokens::insert(
        &t.state.db,
        &hub_api::db::tokens::NewToken {
            user_id: uid,
            name: "canary",
            secret_hash: &hash,
            display_prefix: "pdk_CANA",
            scopes: &scopes,
            restrict_namespaces: None,
            restrict_repos: None,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    let app = app(&t.state).await;
    let mut responses: Vec<String> = vec![];
    let mut record = |st: u16, h: &actix_web::http::header::HeaderMap, b: &[u8]| {
        let mut s = format!("{st} ");
        for (k, v) in h {
            s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        s.push_str(&String::from_utf8_lossy(b));
        responses.push(s);
    };
    let bad_token = format!("pdk_{canary}x");
    let jwt_like = format!("eyJhbGciOiJIUzI1NiJ9.{canary}.sig");
    let reqs = vec![
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(bearer(&secret)),
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&secret))
            .set_json(json!({"name": "m", "private": true})),
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main")
            .insert_header(bearer(&secret))
            .set_payload(hub_testkit::ndjson(
                "c",
                None,
                &[hub_testkit::file_op("a.txt", b"x")],
            )),
        TestRequest::get()
            .uri("/alice/m/resolve/main/a.txt")
            .insert_header(bearer(&secret)),
        TestRequest::get()
            .uri("/alice/m/resolve/main/missing.txt")
            .insert_header(bearer(&secret)),
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(bearer(&bad_token)),
        TestRequest::get()
            .uri("/api/v1/users/me")
            .insert_header(bearer(&jwt_like)),
        TestRequest::get()
            .uri("/api/v1/users/me")
            .insert_header(("Authorization", format!("Basic {canary}"))),
        TestRequest::get()
            .uri("/api/v1/users/me")
            .insert_header(("Cookie", format!("paddock_session={jwt_like}"))),
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .set_json(json!({"username": "bob", "password": canary})),
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .set_json(json!({"username": canary, "password": "x"})),
        TestRequest::put()
            .uri(&format!(
                "/lfs/upload/00000000-0000-0000-0000-000000000000?token={canary}"
            ))
            .set_payload("x"),
        TestRequest::get().uri(&format!("/lfs/objects/{}?token={canary}", "a".repeat(64))),
        TestRequest::post()
            .uri("/api/v1/tokens")
            .insert_header(bearer(&secret))
            .set_json(json!({"name": "n", "scopes": ["read"]})),
        TestRequest::get()
            .uri("/api/v1/tokens")
            .insert_header(bearer(&secret)),
        TestRequest::get()
            .uri("/api/v1/users/me/audit")
            .insert_header(bearer(&secret)),
    ];
    for r in reqs {
        let (st, h, b) = call(&app, r).await;
        // The token-creation answer carries a new (random) secret; it must not be the canary.
        record(st, &h, &b);
    }
    // A signed-in session with the CSRF header carrying the canary.
    let (st, h, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .set_json(json!({"username": "bob", "password": "correct horse"})),
    )
    .await;
    assert_eq!(st, 200);
    record(st, &h, &b);
    let session = h
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("paddock_session="))
        .unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let (st, h, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/orgs")
            .insert_header(("Cookie", session.clone()))
            .insert_header(("Origin", "http://hub.test"))
            .insert_header(("X-CSRF-Token", canary.clone()))
            .set_json(json!({"name": "o"})),
    )
    .await;
    assert_eq!(st, 403);
    record(st, &h, &b);

    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        log_text.contains("http.path"),
        "access-log lines were captured"
    );
    assert!(
        log_text.contains("sign-in refused"),
        "handler lines were captured"
    );
    assert!(!log_text.contains(&canary), "the canary is in the logs");
    // The session JWT and the hashes never appear in logs either.
    let jwt = session.trim_start_matches("paddock_session=");
    assert!(!log_text.contains(jwt), "a session JWT is in the logs");
    for r in &responses {
        assert!(!r.contains(&canary), "the canary is in a response: {r}");
    }
    let db = dump_database(&t.state.db).await;
    assert!(!db.contains(&canary), "the canary is in the database");
}
