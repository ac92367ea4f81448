//! The gateway's hot path and its caches (issue 19): a warm call makes no
//! database round trip, and every cache is invalidated within its documented
//! bound: at once on the replica that made the change, within the TTL on
//! another replica over the same database (a second app with its own caches).

use actix_web::test::{call_service, TestRequest};
use hub_api::db::namespaces::Role;
use hub_testkit::{StandInWorker, TestState};
use std::time::{Duration, Instant};

const PATH: &str = "/endpoints/acme/emb/v1/embeddings";

/// An org `acme` (owner `owner`), a member `bob` (role read) whose token
/// `call` has the inference scope, and a protected endpoint `acme/emb`
/// served by a stand-in worker.
struct Setup {
    t: TestState,
    worker: StandInWorker,
    owner: String,
    bob_id: i64,
    org_id: i64,
    bob_call: String,
    bob_call_id: i64,
    bob_write: String,
    endpoint_id: i64,
}

async fn setup() -> Setup {
    let t = TestState::new().await;
    let (owner_id, owner) = t.user("owner", false, &["read", "write"]).await;
    let org_id = t.org("acme", owner_id).await;
    let (bob_id, bob_write) = t.user("bob", false, &["read", "write"]).await;
    hub_api::db::namespaces::set_member(&t.state.db, org_id, bob_id, Role::Read)
        .await
        .unwrap();
    let (bob_call_id, bob_call) =
        hub_api::admin::create_token(&t.state.db, bob_id, "call", &["inference".into()], None)
            .await
            .unwrap();
    let worker = StandInWorker::start();
    let (endpoint_id, _) =
        hub_testkit::ready_endpoint(&t.state.db, org_id, "emb", "protected", &worker).await;
    Setup {
        t,
        worker,
        owner,
        bob_id,
        org_id,
        bob_call,
        bob_call_id,
        bob_write,
        endpoint_id,
    }
}

