//! Concurrent commits to one branch never lose one another (reliability tests
//! 1 and 2): every acknowledged file is in the head, history is one linear
//! chain of exactly the acknowledged commits, and losers only ever see 412.

use actix_web::http::StatusCode;
use actix_web::test::{call_service, read_body, TestRequest};
use futures::future::join_all;
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

const WRITERS: usize = 16;

/// These tests measure the commit protocol, not the rate limiter.
fn unlimited(t: &mut TestState) {
    use hub_api::ratelimit::{Rate, RateDefaults, RateLimiter};
    let off = Rate { per_s: 0, burst: 0 };
    t.state.tenancy.rate = std::sync::Arc::new(RateLimiter::new(RateDefaults {
        token: off,
        anonymous: off,
        trust_forwarded_for: false,
    }));
}
const PER_WRITER: usize = 50;

async fn head<S>(app: &S, tok: &str) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let resp = call_service(
        app,
        TestRequest::get()
            .uri("/api/models/c/race/refs")
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .to_request(),
    )
    .await;
    let v: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
    v["branches"][0]["targetCommit"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn files_and_history<S>(app: &S, tok: &str) -> (BTreeSet<String>, Vec<String>)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let mut files = BTreeSet::new();
    let mut uri = "/api/models/c/race/tree/main?recursive=true".to_string();
    loop {
        let resp = call_service(
            app,
            TestRequest::get()
                .uri(&uri)
                .insert_header(("Authorization", format!("Bearer {tok}")))
                .to_request(),
        )
        .await;
        let link = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let v: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
        for e in v.as_array().unwrap() {
            if e["type"] == "file" {
                files.insert(e["path"].as_str().unwrap().to_string());
            }
        }
        match link {
            Some(l) => {
                uri = l
                    .trim_start_matches("<http://hub.test")
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            }
            None => break,
        }
    }
    let mut history = vec![];
    let mut uri = "/api/models/c/race/commits/main?limit=500".to_string();
    loop {
        let resp = call_service(
            app,
            TestRequest::get()
                .uri(&uri)
                .insert_header(("Authorization", format!("Bearer {tok}")))
                .to_request(),
        )
        .await;
        let link = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let v: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
        history.extend(
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        match link {
            Some(l) => {
                uri = l
                    .trim_start_matches("<http://hub.test")
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            }
            None => break,
        }
    }
    (files, history)
}

#[actix_web::test]
async fn concurrent_commits_with_parent_commit() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    let (_, tok) = t.user("c", false, &["write"]).await;
    let app = app(&t.state).await;
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .set_json(json!({"name": "race"}))
            .to_request(),
    )
    .await;
    assert!(resp.status().is_success());

    let writers = (0..WRITERS).map(|i| {
        let app = &app;
        let tok = tok.clone();
        async move {
            let mut acked = vec![];
            let mut conflicts = 0;
            for j in 0..PER_WRITER {
                let name = format!("c{i}-{j}");
                loop {
                    let parent = head(app, &tok).await;
                    let body = ndjson(
                        &format!("add {name}"),
                        Some(&parent),
                        &[file_op(&name, name.as_bytes())],
                    );
                    let resp = call_service(
                        app,
                        TestRequest::post()
                            .uri("/api/models/c/race/commit/main")
                            .insert_header(("Authorization", format!("Bearer {tok}")))
                            .set_payload(body)
                            .to_request(),
                    )
                    .await;
                    let status = resp.status();
                    let b = read_body(resp).await;
                    match status {
                        StatusCode::OK => {
                            let v: Value = serde_json::from_slice(&b).unwrap();
                            acked
                                .push((name.clone(), v["commitOid"].as_str().unwrap().to_string()));
                            break;
                        }
                        StatusCode::PRECONDITION_FAILED => conflicts += 1,
                        other => panic!("writer {i} got {other}: {}", String::from_utf8_lossy(&b)),
                    }
                }
            }
            (acked, conflicts)
        }
    });
    let results = join_all(writers).await;
    let acked: Vec<(String, String)> = results.iter().flat_map(|(a, _)| a.clone()).collect();
    let conflicts: usize = results.iter().map(|(_, c)| c).sum();
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    eprintln!(
        "{} commits acknowledged, {conflicts} stale-parent retries",
        acked.len()
    );

    let (files, history) = files_and_history(&app, &tok).await;
    let want: BTreeSet<String> = acked.iter().map(|(n, _)| n.clone()).collect();
    let got: BTreeSet<String> = files
        .into_iter()
        .filter(|f| f != ".gitattributes")
        .collect();
    assert_eq!(
        got, want,
        "every acknowledged file is in the head, and nothing else"
    );
    // One linear chain: exactly the acknowledged commits plus the initial one, none twice.
    assert_eq!(history.len(), acked.len() + 1);
    let distinct: HashSet<&String> = history.iter().collect();
    assert_eq!(distinct.len(), history.len());
    let acked_ids: HashSet<&String> = acked.iter().map(|(_, c)| c).collect();
    assert!(history[..history.len() - 1]
        .iter()
        .all(|c| acked_ids.contains(c)));
}

#[actix_web::test]
async fn concurrent_commits_without_parent_are_serialised() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    let (_, tok) = t.user("c", false, &["write"]).await;
    let app = app(&t.state).await;
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .set_json(json!({"name": "race"}))
            .to_request(),
    )
    .await;
    assert!(resp.status().is_success());
    let writers = (0..WRITERS).map(|i| {
        let app = &app;
        let tok = tok.clone();
        async move {
            let mut live = BTreeSet::new();
            for j in 0..20 {
                // Each writer adds files in its own folder and deletes every third one it added.
                let name = format!("w{i}/f{j}");
                let mut ops = vec![file_op(&name, b"x")];
                if j % 3 == 2 {
                    let victim = format!("w{i}/f{}", j - 1);
                    ops.push(json!({"key": "deletedFile", "value": {"path": victim}}));
                    live.remove(&victim);
                }
                let resp = call_service(
                    app,
                    TestRequest::post()
                        .uri("/api/models/c/race/commit/main")
                        .insert_header(("Authorization", format!("Bearer {tok}")))
                        .set_payload(ndjson("w", None, &ops))
                        .to_request(),
                )
                .await;
                assert_eq!(resp.status(), StatusCode::OK);
                live.insert(name);
            }
            live
        }
    });
    let want: BTreeSet<String> = join_all(writers).await.into_iter().flatten().collect();
    let (files, history) = files_and_history(&app, &tok).await;
    let got: BTreeSet<String> = files
        .into_iter()
        .filter(|f| f != ".gitattributes")
        .collect();
    assert_eq!(got, want);
    assert_eq!(history.len(), WRITERS * 20 + 1);
    // Every ref move was a compare-and-swap from the previous head.
    let log: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT old_oid, new_oid FROM ref_log WHERE name = 'refs/heads/main' ORDER BY id",
    )
    .fetch_all(&t.state.db)
    .await
    .unwrap();
    for w in log.windows(2) {
        assert_eq!(w[1].0, w[0].1, "ref log is a chain");
    }
}
