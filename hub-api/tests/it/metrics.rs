//! `GET /metrics` (issue 14, observability): real requests through the
//! production app move the counters they should, with the route *pattern*,
//! method and status as labels; the gateway counts its calls, tokens and
//! in-flight requests per endpoint and forwards the request id to the
//! worker; the scheduler publishes its decisions, leadership and the fleet's
//! states; only site admins may scrape the API listener.

use crate::common::{bearer, call, create_repo, json_of};
use actix_web::test::TestRequest;
use hub_testkit::{app, ndjson, StandInWorker, TestState};
use serde_json::json;
use sha2::Digest;
use std::collections::HashMap;

/// One scrape: every sample by name and its labels (sorted).
struct Scrape(HashMap<(String, Vec<(String, String)>), f64>);

impl Scrape {
    /// Parses the text format (enough of it for these tests; the conformance
    /// suite reads it with `prometheus_client`'s parser).
    fn parse(text: &str) -> Self {
        let mut out = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Vec::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = Vec::new();
                    let mut rest = body;
                    while !rest.is_empty() {
                        let (k, after) = rest.split_once("=\"").expect("label");
                        let mut value = String::new();
                        let mut chars = after.char_indices();
                        let mut end = 0;
                        while let Some((i, c)) = chars.next() {
                            match c {
                                '\\' => {
                                    let (_, n) = chars.next().expect("escape");
                                    value.push(if n == 'n' { '\n' } else { n });
                                }
                                '"' => {
                                    end = i + 1;
                                    break;
                                }
                                c => value.push(c),
                            }
                        }
                        labels.push((k.to_string(), value));
                        rest = after[end..].trim_start_matches(',');
                    }
                    labels.sort();
                    (name.to_string(), labels)
                }
            };
            let v: f64 = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().expect("sample value")
            };
            out.insert((name, labels), v);
        }
        Self(out)
    }

    /// The sample with exactly these labels (0 when absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.0.get(&(name.to_string(), l)).copied().unwrap_or(0.0)
    }

    fn has_family(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }
}