fn call(token: &str) -> actix_http::Request {
    TestRequest::post()
        .uri(PATH)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(r#"{"input": ["hi"]}"#)
        .to_request()
}

/// The replica that served a call.
fn replica_of(r: &actix_web::dev::ServiceResponse) -> String {
    r.headers()
        .get("X-Paddock-Replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Calls until `want` answers, at most `bound` (+ slack for a slow machine);
/// returns how long it took.
async fn until_status<S>(app: &S, token: &str, want: u16, bound: Duration) -> Duration
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let start = Instant::now();
    let slack = Duration::from_millis(700);
    loop {
        let st = call_service(app, call(token)).await.status().as_u16();
        if st == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound + slack,
            "still {st} after {:?}, the bound is {bound:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A warm endpoint and a known token need no database: after one call warms
/// the caches, the pool is closed (every query now fails), and calls still
/// succeed and reach the worker. A query on the hot path would turn them into
/// 5xx.
#[actix_web::test]
async fn a_warm_call_makes_no_database_round_trip() {
    let s = setup().await;
    let app = hub_testkit::app(&s.t.state).await;
    let r = call_service(&app, call(&s.bob_call)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.worker.calls(), 1);
    // Let the first usage flush pass, so the closed pool only meets the hot path.
    tokio::time::sleep(Duration::from_millis(300)).await;

    s.t.state.db.close().await;
    assert!(s.t.state.db.is_closed());
    for i in 0..25 {
        let r = call_service(&app, call(&s.bob_call)).await;
        assert_eq!(r.status(), 200, "warm call {i} with the database closed");
        // Past the refresh point of the route cache: a stale entry still answers
        // while its background reload fails.
        if i == 10 {
            tokio::time::sleep(hub_api::gateway::ROUTE_REFRESH).await;
        }
    }
    assert_eq!(s.worker.calls(), 26);
    // The usage of those calls is still buffered (the database refused it), not lost.
    assert!(s.t.state.live.usage_pending() >= 25);
    s.worker.stop().await;
}

/// Revoking a token: refused at once by the replica that revoked it, and by
/// another replica within the token cache's TTL.
#[actix_web::test]
async fn a_revoked_token_is_refused_within_the_bound() {
    let s = setup().await;
    let replica = s.t.replica().await;
    let a = hub_testkit::app(&s.t.state).await;
    let b = hub_testkit::app(&replica).await;
    for app in [&a, &b] {
        assert_eq!(call_service(app, call(&s.bob_call)).await.status(), 200);
    }
    let r = call_service(
        &a,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{}", s.bob_call_id))
            .insert_header(("Authorization", format!("Bearer {}", s.bob_write)))
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 204);
    // This replica: the very next call.
    assert_eq!(call_service(&a, call(&s.bob_call)).await.status(), 401);
    // The other: within the TTL (default 5 s), calling all along.
    let ttl = Duration::from_secs(5);
    let took = until_status(&b, &s.bob_call, 401, ttl).await;
    eprintln!("revocation seen by the other replica after {took:?}");
    assert_eq!(call_service(&b, call(&s.bob_call)).await.status(), 401);
    s.worker.stop().await;
}

/// Removing a member: their calls are refused (404, as for outsiders) at once
/// here, within the TTL on another replica.
#[actix_web::test]
async fn a_removed_member_is_refused_within_the_bound() {
    let s = setup().await;
    let replica = s.t.replica().await;
    let a = hub_testkit::app(&s.t.state).await;
    let b = hub_testkit::app(&replica).await;
    for app in [&a, &b] {
        assert_eq!(call_service(app, call(&s.bob_call)).await.status(), 200);
    }
    let r = call_service(
        &a,
        TestRequest::delete()
            .uri("/api/v1/orgs/acme/members/bob")
            .insert_header(("Authorization", format!("Bearer {}", s.owner)))
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 204, "{:?}", actix_web::test::read_body(r).await);
    assert_eq!(call_service(&a, call(&s.bob_call)).await.status(), 404);
    let took = until_status(&b, &s.bob_call, 404, Duration::from_secs(5)).await;
    eprintln!("membership change seen by the other replica after {took:?}");
    // Back in (straight in the database, as another replica would): admitted again.
    hub_api::db::namespaces::set_member(&s.t.state.db, s.org_id, s.bob_id, Role::Read)
        .await
        .unwrap();
    until_status(&b, &s.bob_call, 200, Duration::from_secs(5)).await;
    s.worker.stop().await;
}

/// Pausing, scaling down and deleting an endpoint: not routed to, at once on
/// the replica that did it (or whose scheduler did), within `ROUTE_TTL` on
/// another.
#[actix_web::test]
async fn paused_scaled_and_deleted_endpoints_are_not_routed_to() {
    let s = setup().await;
    let replica = s.t.replica().await;
    let a = hub_testkit::app(&s.t.state).await;
    let b = hub_testkit::app(&replica).await;
    let bound = hub_api::gateway::ROUTE_TTL;
    for app in [&a, &b] {
        assert_eq!(call_service(app, call(&s.bob_call)).await.status(), 200);
    }

    // Pause (through replica A's API): A answers 503 at once, B within the bound.
    let owner_req = |method: actix_web::http::Method, uri: &str| {
        TestRequest::default()
            .method(method)
            .uri(uri)
            .insert_header(("Authorization", format!("Bearer {}", s.owner)))
            .to_request()
    };
    let r = call_service(
        &a,
        owner_req(
            actix_web::http::Method::POST,
            "/api/v1/endpoints/acme/emb/pause",
        ),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    let before = s.worker.calls();
    assert_eq!(call_service(&a, call(&s.bob_call)).await.status(), 503);
    let took = until_status(&b, &s.bob_call, 503, bound).await;
    eprintln!("pause seen by the other replica after {took:?}");
    // No call reached the worker once the pause was seen (B's at most during the bound).
    let during = s.worker.calls() - before;
    assert_eq!(call_service(&a, call(&s.bob_call)).await.status(), 503);
    assert_eq!(call_service(&b, call(&s.bob_call)).await.status(), 503);
    assert_eq!(s.worker.calls() - before, during);

    // Resume; a second replica on a second worker; then the first is scaled
    // away (its row deleted, as the leading scheduler of another replica does):
    // after the bound every call goes to the second.
    let r = call_service(
        &a,
        owner_req(
            actix_web::http::Method::POST,
            "/api/v1/endpoints/acme/emb/resume",
        ),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    sqlx::query("UPDATE replicas SET status = 'running' WHERE endpoint_id = $1")
        .bind(s.endpoint_id)
        .execute(&s.t.state.db)
        .await
        .unwrap();
    let second = StandInWorker::start();
    let r2 = hub_testkit::add_replica(&s.t.state.db, s.endpoint_id, &second).await;
    until_status(&a, &s.bob_call, 200, bound).await;
    until_status(&b, &s.bob_call, 200, bound).await;
    sqlx::query("DELETE FROM replicas WHERE endpoint_id = $1 AND id <> $2")
        .bind(s.endpoint_id)
        .bind(r2)
        .execute(&s.t.state.db)
        .await
        .unwrap();
    // Once the bound has passed, neither replica routes to the removed one.
    tokio::time::sleep(bound + Duration::from_millis(100)).await;
    let first_calls = s.worker.calls();
    for app in [&a, &b] {
        for _ in 0..5 {
            let r = call_service(app, call(&s.bob_call)).await;
            assert_eq!(r.status(), 200);
            assert_eq!(replica_of(&r), r2.to_string());
        }
    }
    assert_eq!(
        s.worker.calls(),
        first_calls,
        "the removed replica got no call"
    );

    // Delete (through A): 404 at once on A, within the bound on B.
    let r = call_service(
        &a,
        owner_req(
            actix_web::http::Method::DELETE,
            "/api/v1/endpoints/acme/emb",
        ),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(call_service(&a, call(&s.bob_call)).await.status(), 404);
    let took = until_status(&b, &s.bob_call, 404, bound).await;
    eprintln!("deletion seen by the other replica after {took:?}");
    s.worker.stop().await;
    second.stop().await;
}

/// Starts an app's notification listener (as `serve` does) and waits until it
/// listens, so what is published from now on reaches it.
pub(crate) async fn listening(state: &hub_api::state::AppState, url: &str) {
    hub_api::scheduler::spawn_listener(state.clone(), url.to_string());
    let start = Instant::now();
    while state.scheduler.listens() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no listener");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With invalidations published (`signals`), another replica refuses a
/// revoked token within a notification's delivery, far under the token
/// cache's TTL (5 s) and its refresh point (1 s): without the NOTIFY, B's
/// entry, loaded just before the revocation, would answer 200 for a second.
#[actix_web::test]
async fn a_revoked_token_is_refused_by_another_replica_at_once() {
    let s = setup().await;
    let replica = s.t.replica().await;
    listening(&s.t.state, &s.t.db.url).await;
    listening(&replica, &s.t.db.url).await;
    let a = hub_testkit::app(&s.t.state).await;
    let b = hub_testkit::app(&replica).await;
    for app in [&a, &b] {
        assert_eq!(call_service(app, call(&s.bob_call)).await.status(), 200);
    }
    let r = call_service(
        &a,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{}", s.bob_call_id))
            .insert_header(("Authorization", format!("Bearer {}", s.bob_write)))
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 204);
    let bound = Duration::from_millis(500);
    let took = until_status(&b, &s.bob_call, 401, bound).await;
    eprintln!("revocation seen by the other replica after {took:?}");
    assert!(took < bound, "took {took:?}, the bound is {bound:?}");
    s.worker.stop().await;
}

/// Pausing through one replica: another stops routing to the endpoint within
/// a notification's delivery, under `ROUTE_REFRESH` (0.5 s) and far under
/// `ROUTE_TTL` (2 s); so does a member's removal for their calls.
#[actix_web::test]
async fn another_replica_stops_routing_a_paused_endpoint_at_once() {
    let s = setup().await;
    let replica = s.t.replica().await;
    listening(&s.t.state, &s.t.db.url).await;
    listening(&replica, &s.t.db.url).await;
    let a = hub_testkit::app(&s.t.state).await;
    let b = hub_testkit::app(&replica).await;
    for app in [&a, &b] {
        assert_eq!(call_service(app, call(&s.bob_call)).await.status(), 200);
    }
    let r = call_service(
        &a,
        TestRequest::post()
            .uri("/api/v1/endpoints/acme/emb/pause")
            .insert_header(("Authorization", format!("Bearer {}", s.owner)))
            .to_request(),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    let bound = Duration::from_millis(300);
    let took = until_status(&b, &s.bob_call, 503, bound).await;
    eprintln!("pause seen by the other replica after {took:?}");
    assert!(took < bound, "took {took:?}, the bound is {bound:?}");

    // Resumed and warm again on B; then bob is removed through A.
    let r = call_service(
        &a,
        TestRequest::post()
            .uri("/api/v1/endpoints/acme/emb/resume")
            .insert_header(("Authorization", format!("Bearer {}", s.owner)))
            .to_request(),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    sqlx::query("UPDATE replicas SET status = 'running' WHERE endpoint_id = $1")
        .bind(s.endpoint_id)
        .execute(&s.t.state.db)
        .await
        .unwrap();
    until_status(&b, &s.bob_call, 200, Duration::from_secs(3)).await;
    let r = call_service(
        &a,
        TestRequest::delete()
            .uri("/api/v1/orgs/acme/members/bob")
            .insert_header(("Authorization", format!("Bearer {}", s.owner)))
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 204);
    let bound = Duration::from_millis(500);
    let took = until_status(&b, &s.bob_call, 404, bound).await;
    eprintln!("membership change seen by the other replica after {took:?}");
    assert!(took < bound, "took {took:?}, the bound is {bound:?}");
    s.worker.stop().await;
}

/// A request held for a cold endpoint is answered at its replica's ready
/// signal (a NOTIFY when the worker reports it running), not at a re-read:
/// with the fallback re-read set to 30 s, each of 5 held requests is still
/// answered within a second of the replica turning ready, the median well
/// under the old 200 ms re-read.
#[actix_web::test]
async fn a_held_request_is_answered_when_the_replica_is_ready() {
    let s = setup().await;
    listening(&s.t.state, &s.t.db.url).await;
    s.t.state.live.set_wake_poll(Duration::from_secs(30));
    let app = hub_testkit::app(&s.t.state).await;
    let (replica, worker): (uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("SELECT id, worker_id FROM replicas WHERE endpoint_id = $1")
            .bind(s.endpoint_id)
            .fetch_one(&s.t.state.db)
            .await
            .unwrap();
    let mut took = Vec::new();
    for round in 0..5 {
        // Cold: the replica is loading, and this process has no route cached.
        sqlx::query("UPDATE replicas SET status = 'loading' WHERE id = $1")
            .bind(replica)
            .execute(&s.t.state.db)
            .await
            .unwrap();
        s.t.state.live.forget_routes();
        let held = async {
            let r = call_service(&app, call(&s.bob_call)).await;
            (r.status().as_u16(), Instant::now())
        };
        let ready = async {
            // Once the request waits for the signal (past its immediate re-read)…
            let start = Instant::now();
            while s.t.state.live.ready_waiters() == 0 {
                assert!(start.elapsed() < Duration::from_secs(10), "never held");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            // …the worker reports the replica running (what the heartbeat route does).
            let at = Instant::now();
            hub_api::db::endpoints::update_replica(
                &s.t.state.db,
                replica,
                worker,
                "running",
                None,
                0,
                0,
            )
            .await
            .unwrap();
            at
        };
        let ((status, answered), ready_at) = futures::join!(held, ready);
        assert_eq!(status, 200, "round {round}");
        let t = answered.saturating_duration_since(ready_at);
        eprintln!("round {round}: answered {t:?} after the replica was ready");
        assert!(t < Duration::from_secs(1), "round {round}: {t:?}");
        took.push(t);
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(150),
        "median {median:?} of {took:?}"
    );
    assert_eq!(
        s.t.state.live.ready_waiters(),
        0,
        "a waiter was left behind"
    );
    s.worker.stop().await;
}

/// Rate limits with `--shared-rate-limits`: two replicas over one database
/// admit the configured rate together, where two in-process limiters admit
/// twice the burst.
#[actix_web::test]
async fn shared_rate_limits_hold_across_replicas() {
    use hub_api::ratelimit::{Rate, RateDefaults, RateLimiter};
    let limiter = |shared: bool| {
        let l = RateLimiter::new(RateDefaults {
            token: Rate {
                per_s: 2,
                burst: 10,
            },
            anonymous: Rate {
                per_s: 2,
                burst: 10,
            },
            trust_forwarded_for: false,
        });
        std::sync::Arc::new(if shared { l.shared() } else { l })
    };
    let admitted = |shared: bool| async move {
        let mut t = TestState::new().await;
        t.state.tenancy.rate = limiter(shared);
        let mut other = t.replica().await;
        other.tenancy.rate = limiter(shared);
        let (a, b) = (
            hub_testkit::app(&t.state).await,
            hub_testkit::app(&other).await,
        );
        let started = std::time::Instant::now();
        let mut ok = 0;
        for i in 0..40 {
            let req = actix_web::test::TestRequest::get()
                .uri("/api/models")
                .to_request();
            let resp = if i % 2 == 0 {
                actix_web::test::call_service(&a, req).await
            } else {
                actix_web::test::call_service(&b, req).await
            };
            match resp.status().as_u16() {
                200 => ok += 1,
                429 => {}
                s => panic!("unexpected status {s}"),
            }
        }
        (ok, started.elapsed().as_secs_f64())
    };
    let (apart, _) = admitted(false).await;
    assert_eq!(apart, 20, "each replica's own bucket admits its burst");
    let (together, secs) = admitted(true).await;
    // The burst, what the rate refilled meanwhile, and one lease per replica.
    let bound = 10.0 + 2.0 * secs + 2.0;
    assert!(
        together >= 10 && (together as f64) <= bound,
        "{together} admitted in {secs:.2} s (bound {bound:.1})"
    );
}

/// An endpoint deleted while its usage is still buffered: the batch is
/// written all the same (the row keeps the endpoint's name), and other
/// endpoints' usage with it. A foreign key on `usage_records.endpoint_id` (now `usage_counts`)
/// made that batch fail, and every later batch with it (the failed one is
/// kept for a retry), so one tenant deleting an endpoint it had just called
/// stopped usage metering for every tenant. Deleting the namespace still
/// takes its usage rows with it.
#[actix_web::test]
async fn usage_of_an_endpoint_deleted_before_the_flush_is_written() {
    let s = setup().await;
    let other = StandInWorker::start();
    let (owner2_id, owner2) = s.t.user("other", false, &["read", "write"]).await;
    let org2 = s.t.org("beta", owner2_id).await;
    hub_testkit::ready_endpoint(&s.t.state.db, org2, "emb", "protected", &other).await;
    let app = hub_testkit::app(&s.t.state).await;
    let live = s.t.state.live.clone();

    let held = live.hold_usage_flushes().await;
    let r = call_service(&app, call(&s.bob_call)).await;
    assert_eq!(r.status(), 200);
    // Usage is recorded when the relayed body ends.
    actix_web::test::read_body(r).await;
    let r = call_service(
        &app,
        TestRequest::delete()
            .uri("/api/v1/endpoints/acme/emb")
            .insert_header(("Authorization", format!("Bearer {}", s.owner)))
            .to_request(),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = call_service(
        &app,
        TestRequest::post()
            .uri("/endpoints/beta/emb/v1/embeddings")
            .insert_header(("Authorization", format!("Bearer {owner2}")))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(r#"{"input": ["hi"]}"#)
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 200);
    actix_web::test::read_body(r).await;
    assert_eq!(live.usage_pending(), 2, "both calls buffered, none written");
    drop(held);
    live.flush_usage(&s.t.state.db).await;
    assert_eq!(live.usage_pending(), 0, "the batch was written");
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT namespace_id, endpoint_name FROM usage_counts ORDER BY namespace_id = $1 DESC",
    )
    .bind(s.org_id)
    .fetch_all(&s.t.state.db)
    .await
    .unwrap();
    assert_eq!(rows, vec![(s.org_id, "emb".into()), (org2, "emb".into())]);

    hub_api::db::namespaces::delete_namespace(&s.t.state.db, s.org_id)
        .await
        .unwrap();
    let left: Vec<(i64,)> = sqlx::query_as("SELECT namespace_id FROM usage_counts")
        .fetch_all(&s.t.state.db)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![(org2,)],
        "the deleted namespace's usage went with it"
    );
    s.worker.stop().await;
    other.stop().await;
}

/// Migration `20261206000002` rolls the per-call usage rows up into
/// `usage_counts` and the usage API reads the same totals and (within a
/// bucket) the same percentiles from them.
#[tokio::test]
async fn per_call_usage_rows_are_rolled_up_by_the_migration() {
    const ROLL_UP: i64 = 20261206000002;
    let db = hub_testkit::test_db().await;
    sqlx::query("DROP SCHEMA public CASCADE")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("CREATE SCHEMA public")
        .execute(&db.pool)
        .await
        .unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            hub_api::db::MIGRATOR
                .iter()
                .filter(|m| m.version < ROLL_UP)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&db.pool).await.unwrap();
    let ns: i64 = sqlx::query_scalar(
        "INSERT INTO namespaces (name, kind) VALUES ('acme', 'org') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // 100 calls of 1..=100 ms in one second, two failing; one call the next day.
    sqlx::query(
        "INSERT INTO usage_records (namespace_id, endpoint_id, endpoint_name, token_id, at, input_tokens,
                                    output_tokens, latency_ms, status, request_id)
         SELECT $1, 7, 'emb', 3, '2026-12-01 10:00:00.5+00'::timestamptz, 4, 1, i, CASE WHEN i > 98 THEN 500 ELSE 200 END,
                gen_random_uuid()
         FROM generate_series(1, 100) AS i
         UNION ALL
         SELECT $1, 7, 'emb', NULL, '2026-12-02 00:00:01+00'::timestamptz, 10, 0, 0.0005, 200, NULL",
    )
    .bind(ns)
    .execute(&db.pool)
    .await
    .unwrap();
    hub_api::db::migrate(&db.pool).await.unwrap();

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_counts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "one row per (token, status, second)");
    let from = "2026-12-01T00:00:00Z".parse().unwrap();
    let to = "2026-12-03T00:00:00Z".parse().unwrap();
    let u = hub_api::db::endpoints::usage(&db.pool, ns, from, to)
        .await
        .unwrap();
    assert_eq!(u.len(), 2, "{u:?}");
    let d1 = &u[0];
    assert_eq!(d1.day.to_string(), "2026-12-01");
    assert_eq!(
        (d1.requests, d1.errors, d1.input_tokens, d1.output_tokens),
        (100, 2, 400, 100)
    );
    for (got, exact) in [
        (d1.latency_p50_ms, 50.0),
        (d1.latency_p95_ms, 95.0),
        (d1.latency_p99_ms, 99.0),
    ] {
        assert!((got - exact).abs() / exact < 0.045, "{got} vs {exact}");
    }
    // The migration's SQL buckets as `usage_rollup::bucket_of` does.
    let hist: Vec<(i16, i32)> = sqlx::query_as(
        "SELECT h.b, h.c FROM usage_counts, unnest(latency_buckets, latency_counts) AS h(b, c)
         WHERE status = 200 AND at < '2026-12-02' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut expected: Vec<(i16, i32)> = Vec::new();
    for ms in 1..=98 {
        let b = hub_api::usage_rollup::bucket_of(ms as f64);
        match expected.last_mut() {
            Some(last) if last.0 == b => last.1 += 1,
            _ => expected.push((b, 1)),
        }
    }
    assert_eq!(hist, expected);
    let d2 = &u[1];
    assert_eq!((d2.requests, d2.input_tokens), (1, 10));
    assert!(d2.latency_p50_ms < 0.001, "{}", d2.latency_p50_ms);
}

/// The gateway's short path (`gateway::front`, which skips the middlewares
/// after the access log) keeps what those layers enforced: each token has its
/// own bucket (429 with Retry-After past the burst, the worker not called),
/// a malformed or unknown credential is a 401 and an anonymous caller of a
/// protected endpoint too (both answered by the whole stack), and the calls
/// are counted under the route table's label.
#[actix_web::test]
async fn gateway_calls_are_rate_limited_per_token_and_bad_credentials_refused() {
    use hub_api::ratelimit::{Rate, RateDefaults, RateLimiter};
    let mut s = setup().await;
    s.t.state.tenancy.rate = std::sync::Arc::new(RateLimiter::new(RateDefaults {
        token: Rate { per_s: 1, burst: 3 },
        // Bad credentials and anonymous calls share the client IP's bucket.
        anonymous: Rate { per_s: 1, burst: 3 },
        trust_forwarded_for: false,
    }));
    let app = hub_testkit::app(&s.t.state).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = call_service(&app, call(&s.bob_call)).await;
        if r.status() == 429 {
            let retry = r.headers().get("Retry-After").and_then(|v| v.to_str().ok());
            assert!(
                retry.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1)),
                "{retry:?}"
            );
        }
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    assert_eq!(
        s.worker.calls(),
        3,
        "a refused call never reaches the worker"
    );
    // Another token of the same user has a bucket of its own.
    let r = call_service(&app, call(&s.bob_write)).await;
    assert_eq!(r.status(), 200);

    for bad in ["pdk_not-a-real-token", "not a token at all"] {
        let r = call_service(&app, call(bad)).await;
        assert_eq!(r.status(), 401, "{bad}");
    }
    let anonymous = || {
        TestRequest::post()
            .uri(PATH)
            .insert_header(("Content-Type", "application/json"))
            .set_payload(r#"{"input": ["hi"]}"#)
            .to_request()
    };
    assert_eq!(call_service(&app, anonymous()).await.status(), 401);
    // The IP's bucket is spent now: the next anonymous call is refused first.
    assert_eq!(call_service(&app, anonymous()).await.status(), 429);
    assert_eq!(s.worker.calls(), 4);

    let m = &s.t.state.metrics;
    let route = "/endpoints/{ns}/{name}/{tail}";
    assert_eq!(m.http_requests.get(&[route, "POST", "200"]), 4);
    assert_eq!(m.http_requests.get(&[route, "POST", "429"]), 3);
    assert_eq!(m.http_requests.get(&[route, "POST", "401"]), 3);
    s.worker.stop().await;
}
