//! Issue 13 item 3: one tenant must not stall everyone. The attack inputs of
//! the issue (a pathological 3,000-line `gitIgnore`, a 2,000-line
//! `.gitattributes`, a safetensors file declaring a 99 MB header, a 270 MB
//! GGUF with a tiny header) go to a real server on a socket while `/healthz`
//! is timed; over-limit inputs get a 4xx with a code, inputs within the limits
//! get right answers, and memory stays proportional to what is needed.

use bytes::Bytes;
use hub_api::heavy::{Heavy, HeavyLimits, Tenant};
use hub_testkit::{file_op, ndjson, Server, TestState};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Times `GET /healthz` every 10 ms until `stop`; returns the worst latency.
fn watch_healthz(hub: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = http.get(format!("{hub}/healthz")).send().await.unwrap();
            assert!(r.status().is_success());
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst
    })
}

/// Resident and peak memory of this process (from /proc/self/status), in MiB.
fn rss_mib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn create(http: &reqwest::Client, hub: &str, tok: &str, name: &str) {
    let r = http
        .post(format!("{hub}/api/repos/create"))
        .bearer_auth(tok)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn commit(
    http: &reqwest::Client,
    hub: &str,
    tok: &str,
    repo: &str,
    ops: &[Value],
) -> (u16, Value) {
    let r = http
        .post(format!("{hub}/api/models/{repo}/commit/main"))
        .bearer_auth(tok)
        .body(ndjson("bounds", None, ops))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// A gitignore line that made the old matcher backtrack and recompile.
fn evil_line(i: usize) -> String {
    format!("{}b{i}/", "*a".repeat(24))
}

fn preupload_body(paths: &[String], git_ignore: &str) -> Value {
    let files: Vec<Value> = paths
        .iter()
        .map(|p| json!({"path": p, "size": 10, "sample": "aGVsbG8="}))
        .collect();
    json!({"files": files, "gitIgnore": git_ignore})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pathological_gitignore_cannot_stall_healthz() {
    let t = TestState::new().await;
    let (_, tok) = t.user("mallory", false, &["read", "write"]).await;
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    create(&http, &hub, &tok, "m").await;

    let paths: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "d{}/e{}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{i}.txt",
                i % 16,
                i % 7
            )
        })
        .collect();
    // Over the limit: 3,000 wildcard lines.
    let attack: String = (0..3000).map(|i| evil_line(i) + "\n").collect();
    // Within the limits: 900 wildcard lines, then rules with a known answer.
    let heavy_ok: String =
        (0..900).map(|i| evil_line(i) + "\n").collect::<String>() + "*.txt\n!d3/**\nd5/e5/\n";

    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_healthz(hub.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let mut attacks = Vec::new();
    for body in [
        preupload_body(&paths, &attack),
        preupload_body(&paths, &attack),
        preupload_body(&paths, &heavy_ok),
        preupload_body(&paths, &heavy_ok),
    ] {
        let (http, hub, tok) = (http.clone(), hub.clone(), tok.clone());
        attacks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{hub}/api/models/mallory/m/preupload/main"))
                .bearer_auth(&tok)
                .json(&body)
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            (st, retry, r.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for a in attacks {
        answers.push(a.await.unwrap());
    }
    let attack_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst = watch.await.unwrap();
    println!("preupload attack: {attack_time:?} in all; worst /healthz latency {worst:?}");

    for (st, _, b) in &answers[..2] {
        assert_eq!(*st, 413, "{b}");
        assert_eq!(b["code"], "payload_too_large");
        assert!(b["error"].as_str().unwrap().contains("wildcard"), "{b}");
    }
    let mut ok = 0;
    for (st, retry, b) in &answers[2..] {
        if *st == 429 {
            // The tenant's own bound: fine, as long as it says so.
            assert_eq!(b["code"], "tenant_busy");
            assert!(retry);
            continue;
        }
        assert_eq!(*st, 200, "{b}");
        ok += 1;
        for f in b["files"].as_array().unwrap() {
            let p = f["path"].as_str().unwrap();
            // `*.txt` ignores everything but `!d3/**` re-includes d3's files.
            let want = !p.starts_with("d3/");
            assert_eq!(f["shouldIgnore"], want, "{p}");
        }
    }
    assert!(ok >= 1, "at least one within-limit call is answered");
    assert!(
        worst < Duration::from_secs(1),
        "/healthz took {worst:?} while one tenant attacked"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_gitattributes_commits() {
    let t = TestState::new().await;
    let (_, tok) = t.user("ga", false, &["read", "write"]).await;
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    create(&http, &hub, &tok, "r").await;

    // 2,000 literal lines (as the hub itself writes them) and 30 wildcards:
    // within the limits, fast, and right.
    let mut text = String::from(hub_api::git::attributes::DEFAULT_GITATTRIBUTES);
    for i in 0..2000 {
        text.push_str(&format!(
            "dir{i}/file[[:space:]]{i}.dat filter=lfs diff=lfs merge=lfs -text\n"
        ));
    }
    for i in 0..30 {
        text.push_str(&format!("*{i}*.raw filter=lfs\n"));
    }
    text.push_str("dir7/file[[:space:]]7.dat -filter\n");
    let ops = vec![
        file_op(".gitattributes", text.as_bytes()),
        file_op("dir5/file 5.dat", b"small text"),
        file_op("dir7/file 7.dat", b"small text"),
        file_op("x12y.raw", b"small text"),
        file_op("plain.txt", b"small text"),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_healthz(hub.clone(), stop.clone());
    let started = Instant::now();
    let (st, b) = commit(&http, &hub, &tok, "ga/r", &ops).await;
    let took = started.elapsed();
    assert_eq!(st, 200, "{b}");
    let tree: Value = http
        .get(format!("{hub}/api/models/ga/r/tree/main?recursive=true"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lfs = |p: &str| {
        tree.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p)
            .map(|e| !e["lfs"].is_null())
            .unwrap()
    };
    assert!(lfs("dir5/file 5.dat"));
    assert!(!lfs("dir7/file 7.dat"));
    assert!(lfs("x12y.raw"));
    assert!(!lfs("plain.txt"));

    // 2,000 pathological wildcard lines: refused with the limit's name.
    let evil: String = (0..2000)
        .map(|i| format!("{}b{i} filter=lfs\n", "*a".repeat(24)))
        .collect();
    let started2 = Instant::now();
    let (st, b) = commit(
        &http,
        &hub,
        &tok,
        "ga/r",
        &[
            file_op(".gitattributes", evil.as_bytes()),
            file_op("aaaa.txt", b"x"),
        ],
    )
    .await;
    let took2 = started2.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst = watch.await.unwrap();
    println!("gitattributes: 2,030 lines committed in {took:?}; 2,000 wildcards refused in {took2:?}; worst /healthz {worst:?}");
    assert_eq!(st, 413, "{b}");
    assert_eq!(b["code"], "payload_too_large");
    assert!(b["error"].as_str().unwrap().contains("wildcard"), "{b}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    server.stop().await;
}

/// Stores a blob made of `head` then `tail` zero bytes (streamed, never held
/// whole in memory) and links it to a repo as an uploaded LFS object.
async fn plant(t: &TestState, repo: &str, head: Vec<u8>, tail: u64) -> (String, u64) {
    let chunk = Bytes::from(vec![0u8; 1 << 20]);
    let mut parts: Vec<Bytes> = vec![Bytes::from(head)];
    let mut left = tail;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        parts.push(chunk.slice(..n));
        left -= n as u64;
    }
    plant_parts(t, repo, parts).await
}

/// Stores a blob of `parts` (shared chunks, so little memory) and links it to a repo.
async fn plant_parts(t: &TestState, repo: &str, parts: Vec<Bytes>) -> (String, u64) {
    let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let stream = futures::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let w = t
        .state
        .storage
        .write_blob(Box::pin(stream), Some(size), None, false)
        .await
        .unwrap();
    let sha = w.sha256.to_string();
    let (ns, name) = repo.split_once('/').unwrap();
    let (repo_id,): (i64,) = sqlx::query_as(
        "SELECT r.id FROM repos r JOIN namespaces n ON n.id = r.namespace_id WHERE n.name = $1 AND r.name = $2",
    )
    .bind(ns)
    .bind(name)
    .fetch_one(&t.state.db)
    .await
    .unwrap();
    hub_api::db::lfs::insert_blob(&t.state.db, &sha, size as i64)
        .await
        .unwrap();
    hub_api::db::lfs::link(&t.state.db, repo_id, &sha)
        .await
        .unwrap();
    (sha, size)
}

/// A header of `n` bytes: `prefix`, then `fill` repeated, then `suffix`, as
/// shared 1 MiB chunks (with the 8-byte length in front).
fn header_parts(n: u64, prefix: &[u8], fill: u8, suffix: &[u8]) -> Vec<Bytes> {
    let mut parts = vec![
        Bytes::copy_from_slice(&n.to_le_bytes()),
        Bytes::copy_from_slice(prefix),
    ];
    let chunk = Bytes::from(vec![fill; 1 << 20]);
    let mut left = n - prefix.len() as u64 - suffix.len() as u64;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        parts.push(chunk.slice(..k));
        left -= k as u64;
    }
    parts.push(Bytes::copy_from_slice(suffix));
    parts
}

fn lfs_op(path: &str, sha: &str, size: u64) -> Value {
    json!({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha, "size": size}})
}

fn gguf_head(n_tensors: u64, tensor_bytes: u64) -> Vec<u8> {
    let s = |out: &mut Vec<u8>, v: &str| {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "llama");
    if n_tensors == 1 {
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend((tensor_bytes / 4).to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b
}

/// Weight headers: the 99 MB declared safetensors header is judged invalid
/// from its length (the file is stored without parameter counts); a 20 MB header within the limit is parsed in little memory; a
/// 270 MB GGUF with a tiny header is validated by reading the header only.
/// One test, so the memory figures are not mixed with another test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weight_headers_are_bounded_in_size_and_memory() {
    let t = TestState::new().await;
    let (_, tok) = t.user("wh", false, &["read", "write"]).await;
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    create(&http, &hub, &tok, "w").await;

    // 1. A safetensors file declaring a 99 MB header (of valid JSON).
    let parts = header_parts(99_000_000, b"{\"__metadata__\":{\"k\":\"", b'x', b"\"}}");
    let (sha, size) = plant_parts(&t, "wh/w", parts).await;
    let (rss0, hwm0) = rss_mib();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_healthz(hub.clone(), stop.clone());
    let (st, b) = commit(
        &http,
        &hub,
        &tok,
        "wh/w",
        &[lfs_op("big.safetensors", &sha, size)],
    )
    .await;
    // Stored like any bytes (as on the Hub), without parameter counts: the
    // header is judged from its length and never read.
    assert_eq!(st, 200, "{b}");
    let info: serde_json::Value = http
        .get(format!("{hub}/api/models/wh/w"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info.get("safetensors").is_none(), "{info}");
    let (rss0b, hwm0b) = rss_mib();

    // 2. A 24 MB header within the limit: 200,000 metadata entries of the
    //    same (shared) 120-byte chunk, and one tensor. Accepted; parsed as a
    //    stream into typed entries, so memory does not follow the header.
    let tensor = b"},\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    let entry = Bytes::from(format!("\"{}\":\"v\",", "k".repeat(110)));
    let mut body = vec![Bytes::from_static(b"{\"__metadata__\":{\"first\":\"v\",")];
    let mut n: u64 = body[0].len() as u64;
    let mut i = 0u64;
    while n + entry.len() as u64 + 40 < 24_000_000 {
        // Distinct keys: a 10-digit counter ends each key.
        let e = format!("\"{}{i:010}\":\"v\",", "k".repeat(100));
        n += e.len() as u64;
        body.push(Bytes::from(e));
        i += 1;
    }
    drop(entry);
    body.push(Bytes::from_static(b"\"last\":\"v\""));
    body.push(Bytes::from_static(tensor));
    let n: u64 = body.iter().map(|b| b.len() as u64).sum();
    let mut parts = vec![Bytes::copy_from_slice(&n.to_le_bytes())];
    parts.extend(body);
    parts.push(Bytes::from(vec![0u8; 16]));
    let header_mb = n / 1_000_000;
    let (sha2, size2) = plant_parts(&t, "wh/w", parts).await;
    let (rss1, hwm1) = rss_mib();
    let (st, b) = commit(
        &http,
        &hub,
        &tok,
        "wh/w",
        &[lfs_op("ok.safetensors", &sha2, size2)],
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (rss2, hwm2) = rss_mib();

    // 3. A 270 MB GGUF with a tiny header (one 32-byte tensor).
    let (sha3, size3) = plant(&t, "wh/w", gguf_head(1, 32), 270_000_000).await;
    let (rss3, hwm3) = rss_mib();
    let started = Instant::now();
    let (st, b) = commit(&http, &hub, &tok, "wh/w", &[lfs_op("m.gguf", &sha3, size3)]).await;
    let gguf_took = started.elapsed();
    assert_eq!(st, 200, "{b}");
    let (rss4, hwm4) = rss_mib();
    // A hostile GGUF header (2^40 tensors) is refused.
    let mut bad = gguf_head(0, 0);
    bad[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let (sha4, size4) = plant(&t, "wh/w", bad, 1000).await;
    let (st, b) = commit(
        &http,
        &hub,
        &tok,
        "wh/w",
        &[lfs_op("bad.gguf", &sha4, size4)],
    )
    .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["code"], "invalid_gguf");

    stop.store(true, Ordering::Relaxed);
    let worst = watch.await.unwrap();
    println!(
        "99 MB declared header: RSS {rss0} -> {rss0b} MiB (peak {hwm0} -> {hwm0b}); {header_mb} MB header: RSS {rss1} -> {rss2} MiB (peak {hwm1} -> {hwm2}); \
         270 MB GGUF: RSS {rss3} -> {rss4} MiB (peak {hwm3} -> {hwm4}) in {gguf_took:?}; worst /healthz {worst:?}"
    );
    // The old code held the whole header as a serde_json::Value (about ten
    // times its size) and read a 256 MiB GGUF prefix into memory.
    assert!(
        hwm2.saturating_sub(hwm1) < 64,
        "safetensors peak grew {} MiB",
        hwm2 - hwm1
    );
    assert!(
        rss2.saturating_sub(rss1) < 64,
        "safetensors RSS grew {} MiB",
        rss2 - rss1
    );
    assert!(
        hwm4.saturating_sub(hwm3) < 64,
        "GGUF peak grew {} MiB",
        hwm4 - hwm3
    );
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    server.stop().await;
}

/// Past its own bound, a tenant is told `tenant_busy` (429, `Retry-After`);
/// another tenant is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_tenant_bound_on_heavy_work() {
    let mut t = TestState::new().await;
    t.state.tenancy.heavy = Arc::new(Heavy::new(HeavyLimits {
        global: 4,
        per_tenant: 1,
        tenant_wait: Duration::from_millis(100),
        global_wait: Duration::from_secs(5),
    }));
    let (busy_id, busy) = t.user("busy", false, &["read", "write"]).await;
    let (_, calm) = t.user("calm", false, &["read", "write"]).await;
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    create(&http, &hub, &busy, "m").await;
    create(&http, &hub, &calm, "m").await;

    // The tenant's one slot is taken (as by a long job of theirs).
    let held = t
        .state
        .tenancy
        .heavy
        .slot(Tenant::User(busy_id))
        .await
        .unwrap();
    let body = preupload_body(&["a.log".to_string()], "*.log\n");
    let r = http
        .post(format!("{hub}/api/models/busy/m/preupload/main"))
        .bearer_auth(&busy)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "tenant_busy");
    // validate-yaml (card parsing, open to anyone) is heavy work of the address.
    let local = Tenant::Anonymous(Some("127.0.0.1".parse().unwrap()));
    let held_addr = t.state.tenancy.heavy.slot(local).await.unwrap();
    let r = http
        .post(format!("{hub}/api/validate-yaml"))
        .bearer_auth(&busy)
        .json(&json!({"content": "---\nlicense: mit\n---\n", "repoType": "model"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    drop(held_addr);

    let r = http
        .post(format!("{hub}/api/models/calm/m/preupload/main"))
        .bearer_auth(&calm)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["files"][0]["shouldIgnore"], true);

    drop(held);
    let r = http
        .post(format!("{hub}/api/models/busy/m/preupload/main"))
        .bearer_auth(&busy)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await;
}

/// A "billion laughs" model card is refused by `validate-yaml` and by a
/// commit, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn yaml_alias_bomb_is_refused() {
    let t = TestState::new().await;
    let (_, tok) = t.user("yaml", false, &["read", "write"]).await;
    let server = Server::start(t.state.clone());
    let hub = server.url.clone();
    let http = reqwest::Client::new();
    create(&http, &hub, &tok, "c").await;
    let mut y = String::from(
        "---\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for c in 'b'..='i' {
        let refs = vec![format!("*{prev}"); 9].join(",");
        y.push_str(&format!("{c}: &{c} [{refs}]\n"));
        prev = c;
    }
    y.push_str("---\n# card\n");
    let started = Instant::now();
    let r = http
        .post(format!("{hub}/api/validate-yaml"))
        .json(&json!({"content": y, "repoType": "model"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (st, b) = commit(
        &http,
        &hub,
        &tok,
        "yaml/c",
        &[file_op("README.md", y.as_bytes())],
    )
    .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["code"], "invalid_commit");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}
