//! Failures of what the hub depends on (issue 13, items 4-6): the database
//! going away or running out of space, the disk filling up, the private
//! cluster outliving its owner. Each test makes the failure really happen (a
//! stopped PostgreSQL, a trigger raising SQLSTATE 53100 in the real database, a
//! reserve larger than the free space) and checks what a client sees. Signing
//! keys retired under the in-process worker: `paddock/tests/embedded_worker.rs`
//! (the hub's tests link no worker).

use crate::common::*;
use actix_web::test::TestRequest;
use hub_api::diskspace::{free_bytes, Reserve};
use hub_api::error::ApiError;
use hub_api::health::Health;
use hub_api::pgcluster::PgCluster;
use hub_testkit::TestState;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Real PostgreSQL errors: the connection-class ones are 503 with a code, the
/// others stay 500.
#[actix_web::test]
async fn database_errors_map_to_503_or_500_by_class() {
    let t = TestState::new().await;
    let raise = |code: &str| {
        format!("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$")
    };
    for code in [
        "53100", "53200", "53300", "57P01", "57P02", "57P03", "08006", "58030",
    ] {
        let e = sqlx::query(&raise(code))
            .execute(&t.state.db)
            .await
            .unwrap_err();
        let api = ApiError::from(e);
        assert_eq!(api.status().as_u16(), 503, "SQLSTATE {code}");
        assert_eq!(api.code(), "database_unavailable", "SQLSTATE {code}");
        let resp = actix_web::ResponseError::error_response(&api);
        assert_eq!(resp.headers().get("Retry-After").unwrap(), "1");
    }
    for code in ["23505", "42601", "XX000"] {
        let e = sqlx::query(&raise(code))
            .execute(&t.state.db)
            .await
            .unwrap_err();
        assert_eq!(ApiError::from(e).status().as_u16(), 500, "SQLSTATE {code}");
    }
    // The same through `ApiError::internal` (errors wrapped in another error).
    let e = sqlx::query(&raise("57P01"))
        .execute(&t.state.db)
        .await
        .unwrap_err();
    let wrapped = anyhow::Error::new(e).context("rotating keys");
    assert_eq!(ApiError::internal(wrapped).code(), "database_unavailable");
}

/// PostgreSQL out of disk: a write that fails with SQLSTATE 53100 is a 503
/// with Retry-After (was 500), and `/readyz` stops saying ready (was 200).
#[actix_web::test]
async fn database_out_of_disk_is_503_and_not_ready() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = hub_testkit::app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"a")]).await;
    let (st, _, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    // From now on every new ref fails the way a full disk makes PostgreSQL fail.
    sqlx::query(
        "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' \
         USING ERRCODE = 'disk_full'; END $$",
    )
    .execute(&t.state.db)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER disk_full BEFORE INSERT ON refs FOR EACH ROW EXECUTE FUNCTION disk_full()",
    )
    .execute(&t.state.db)
    .await
    .unwrap();
    let (st, h, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/branch/dev")
            .insert_header(bearer(&alice)),
    )
    .await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "database_unavailable");
    assert!(h.get("Retry-After").is_some());
    let started = Instant::now();
    let (st, _, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["database"], "out_of_resources");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Reads still work.
    let (st, _, _) = call(&app, TestRequest::get().uri("/alice/m/resolve/main/a.txt")).await;
    assert_eq!(st, 200);
}

