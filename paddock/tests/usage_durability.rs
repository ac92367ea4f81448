//! Usage records survive the hub process (issue 19): the real `hub-api`
//! binary, over a test database, proxying to a stand-in worker. A clean
//! shutdown (SIGTERM) loses no usage row; `kill -9` loses at most the last
//! `gateway::USAGE_FLUSH` of them. Here rather than in hub-api's tests, which
//! have no hub binary.

use hub_testkit::{StandInWorker, TestState};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The scheduler's leader lock (`hub_api::scheduler`): held by the test, so the
/// hub's scheduler stands by and leaves the stand-in endpoint as it is.
const LEADER_LOCK: i64 = 0x5041_4444_4f43_4b01;

struct Hub {
    child: KillOnDrop,
    url: String,
}

/// The hub's process, killed when dropped: a failing assertion must not leave it running.
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already gone after a wait: kill fails and wait returns the saved status.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_hub(db_url: &str, data: &std::path::Path) -> Hub {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hub-api"))
            .arg("--no-worker")
            .env("DATABASE_URL", db_url)
            .env("HUB_BIND", "127.0.0.1:0")
            .env("HUB_DATA_DIR", data)
            .env("HUB_HTTP_WORKERS", "2")
            .env("HUB_LOG", "warn")
            // One client calling as fast as it can: no rate limit.
            .env("HUB_RATE_LIMIT_TOKEN_RPS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hub-api"),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the hub exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("paddock: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Hub { child, url }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

async fn usage_calls(db: &sqlx::PgPool, endpoint: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(requests), 0)::bigint FROM usage_counts WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn call(http: &reqwest::Client, hub: &Hub, token: &str) {
    let r = http
        .post(format!("{}/endpoints/alice/emb/v1/embeddings", hub.url))
        .bearer_auth(token)
        .json(&serde_json::json!({"input": ["hi"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
}

/// A batch written twice (its first INSERT committed but the answer was lost, so the
/// gateway kept it for a retry: seen when a stopping hub's connection died mid-answer)
/// counts once, by the request ids.
#[tokio::test]
async fn a_usage_batch_written_twice_counts_once() {
    let t = TestState::new().await;
    let (alice, _) = t.user("alice", false, &["read"]).await;
    let worker = StandInWorker::start();
    let (endpoint, _) =
        hub_testkit::ready_endpoint(&t.state.db, alice, "emb", "protected", &worker).await;
    let ns: i64 = sqlx::query_scalar("SELECT namespace_id FROM endpoints WHERE id = $1")
        .bind(endpoint)
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    let calls: Vec<_> = (0..5)
        .map(|i| hub_api::usage_rollup::UsageRecord {
            namespace_id: ns,
            endpoint_id: endpoint,
            endpoint_name: "emb",
            token_id: None,
            input_tokens: 3,
            output_tokens: 0,
            latency_ms: i as f32,
            status: 200,
        })
        .collect();
    let batch = hub_api::usage_rollup::UsageBatch::of(&calls);
    hub_api::db::endpoints::insert_usage(&t.state.db, &batch)
        .await
        .unwrap();
    hub_api::db::endpoints::insert_usage(&t.state.db, &batch)
        .await
        .unwrap();
    assert_eq!(usage_calls(&t.state.db, endpoint).await, 5);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_shutdown_loses_no_usage_and_kill_9_at_most_one_flush() {
    use sqlx::Connection;
    let t = TestState::new().await;
    let (alice, _) = t.user("alice", false, &["read"]).await;
    let (_, token) =
        hub_api::admin::create_token(&t.state.db, alice, "call", &["inference".into()], None)
            .await
            .unwrap();
    let mut leader = sqlx::PgConnection::connect(&t.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .execute(&mut leader)
        .await
        .unwrap();
    let worker = StandInWorker::start();
    let (endpoint, _) =
        hub_testkit::ready_endpoint(&t.state.db, alice, "emb", "protected", &worker).await;
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // N requests, then SIGTERM: all N rows are there once the process is gone.
    let hub = start_hub(&t.db.url, data.path());
    const N: i64 = 60;
    for _ in 0..N {
        call(&http, &hub, &token).await;
    }
    let mut child = hub.child;
    signal(child.id(), "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the hub stopped with {status}");
    assert_eq!(usage_calls(&t.state.db, endpoint).await, N);

    // Calls as fast as they go, then kill -9: every call answered more than one
    // flush interval (plus the write itself) before the kill has its row.
    let hub = start_hub(&t.db.url, data.path());
    let mut answered: Vec<Instant> = Vec::new();
    let started = Instant::now();
    // The rows written, read every 50 ms from the side: when a run fails, this
    // says whether the hub's flushes stopped or the database itself stalled
    // (these reads then stall too).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let (db, seen) = (t.state.db.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let n = usage_calls(&db, endpoint).await - N;
                seen.lock()
                    .unwrap()
                    .push((started.elapsed().as_millis(), n));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        call(&http, &hub, &token).await;
        answered.push(Instant::now());
    }
    let mut child = hub.child;
    let killed = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    watch.abort();
    let rows = usage_calls(&t.state.db, endpoint).await - N;
    let bound = hub_api::gateway::USAGE_FLUSH + Duration::from_millis(150);
    let due = answered
        .iter()
        .filter(|at| killed.duration_since(**at) > bound)
        .count() as i64;
    eprintln!(
        "kill -9 after {} calls: {rows} rows written, {due} were due, {} lost",
        answered.len(),
        answered.len() as i64 - rows
    );
    assert!(
        rows >= due,
        "{rows} rows, but {due} calls ended over {bound:?} before the kill; killed at {} ms, \
         rows written by then (ms since the hub started, rows): {:?}",
        killed.duration_since(started).as_millis(),
        seen.lock().unwrap()
    );
    assert!(rows <= answered.len() as i64);
    worker.stop().await;
    drop(leader);
}