async fn scrape(app: &impl crate::common::App, admin: &str) -> Scrape {
    let (st, h, b) = call(
        app,
        TestRequest::get()
            .uri("/metrics")
            .insert_header(bearer(admin)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        h.get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(std::str::from_utf8(&b).unwrap())
}

const COMMIT_ROUTE: &str = "/api/{kind}/{ns}/{name}/commit/{rev}";
const RESOLVE_ROUTE: &str = "/{ns}/{name}/resolve/{rev}/{path}";

#[actix_web::test]
async fn requests_commits_and_lfs_move_their_counters() {
    let t = TestState::new().await;
    let (_, admin) = t.user("root", true, &["read", "admin"]).await;
    let (_, tok) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;

    // Only site admins read metrics on the API listener.
    let (st, _, _) = call(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(st, 401);
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/metrics")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 403);
    let before = scrape(&app, &admin).await;
    for family in [
        "paddock_http_requests_total",
        "paddock_http_requests_in_flight",
        "paddock_commits_total",
        "paddock_scheduler_leader",
        "paddock_database_available",
        "paddock_build_info",
    ] {
        // Families with series from the start (unlabelled, or the 401 and 403 above).
        assert!(before.has_family(family), "{family} missing");
    }
    assert_eq!(
        before.get(
            "paddock_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(before.get("paddock_database_available", &[]), 1.0);

    // A commit: counted as created, under the commit route's pattern, with its body bytes.
    create_repo(&app, &tok, "bob/m", false).await;
    let body = ndjson(
        "add",
        None,
        &[hub_testkit::file_op("README.md", b"# hello metrics\n")],
    );
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/bob/m/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let first = json_of(&b)["commitOid"].as_str().unwrap().to_string();
    // A stale parent: a conflict.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/bob/m/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson(
                "stale",
                Some(&"0".repeat(40)),
                &[hub_testkit::file_op("a.txt", b"a")],
            )),
    )
    .await;
    assert!(st == 409 || st == 412, "stale parent answered {st}");

    // An LFS upload through the batch API's signed link, then a download of it.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let batch = |op: &str| {
        TestRequest::post()
            .uri("/bob/m.git/info/lfs/objects/batch")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/vnd.git-lfs+json"))
            .set_payload(
                json!({"operation": op, "transfers": ["basic"], "objects": [{"oid": sha, "size": content.len()}]})
                    .to_string(),
            )
    };
    let (st, _, b) = call(&app, batch("upload")).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let href = json_of(&b)["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    let (st, _, b) = call(
        &app,
        TestRequest::put().uri(&href).set_payload(content.clone()),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let lfs_line = json!({"key": "lfsFile", "value": {"path": "model.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/bob/m/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson("add lfs", Some(&first), &[lfs_line])),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = call(&app, batch("download")).await;
    assert_eq!(st, 200);
    let link = json_of(&b)["objects"][0]["actions"]["download"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    let (st, _, b) = call(&app, TestRequest::get().uri(&link)).await;
    assert_eq!((st, b.len()), (200, content.len()));
    // And over /resolve: the response body's bytes are counted as sent.
    let (st, _, b) = call(
        &app,
        TestRequest::get().uri("/bob/m/resolve/main/model.bin"),
    )
    .await;
    assert_eq!((st, b.len()), (200, content.len()));

    // 404s: a missing repo under its route's pattern; an unknown path as unmatched.
    let (st, _, _) = call(&app, TestRequest::get().uri("/api/models/nobody/nothing")).await;
    assert_eq!(st, 404);
    let (st, _, _) = call(&app, TestRequest::get().uri("/no/such/route/at/all/here")).await;
    assert_eq!(st, 404);

    let after = scrape(&app, &admin).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        moved("paddock_commits_total", &[("result", "created")]),
        2.0
    );
    assert_eq!(
        moved("paddock_commits_total", &[("result", "conflict")]),
        1.0
    );
    let commit_ok = [
        ("route", COMMIT_ROUTE),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(moved("paddock_http_requests_total", &commit_ok), 2.0);
    let commit_latency = [("route", COMMIT_ROUTE), ("method", "POST")];
    assert_eq!(
        moved(
            "paddock_http_request_duration_seconds_count",
            &commit_latency
        ),
        3.0
    );
    let inf = [("route", COMMIT_ROUTE), ("method", "POST"), ("le", "+Inf")];
    assert_eq!(
        moved("paddock_http_request_duration_seconds_bucket", &inf),
        3.0
    );
    assert!(
        moved(
            "paddock_http_received_bytes_total",
            &[("route", COMMIT_ROUTE)]
        ) >= body.len() as f64,
        "commit body bytes not counted"
    );
    assert_eq!(
        moved("paddock_lfs_transfers_total", &[("operation", "upload")]),
        1.0
    );
    assert_eq!(
        moved("paddock_lfs_transfers_total", &[("operation", "download")]),
        1.0
    );
    assert_eq!(
        moved(
            "paddock_lfs_transfer_bytes_total",
            &[("operation", "upload")]
        ),
        content.len() as f64
    );
    assert_eq!(
        moved(
            "paddock_http_received_bytes_total",
            &[("route", "/lfs/upload/{session}")]
        ),
        content.len() as f64
    );
    assert!(
        moved("paddock_http_sent_bytes_total", &[("route", RESOLVE_ROUTE)]) >= content.len() as f64,
        "download bytes not counted under {RESOLVE_ROUTE}"
    );
    assert_eq!(
        moved(
            "paddock_http_requests_total",
            &[
                ("route", "/api/{kind}/{ns}/{name}"),
                ("method", "GET"),
                ("status", "404")
            ]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "paddock_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    // No raw path is ever a label.
    assert!(
        !after.0.keys().any(|(_, l)| l
            .iter()
            .any(|(_, v)| v.contains("bob/m") || v.contains("nobody"))),
        "a raw path leaked into a label"
    );
    assert_eq!(
        after.get("paddock_http_requests_in_flight", &[]),
        1.0,
        "the scrape itself"
    );
}

#[actix_web::test]
async fn the_gateway_counts_calls_tokens_and_forwards_the_request_id() {
    let t = TestState::new().await;
    let (_, admin) = t.user("root", true, &["read", "admin"]).await;
    let (owner_id, owner) = t.user("owner", false, &["read", "write"]).await;
    let org = t.org("acme", owner_id).await;
    let worker = StandInWorker::start();
    hub_testkit::ready_endpoint(&t.state.db, org, "emb", "protected", &worker).await;
    let app = app(&t.state).await;
    for i in 0..3 {
        let (st, h, b) = call(
            &app,
            TestRequest::post()
                .uri("/endpoints/acme/emb/v1/embeddings")
                .insert_header(bearer(&owner))
                .insert_header(("X-Request-Id", format!("trace-{i}")))
                .insert_header(("Content-Type", "application/json"))
                .set_payload(r#"{"input": ["hi"]}"#),
        )
        .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(h.get("x-request-id").unwrap(), &format!("trace-{i}"));
    }
    // The worker saw the caller's request ids.
    assert_eq!(
        *worker.request_ids.lock().unwrap(),
        vec!["trace-0", "trace-1", "trace-2"]
    );
    let m = scrape(&app, &admin).await;
    let ep = ("endpoint", "acme/emb");
    assert_eq!(
        m.get("paddock_endpoint_requests_total", &[ep, ("status", "200")]),
        3.0
    );
    assert_eq!(
        m.get("paddock_endpoint_tokens_total", &[ep, ("kind", "prompt")]),
        15.0
    );
    assert_eq!(
        m.get(
            "paddock_endpoint_tokens_total",
            &[ep, ("kind", "generated")]
        ),
        0.0
    );
    assert_eq!(
        m.get("paddock_endpoint_request_duration_seconds_count", &[ep]),
        3.0
    );
    // Every answer was read to its end: nothing in flight or waiting.
    assert!(m.has_family("paddock_endpoint_requests_in_flight"));
    assert_eq!(m.get("paddock_endpoint_requests_in_flight", &[ep]), 0.0);
    assert_eq!(m.get("paddock_endpoint_queued_requests", &[ep]), 0.0);
    assert_eq!(
        m.get(
            "paddock_http_requests_total",
            &[
                ("route", "/endpoints/{ns}/{name}/{tail}"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        3.0
    );
    worker.stop().await;
}

/// A cold endpoint's call is held (queued) until a replica is ready; the
/// gauge shows it while it waits and drops back when it is answered.
#[actix_web::test]
async fn a_call_held_for_a_cold_endpoint_is_counted_as_queued() {
    let t = TestState::new().await;
    let (owner_id, owner) = t.user("owner", false, &["read", "write"]).await;
    let org = t.org("acme", owner_id).await;
    let worker = StandInWorker::start();
    let (endpoint_id, replica) =
        hub_testkit::ready_endpoint(&t.state.db, org, "cold", "protected", &worker).await;
    sqlx::query("UPDATE replicas SET status = 'loading' WHERE id = $1")
        .bind(replica)
        .execute(&t.state.db)
        .await
        .unwrap();
    t.state
        .live
        .set_wake_poll(std::time::Duration::from_millis(50));
    let app = std::rc::Rc::new(app(&t.state).await);
    let held = {
        let (app, owner) = (app.clone(), owner.clone());
        actix_web::rt::spawn(async move {
            call(
                &*app,
                TestRequest::post()
                    .uri("/endpoints/acme/cold/v1/embeddings")
                    .insert_header(bearer(&owner))
                    .insert_header(("Content-Type", "application/json"))
                    .set_payload(r#"{"input": ["hi"]}"#),
            )
            .await
            .0
        })
    };
    let queued = || t.state.metrics.endpoint_queued.get(&["acme/cold"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while queued() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the held call was never counted as queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("UPDATE replicas SET status = 'running' WHERE endpoint_id = $1")
        .bind(endpoint_id)
        .execute(&t.state.db)
        .await
        .unwrap();
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(queued(), 0);
    assert_eq!(t.state.metrics.endpoint_in_flight.get(&["acme/cold"]), 0);
    worker.stop().await;
}

#[actix_web::test]
async fn the_scheduler_publishes_leadership_decisions_and_fleet_states() {
    let t = TestState::new().await;
    let (_, admin) = t.user("root", true, &["read", "admin"]).await;
    let (owner_id, _) = t.user("owner", false, &["read", "write"]).await;
    let org = t.org("acme", owner_id).await;
    let worker = StandInWorker::start();
    let (endpoint_id, _) =
        hub_testkit::ready_endpoint(&t.state.db, org, "emb", "protected", &worker).await;
    // Two replicas wanted, one worker: the second cannot be placed.
    sqlx::query("UPDATE endpoints SET min_replicas = 2, target_replicas = 2 WHERE id = $1")
        .bind(endpoint_id)
        .execute(&t.state.db)
        .await
        .unwrap();
    hub_api::scheduler::spawn(t.state.clone(), t.db.url.clone());
    let app = app(&t.state).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let m = loop {
        let m = scrape(&app, &admin).await;
        if m.get("paddock_scheduler_ticks_total", &[("result", "ok")]) >= 1.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never ticked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(m.get("paddock_scheduler_leader", &[]), 1.0);
    assert!(
        m.get(
            "paddock_scheduler_decisions_total",
            &[("decision", "unplaceable")]
        ) >= 1.0
    );
    assert!(m.get("paddock_scheduler_tick_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(m.get("paddock_workers", &[("state", "ready")]), 1.0);
    assert_eq!(m.get("paddock_workers", &[("state", "late")]), 0.0);
    assert_eq!(
        m.get("paddock_endpoint_replicas", &[("state", "running")]),
        1.0
    );
    assert_eq!(
        m.get("paddock_endpoint_replicas", &[("state", "failed")]),
        0.0
    );
    worker.stop().await;
}