/// Below the disk reserve, writes are refused with 507 (the request never
/// reaches the database or the object store), reads go on, `/readyz` says why;
/// the storage layer refuses on its own too and leaves nothing behind.
#[actix_web::test]
async fn below_the_disk_reserve_writes_are_507() {
    let mut t = TestState::new().await;
    let dir = t.storage_dir.as_ref().unwrap().path().to_path_buf();
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    {
        let app = hub_testkit::app(&t.state).await;
        create_repo(&app, &alice, "alice/m", false).await;
        commit_files(&app, &alice, "alice/m", &[("a.txt", b"a")]).await;
    }
    let over = free_bytes(&dir).unwrap() + (1 << 30);
    let reserve = Reserve::new(vec![dir.clone()], over);
    t.state.health = Arc::new(Health::new(reserve.clone()));
    let app = hub_testkit::app(&t.state).await;
    let ops = [hub_testkit::file_op("b.txt", b"bbbb")];
    let (st, h, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main")
            .insert_header(bearer(&alice))
            .set_payload(hub_testkit::ndjson("b", None, &ops)),
    )
    .await;
    assert_eq!(st, 507, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "insufficient_storage");
    assert!(h.get("Retry-After").is_some());
    assert!(!String::from_utf8_lossy(&b).contains(&dir.display().to_string()));
    let (st, _, _) = call(&app, TestRequest::get().uri("/alice/m/resolve/main/a.txt")).await;
    assert_eq!(st, 200);
    let (st, _, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(st, 503);
    assert_eq!(json_of(&b)["disk"], "below_reserve");

    // The storage layer on its own (uploads that get past the first check).
    let storage = hub_api::storage::Storage::local(&dir)
        .unwrap()
        .with_reserve(reserve);
    let e = storage
        .write_bytes(bytes::Bytes::from_static(b"payload"))
        .await
        .unwrap_err();
    let api = ApiError::from(e);
    assert_eq!(api.status().as_u16(), 507);
    assert_eq!(api.code(), "insufficient_storage");
    let leftovers = walk(&dir.join("staging"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A throwaway cluster of this test's own (the shared one must keep running).
fn own_cluster_dir() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("paddock-fault-pg-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// PostgreSQL stops under a running hub: requests get 503 with a code within
/// a second (not after the pool's 5 s), `/readyz` answers 503 within a
/// second, and everything works again once the server is back.
#[actix_web::test]
async fn database_down_fails_fast_and_recovers() {
    let root = own_cluster_dir();
    let data = root.path().join("pg");
    let d = data.clone();
    // Durable settings: a crash must not lose acknowledged commits.
    let mut cluster = tokio::task::spawn_blocking(move || PgCluster::start(&d, false).unwrap())
        .await
        .unwrap();
    let url = cluster.url("postgres");
    let pool = hub_api::db::connect(&url, 8).await.unwrap();
    hub_api::db::migrate(&pool).await.unwrap();
    let storage_dir = tempfile::tempdir().unwrap();
    let state = hub_api::state::AppState {
        db: pool.clone(),
        storage: hub_api::storage::Storage::local(storage_dir.path()).unwrap(),
        public_url: "http://hub.test".into(),
        keys: hub_api::auth::jwt::KeyRing::load(pool.clone())
            .await
            .unwrap(),
        limits: Default::default(),
        live: Default::default(),
        tenancy: Default::default(),
        health: Default::default(),
        scheduler: Default::default(),
        facets: Default::default(),
        resolved: Default::default(),
        pack_entries: Default::default(),
        metrics: Default::default(),
    };
    let mut conn = pool.acquire().await.unwrap();
    let uid = hub_api::db::namespaces::create_user(&mut conn, "alice", None, None, false)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let (_, alice) =
        hub_api::admin::create_token(&pool, uid, "t", &["read".into(), "write".into()], None)
            .await
            .unwrap();
    hub_api::health::spawn_probe(state.clone());
    let app = hub_testkit::app(&state).await;
    create_repo(&app, &alice, "alice/m", false).await;

    // Stop PostgreSQL the hard way.
    let d = data.clone();
    tokio::task::spawn_blocking(move || {
        let pid = postmaster_pid(&d).unwrap();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        // Its backends notice and exit; wait until the socket stops answering.
    })
    .await
    .unwrap();
    let mut worst = Duration::ZERO;
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(7) {
        let offset = outage.elapsed();
        let started = Instant::now();
        let ops = [hub_testkit::file_op("x.txt", b"x")];
        let (st, h, b) = call(
            &app,
            TestRequest::post()
                .uri("/api/models/alice/m/commit/main")
                .insert_header(bearer(&alice))
                .set_payload(hub_testkit::ndjson("x", None, &ops)),
        )
        .await;
        let took = started.elapsed();
        *codes.entry(st).or_default() += 1;
        if st == 200 {
            continue; // before the backends noticed
        }
        assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json_of(&b)["code"], "database_unavailable");
        assert!(h.get("Retry-After").is_some());
        // A request already waiting for a connection when the server died may
        // wait out the pool's acquire timeout; once the probe has noticed
        // (within about a second), none may wait.
        if offset > Duration::from_millis(1500) {
            worst = worst.max(took);
        }
    }
    assert!(codes.get(&503).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a request during the outage took {worst:?}"
    );
    let started = Instant::now();
    let (st, _, b) = call(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["database"], "unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (st, _, _) = call(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!(st, 200);

    // Back: the hub's owner restarts the server (here, the cluster handle).
    let mut c2 = tokio::task::spawn_blocking(move || {
        let restarted = cluster.supervise().unwrap();
        (cluster, restarted)
    })
    .await
    .unwrap();
    assert!(c2.1, "supervise() restarts a dead postmaster");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, b) = call(&app, TestRequest::get().uri("/readyz")).await;
        if st == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again: {}",
            String::from_utf8_lossy(&b)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    commit_files(&app, &alice, "alice/m", &[("after.txt", b"after")]).await;
    pool.close().await;
    tokio::task::spawn_blocking(move || c2.0.stop_immediate())
        .await
        .unwrap();
}

/// The owner of the private cluster: a process that finds the cluster
/// running with no live owner (its hub was killed) adopts it and stops it on
/// exit; a process that attaches while an owner lives leaves it running.
#[test]
fn an_orphaned_cluster_is_adopted_and_stopped() {
    let root = own_cluster_dir();
    let data = root.path().join("pg");
    let mut first = PgCluster::start(&data, true).unwrap();
    assert!(first.is_owner());
    // An admin command while the owner lives: attaches, does not own.
    let second = PgCluster::start(&data, true).unwrap();
    assert!(!second.is_owner());
    drop(second);
    assert!(
        first.postmaster_alive(),
        "a non-owner must not stop the server"
    );
    // The owner dies without stopping the server (kill -9 of the hub).
    first.detach();
    drop(first);
    assert!(postmaster_pid(&data).is_some());
    let adopted = PgCluster::start(&data, true).unwrap();
    assert!(adopted.is_owner(), "an orphaned cluster is adopted");
    drop(adopted);
    let deadline = Instant::now() + Duration::from_secs(10);
    while postmaster_pid(&data).is_some() {
        assert!(
            Instant::now() < deadline,
            "the adopter stops the server on exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
