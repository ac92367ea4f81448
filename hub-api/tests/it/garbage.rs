//! Bytes nobody references, and bytes nobody paid for (issue 13, items 2 and
//! 6): refused commits leave nothing in storage once released or collected;
//! the collector never deletes a blob a concurrent commit is about to
//! reference (reliability test 30, invariant I2); quotas count uncommitted
//! LFS uploads, multipart parts and unreleased commit bytes; a multipart
//! upload survives a bad part; a finished or expired upload takes no bytes.

use crate::common::*;
use actix_web::test::TestRequest;
use futures::future::join_all;
use hub_api::sweeper::{self, Policy};
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The digests of the objects at final keys (`blobs/sha256/..`).
fn stored_blobs(t: &TestState) -> BTreeSet<String> {
    let dir = t.storage_dir.as_ref().unwrap().path().join("blobs");
    files_under(&dir)
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Everything the database says must be stored.
async fn referenced_blobs(t: &TestState) -> BTreeSet<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT sha256 FROM git_blobs UNION SELECT sha256 FROM repo_lfs_objects
         UNION SELECT sha256 FROM repo_blobs",
    )
    .fetch_all(&t.state.db)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

async fn count(t: &TestState, sql: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .fetch_one(&t.state.db)
        .await
        .unwrap()
        .0
}

/// Bytes used, as the quota API reports them.
async fn used(app: &impl App, tok: &str, ns: &str) -> i64 {
    let (st, _, b) = call(
        app,
        TestRequest::get()
            .uri(&format!("/api/v1/namespaces/{ns}/quota"))
            .insert_header(bearer(tok)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json_of(&b)["storage_used_bytes"].as_i64().unwrap()
}

async fn set_quota(app: &impl App, root: &str, ns: &str, bytes: i64) {
    let (st, _, b) = call(
        app,
        TestRequest::put()
            .uri(&format!("/api/v1/namespaces/{ns}/quota"))
            .insert_header(bearer(root))
            .set_json(json!({"storage_bytes": bytes})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}

async fn head(app: &impl App, tok: &str, id: &str) -> String {
    let (_, _, b) = call(
        app,
        TestRequest::get()
            .uri(&format!("/api/models/{id}/refs"))
            .insert_header(bearer(tok)),
    )
    .await;
    json_of(&b)["branches"][0]["targetCommit"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn commit(app: &impl App, tok: &str, id: &str, body: String) -> (u16, Value) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/api/models/{id}/commit/main"))
            .insert_header(bearer(tok))
            .set_payload(body),
    )
    .await;
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (st, v)
}

/// Deterministic, distinct content.
fn content(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// No rate limiting: these tests send many requests from one token.
fn unlimited(t: &mut TestState) {
    use hub_api::ratelimit::{Rate, RateDefaults, RateLimiter};
    let off = Rate { per_s: 0, burst: 0 };
    t.state.tenancy.rate = std::sync::Arc::new(RateLimiter::new(RateDefaults {
        token: off,
        anonymous: off,
        trust_forwarded_for: false,
    }));
}

#[actix_web::test]
async fn refused_commits_leave_no_bytes() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    let (_, root) = t.user("root", true, &["admin", "write"]).await;
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    set_quota(&app, &root, "alice", 50_000_000).await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"first file")]).await;
    let before = stored_blobs(&t);
    let used_before = used(&app, &alice, "alice").await;
    assert_eq!(used_before, 10, "only a.txt is counted");

    // Four stale-parent commits with 900 KB each (the attack run's case).
    let head = head(&app, &alice, "alice/m").await;
    let stale = "0000000000000000000000000000000000000000";
    assert!(!head.starts_with("00000"));
    for i in 0..4 {
        let body = ndjson(
            "stale",
            Some(stale),
            &[file_op(&format!("big{i}.txt"), &content(i, 900_000))],
        );
        let (st, v) = commit(&app, &alice, "alice/m", body).await;
        assert_eq!(st, 412, "{v}");
        assert_eq!(v["code"], "parent_commit_mismatch");
    }
    // A bad line after a stored file.
    let mut body = ndjson("bad", None, &[file_op("big.txt", &content(10, 900_000))]);
    body.push_str("{\"key\": \"nonsense\"}\n");
    let (st, v) = commit(&app, &alice, "alice/m", body).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["code"], "invalid_commit");
    // A path clash: a.txt is a file, so a.txt/b cannot be added.
    let body = ndjson("clash", None, &[file_op("a.txt/b", &content(11, 900_000))]);
    let (st, v) = commit(&app, &alice, "alice/m", body).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["code"], "invalid_commit");
    // A payload cut off by the line limit after a stored file.
    let body = format!(
        "{}{}",
        ndjson("long", None, &[file_op("c.txt", &content(12, 900_000))]),
        "x".repeat(1_400_000)
    );
    let mut small = t.state.clone();
    small.limits.commit_line = 1_300_000;
    let small_app = hub_testkit::app(&small).await;
    let (st, v) = commit(&small_app, &alice, "alice/m", body).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "payload_too_large");

    // Nothing of them is stored, counted or pending.
    assert_eq!(
        stored_blobs(&t),
        before,
        "refused commits left bytes behind"
    );
    assert_eq!(used(&app, &alice, "alice").await, used_before);
    assert_eq!(count(&t, "SELECT count(*) FROM pending_objects").await, 0);
    let swept = sweeper::sweep_once(&t.state, &Policy::immediate())
        .await
        .unwrap();
    assert_eq!(swept.blobs, 0, "released at once, nothing left to collect");
    assert_eq!(stored_blobs(&t), before);
    assert_eq!(stored_blobs(&t), referenced_blobs(&t).await);
    let staging = t.storage_dir.as_ref().unwrap().path().join("staging");
    assert!(files_under(&staging).is_empty());

    // A commit that crashed after storing its bytes: counted until collected,
    // kept through the grace period, then collected.
    let ns = hub_api::db::namespaces::by_name(&t.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let orphan = content(20, 900_000);
    let (w, _pending) = sweeper::store_bytes(&t.state, ns, orphan.clone().into())
        .await
        .unwrap();
    assert!(stored_blobs(&t).contains(w.sha256.as_str()));
    assert_eq!(used(&app, &alice, "alice").await, used_before + 900_000);
    let swept = sweeper::sweep_once(&t.state, &Policy::production(true))
        .await
        .unwrap();
    assert_eq!(swept.blobs, 0, "within the grace period");
    assert!(stored_blobs(&t).contains(w.sha256.as_str()));
    let swept = sweeper::sweep_once(&t.state, &Policy::immediate())
        .await
        .unwrap();
    assert_eq!(swept.blobs, 1);
    assert_eq!(stored_blobs(&t), before);
    assert_eq!(used(&app, &alice, "alice").await, used_before);

    // Garbage no row knows about (what older versions left) goes by the scan;
    // referenced blobs stay.
    let junk = t
        .state
        .storage
        .write_bytes(content(21, 5_000).into())
        .await
        .unwrap();
    assert!(stored_blobs(&t).contains(junk.sha256.as_str()));
    let swept = sweeper::sweep_once(&t.state, &Policy::immediate())
        .await
        .unwrap();
    assert_eq!(swept.blobs, 1);
    assert_eq!(stored_blobs(&t), before);
    let (_, _, b) = call(&app, TestRequest::get().uri("/alice/m/resolve/main/a.txt")).await;
    assert_eq!(b, b"first file");
}

#[actix_web::test]
async fn collector_never_deletes_a_blob_a_commit_references() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let app = app(&t.state).await;
    for r in 0..3 {
        create_repo(&app, &alice, &format!("alice/r{r}"), false).await;
    }
    let stop = std::cell::Cell::new(false);
    let passes = std::cell::Cell::new(0usize);
    let collected = std::cell::Cell::new(0usize);
    // The collector runs back to back with no grace at all for objects at
    // final keys (pending rows, unknown objects), racing every commit and
    // every release below. (Staging objects keep their grace: a write in
    // progress is not garbage, and its final key is what is at stake here.)
    let racing = Policy {
        staging_grace: chrono::Duration::hours(1),
        ..Policy::immediate()
    };
    let collector = async {
        while !stop.get() {
            let s = sweeper::sweep_once(&t.state, &racing).await.unwrap();
            passes.set(passes.get() + 1);
            collected.set(collected.get() + s.blobs);
            actix_web::rt::task::yield_now().await;
        }
    };
    const ROUNDS: u32 = 25;
    let writers = async {
        let mut acked: Vec<(String, String, Vec<u8>)> = vec![];
        let mut unavailable = 0;
        for round in 0..ROUNDS {
            let shared = content(1000 + round, 20_000);
            let mut jobs = vec![];
            // Three commits of the same new content to three repos...
            for r in 0..3 {
                let id = format!("alice/r{r}");
                let path = format!("f{round}.txt");
                let body = ndjson("add", None, &[file_op(&path, &shared)]);
                jobs.push((id, path, body, shared.clone()));
            }
            // ...and refused ones with it: their release races the commits.
            for k in 0..2 {
                let body = ndjson(
                    "stale",
                    Some("0000000000"),
                    &[file_op(&format!("s{round}-{k}.txt"), &shared)],
                );
                jobs.push(("alice/r0".into(), String::new(), body, vec![]));
            }
            // A refused one with bytes nobody else sends: garbage to collect.
            let body = ndjson(
                "stale",
                Some("0000000000"),
                &[file_op("junk.txt", &content(5000 + round, 20_000))],
            );
            jobs.push(("alice/r1".into(), String::new(), body, vec![]));
            let results = join_all(jobs.into_iter().map(|(id, path, body, bytes)| {
                let app = &app;
                let alice = &alice;
                async move {
                    let (st, v) = commit(app, alice, &id, body).await;
                    (id, path, bytes, st, v)
                }
            }))
            .await;
            for (id, path, bytes, st, v) in results {
                match (path.is_empty(), st) {
                    (false, 200) => acked.push((id, path, bytes)),
                    (_, 412) => assert_eq!(v["code"], "parent_commit_mismatch"),
                    // Only when the collector took the bytes of a commit still in
                    // flight (no grace at all): a clean, retryable refusal.
                    (false, 503) => {
                        assert_eq!(v["code"], "unavailable", "{v}");
                        unavailable += 1
                    }
                    (_, other) => panic!("{id}: {other} {v}"),
                }
            }
        }
        stop.set(true);
        (acked, unavailable)
    };
    let (_, (acked, unavailable)) = futures::join!(collector, writers);
    eprintln!(
        "{} commits acknowledged, {unavailable} refused with 503, {} collector passes, {} objects collected",
        acked.len(),
        passes.get(),
        collected.get()
    );
    assert!(
        passes.get() > ROUNDS as usize,
        "the collector raced the commits"
    );
    assert!(acked.len() >= ROUNDS as usize, "most commits went through");

    // I2: every acknowledged file reads back, and everything referenced is stored.
    for (id, path, bytes) in &acked {
        let (st, _, b) = call(
            &app,
            TestRequest::get().uri(&format!("/{id}/resolve/main/{path}")),
        )
        .await;
        assert_eq!(st, 200, "{id}/{path}");
        assert!(b == *bytes, "{id}/{path} reads back other bytes");
    }
    let referenced = referenced_blobs(&t).await;
    let stored = stored_blobs(&t);
    let missing: Vec<_> = referenced.difference(&stored).collect();
    assert!(missing.is_empty(), "referenced but not stored: {missing:?}");
    // And nothing else is left once the collector has run.
    sweeper::sweep_once(&t.state, &Policy::immediate())
        .await
        .unwrap();
    assert_eq!(stored_blobs(&t), referenced);
    assert_eq!(count(&t, "SELECT count(*) FROM pending_objects").await, 0);
}

/// Asks the batch API for one upload; returns the response's object.
async fn batch_upload(app: &impl App, tok: &str, id: &str, sha: &str, size: usize) -> (u16, Value) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/{id}.git/info/lfs/objects/batch"))
            .insert_header(bearer(tok))
            .set_json(
                json!({"operation": "upload", "transfers": ["basic", "multipart"],
                "objects": [{"oid": sha, "size": size}]}),
            ),
    )
    .await;
    let v = json_of(&b);
    if st == 200 {
        (st, v["objects"][0].clone())
    } else {
        (st, v)
    }
}

fn local(url: &str) -> String {
    url.trim_start_matches("http://hub.test").to_string()
}

#[actix_web::test]
async fn uncommitted_uploads_count_towards_the_quota() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    t.state.limits.multipart_threshold = 2500;
    t.state.limits.multipart_chunk = 1024;
    let (_, root) = t.user("root", true, &["admin", "write"]).await;
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    create_repo(&app, &alice, "alice/n", false).await;
    set_quota(&app, &root, "alice", 10_000).await;
    assert_eq!(used(&app, &alice, "alice").await, 0);

    // An announced upload reserves its size at once.
    let a = content(1, 2_400);
    let a_sha = sha_hex(&a);
    let (st, obj_a) = batch_upload(&app, &alice, "alice/m", &a_sha, a.len()).await;
    assert_eq!(st, 200, "{obj_a}");
    assert_eq!(used(&app, &alice, "alice").await, 2_400);
    // So a second one that does not fit is refused, in any repo of the namespace.
    let b = content(2, 8_000);
    let (st, v) = batch_upload(&app, &alice, "alice/n", &sha_hex(&b), b.len()).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "quota_exceeded");
    // Asking again for the same object counts it once.
    let (st, again) = batch_upload(&app, &alice, "alice/n", &a_sha, a.len()).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(used(&app, &alice, "alice").await, 2_400);
    // Uploaded (linked, not committed): still counted once.
    let put = local(obj_a["actions"]["upload"]["href"].as_str().unwrap());
    let (st, _, body) = call(&app, TestRequest::put().uri(&put).set_payload(a.clone())).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(used(&app, &alice, "alice").await, 2_400);

    // A multipart upload: reserved at the batch, its parts covered by it.
    let m = content(3, 3_000);
    let (st, obj_m) = batch_upload(&app, &alice, "alice/m", &sha_hex(&m), m.len()).await;
    assert_eq!(st, 200, "{obj_m}");
    let part1 = local(obj_m["actions"]["upload"]["header"]["1"].as_str().unwrap());
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri(&part1)
            .set_payload(m[..1024].to_vec()),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(used(&app, &alice, "alice").await, 5_400);
    let c = content(4, 5_000);
    let (st, v) = batch_upload(&app, &alice, "alice/m", &sha_hex(&c), c.len()).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "quota_exceeded");

    // Abandoned: once the session expires and is swept, parts and reservation go.
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '1 second' WHERE completed_at IS NULL")
        .execute(&t.state.db)
        .await
        .unwrap();
    let swept = sweeper::sweep_once(&t.state, &Policy::production(false))
        .await
        .unwrap();
    assert!(swept.sessions >= 1, "{swept:?}");
    let uploads = t.storage_dir.as_ref().unwrap().path().join("uploads");
    assert!(files_under(&uploads).is_empty(), "parts left behind");
    assert_eq!(used(&app, &alice, "alice").await, 2_400);

    // Bytes of a commit that never settled (a crash) count until collected.
    let ns = hub_api::db::namespaces::by_name(&t.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    sweeper::store_bytes(&t.state, ns, content(5, 3_000).into())
        .await
        .unwrap();
    assert_eq!(used(&app, &alice, "alice").await, 5_400);
    let body = ndjson("more", None, &[file_op("c.txt", &c)]);
    let (st, v) = commit(&app, &alice, "alice/m", body.clone()).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "quota_exceeded");
    sweeper::sweep_once(&t.state, &Policy::immediate())
        .await
        .unwrap();
    assert_eq!(used(&app, &alice, "alice").await, 2_400);
    let (st, v) = commit(&app, &alice, "alice/m", body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(used(&app, &alice, "alice").await, 7_400);
}

/// A multipart session of `content` in 4096-byte parts; returns the batch object.
async fn multipart(app: &impl App, tok: &str, id: &str, data: &[u8]) -> Value {
    let (st, obj) = batch_upload(app, tok, id, &sha_hex(data), data.len()).await;
    assert_eq!(st, 200, "{obj}");
    assert_eq!(obj["actions"]["upload"]["header"]["chunk_size"], "4096");
    obj
}

async fn put_part(app: &impl App, obj: &Value, n: usize, bytes: &[u8]) -> (u16, Value, String) {
    let url = local(
        obj["actions"]["upload"]["header"][n.to_string()]
            .as_str()
            .unwrap(),
    );
    let (st, h, b) = call(
        app,
        TestRequest::put().uri(&url).set_payload(bytes.to_vec()),
    )
    .await;
    let etag = h
        .get("etag")
        .map(|e| e.to_str().unwrap().to_string())
        .unwrap_or_default();
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null), etag)
}

async fn complete(app: &impl App, obj: &Value, sha: &str, etags: &[String]) -> (u16, Value) {
    let parts: Vec<Value> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"partNumber": i + 1, "etag": e}))
        .collect();
    let url = local(obj["actions"]["upload"]["href"].as_str().unwrap());
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&url)
            .set_json(json!({"oid": sha, "parts": parts})),
    )
    .await;
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn multipart_state() -> (TestState, String) {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    t.state.limits.multipart_threshold = 1000;
    t.state.limits.multipart_chunk = 4096;
    let (_, tok) = t.user("carol", false, &["write"]).await;
    (t, tok)
}

#[actix_web::test]
async fn multipart_retry_after_a_bad_part_succeeds() {
    let (t, tok) = multipart_state().await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "carol/mp", false).await;
    let data = content(7, 10_000);
    let sha = sha_hex(&data);
    let obj = multipart(&app, &tok, "carol/mp", &data).await;
    let chunks: Vec<&[u8]> = data.chunks(4096).collect();
    let mut etags = vec![];
    for (i, c) in chunks.iter().enumerate() {
        let mut bytes = c.to_vec();
        if i == 1 {
            bytes[17] ^= 1; // one flipped bit in part 2
        }
        let (st, v, etag) = put_part(&app, &obj, i + 1, &bytes).await;
        assert_eq!(st, 200, "{v}");
        etags.push(etag);
    }
    let (st, v) = complete(&app, &obj, &sha, &etags).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["code"], "digest_mismatch");
    // The upload is still alive: send part 2 again and complete again.
    let (st, v, etag) = put_part(&app, &obj, 2, chunks[1]).await;
    assert_eq!(st, 200, "{v}");
    assert_ne!(etag, etags[1]);
    etags[1] = etag;
    let (st, v) = complete(&app, &obj, &sha, &etags).await;
    assert_eq!(st, 200, "{v}");

    // A part that vanished from storage is named, and can be sent again.
    let data2 = content(8, 9_000);
    let sha2 = sha_hex(&data2);
    let obj2 = multipart(&app, &tok, "carol/mp", &data2).await;
    let mut etags2 = vec![];
    for (i, c) in data2.chunks(4096).enumerate() {
        etags2.push(put_part(&app, &obj2, i + 1, c).await.2);
    }
    let uploads = t.storage_dir.as_ref().unwrap().path().join("uploads");
    let mut parts = files_under(&uploads);
    parts.sort();
    assert_eq!(parts.len(), 3);
    std::fs::remove_file(&parts[2]).unwrap();
    let (st, v) = complete(&app, &obj2, &sha2, &etags2).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["code"], "upload_part_missing");
    assert!(v["error"].as_str().unwrap().contains("part 3"), "{v}");
    let (st, _, etag) = put_part(&app, &obj2, 3, &data2[8192..]).await;
    assert_eq!(st, 200);
    etags2[2] = etag;
    let (st, v) = complete(&app, &obj2, &sha2, &etags2).await;
    assert_eq!(st, 200, "{v}");
    assert!(files_under(&uploads).is_empty(), "parts left behind");

    // Both objects commit and read back.
    let lines = vec![
        json!({"key": "lfsFile", "value": {"path": "a.bin", "algo": "sha256", "oid": sha, "size": data.len()}}),
        json!({"key": "lfsFile", "value": {"path": "b.bin", "algo": "sha256", "oid": sha2, "size": data2.len()}}),
    ];
    let (st, v) = commit(&app, &tok, "carol/mp", ndjson("mp", None, &lines)).await;
    assert_eq!(st, 200, "{v}");
    let (_, _, b) = call(&app, TestRequest::get().uri("/carol/mp/resolve/main/a.bin")).await;
    assert!(b == data);
    let (_, _, b) = call(&app, TestRequest::get().uri("/carol/mp/resolve/main/b.bin")).await;
    assert!(b == data2);
}

#[actix_web::test]
async fn finished_or_expired_uploads_take_no_bytes() {
    let (t, tok) = multipart_state().await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "carol/mp", false).await;
    let uploads = t.storage_dir.as_ref().unwrap().path().join("uploads");
    let data = content(9, 10_000);
    let sha = sha_hex(&data);
    let obj = multipart(&app, &tok, "carol/mp", &data).await;
    let mut etags = vec![];
    for (i, c) in data.chunks(4096).enumerate() {
        etags.push(put_part(&app, &obj, i + 1, c).await.2);
    }
    let (st, v) = complete(&app, &obj, &sha, &etags).await;
    assert_eq!(st, 200, "{v}");
    let stored = stored_blobs(&t);

    // After completion: part PUTs and completions are refused, nothing written.
    let (st, v, _) = put_part(&app, &obj, 1, &data[..4096]).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["code"], "upload_completed");
    assert!(
        files_under(&uploads).is_empty(),
        "a part was written after completion"
    );
    let (st, v) = complete(&app, &obj, &sha, &etags).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["code"], "upload_completed");
    assert_eq!(stored_blobs(&t), stored);

    // A single-PUT upload, once done, takes no second body either.
    let small = content(10, 500);
    let (st, one) = batch_upload(&app, &tok, "carol/mp", &sha_hex(&small), small.len()).await;
    assert_eq!(st, 200);
    let put = local(one["actions"]["upload"]["href"].as_str().unwrap());
    let (st, _, _) = call(
        &app,
        TestRequest::put().uri(&put).set_payload(small.clone()),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, b) = call(
        &app,
        TestRequest::put().uri(&put).set_payload(small.clone()),
    )
    .await;
    assert_eq!(st, 409, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "upload_completed");

    // An expired session answers 410 before reading anything.
    let data3 = content(11, 9_000);
    let obj3 = multipart(&app, &tok, "carol/mp", &data3).await;
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '1 second' WHERE completed_at IS NULL")
        .execute(&t.state.db)
        .await
        .unwrap();
    let (st, v, _) = put_part(&app, &obj3, 1, &data3[..4096]).await;
    assert_eq!(st, 410, "{v}");
    assert_eq!(v["code"], "upload_expired");
    assert!(files_under(&uploads).is_empty());
}

#[actix_web::test]
async fn wrong_sized_parts_are_refused_and_not_stored() {
    let (t, tok) = multipart_state().await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "carol/mp", false).await;
    let uploads = t.storage_dir.as_ref().unwrap().path().join("uploads");
    let data = content(12, 10_000);
    let obj = multipart(&app, &tok, "carol/mp", &data).await;
    let url = |n: usize| {
        local(
            obj["actions"]["upload"]["header"][n.to_string()]
                .as_str()
                .unwrap(),
        )
    };

    // Declared too long: refused from the header.
    let (st, _, b) = call(
        &app,
        TestRequest::put()
            .uri(&url(1))
            .set_payload(vec![b'x'; 5000]),
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "digest_mismatch");
    // A body longer than its Content-Length claims: cut off while streaming.
    let (st, _, b) = call(
        &app,
        TestRequest::put()
            .uri(&url(1))
            .set_payload(vec![b'x'; 5000])
            .insert_header(("Content-Length", "4096")),
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "digest_mismatch");
    // The last part is 10000 - 2 * 4096 = 1808 bytes; a short one is refused.
    let (st, _, b) = call(
        &app,
        TestRequest::put()
            .uri(&url(3))
            .set_payload(vec![b'x'; 1000])
            .insert_header(("Content-Length", "1808")),
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "digest_mismatch");
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri(&url(3))
            .set_payload(vec![b'x'; 1000]),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        files_under(&uploads).is_empty(),
        "refused parts were stored: {:?}",
        files_under(&uploads)
    );
    assert_eq!(count(&t, "SELECT count(*) FROM upload_parts").await, 0);
    // The right sizes are accepted.
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri(&url(3))
            .set_payload(data[8192..].to_vec()),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(files_under(&uploads).len(), 1);
}

/// A commit of thousands of inline files goes through the batched store
/// (several batches, each written and made durable with one `syncfs`, stored
/// while the next is read): every file is committed and readable, nothing is
/// left pending or in staging; the same commit refused at its last line
/// leaves no bytes at all, including those of the batches stored before it.
#[actix_web::test]
async fn bulk_commits_store_every_file_and_refused_ones_leave_nothing() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    let (_, alice) = t.user("alice", false, &["write", "read"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/bulk", false).await;
    const N: u32 = 2_500;
    let files: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| (format!("d{}/f{i}.txt", i % 7), content(1_000 + i, 40)))
        .collect();
    let ops: Vec<_> = files.iter().map(|(p, c)| file_op(p, c)).collect();

    // Refused at the end: three batches were stored by then.
    let before = stored_blobs(&t);
    let mut body = ndjson("bulk", None, &ops);
    body.push_str("{\"key\": \"file\", \"value\": {\"path\": \"../escape\", \"content\": \"\", \"encoding\": \"base64\"}}\n");
    let (st, v) = commit(&app, &alice, "alice/bulk", body).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(stored_blobs(&t), before, "a refused bulk commit left bytes");
    assert_eq!(count(&t, "SELECT count(*) FROM pending_objects").await, 0);
    let staging = t.storage_dir.as_ref().unwrap().path().join("staging");
    assert!(files_under(&staging).is_empty());

    // Accepted: every file is there with its bytes.
    let (st, v) = commit(&app, &alice, "alice/bulk", ndjson("bulk", None, &ops)).await;
    assert_eq!(st, 200, "{v}");
    let mut listed = BTreeSet::new();
    let mut uri = "/api/models/alice/bulk/tree/main?recursive=true".to_string();
    loop {
        let (st, h, b) = call(
            &app,
            TestRequest::get().uri(&uri).insert_header(bearer(&alice)),
        )
        .await;
        assert_eq!(st, 200);
        for e in json_of(&b).as_array().unwrap() {
            if e["type"] == "file" && e["path"] != ".gitattributes" {
                listed.insert(e["path"].as_str().unwrap().to_string());
            }
        }
        let Some(link) = h.get("link").and_then(|v| v.to_str().ok()) else {
            break;
        };
        let next = link.trim_start_matches('<').split('>').next().unwrap();
        uri = next
            .split_once("://")
            .unwrap()
            .1
            .split_once('/')
            .unwrap()
            .1
            .to_string();
        uri.insert(0, '/');
    }
    let want: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    assert!(
        listed == want,
        "{} files listed, {} committed",
        listed.len(),
        want.len()
    );
    for (p, c) in files.iter().step_by(97) {
        let (st, _, b) = call(
            &app,
            TestRequest::get()
                .uri(&format!("/alice/bulk/resolve/main/{p}"))
                .insert_header(bearer(&alice)),
        )
        .await;
        assert_eq!(st, 200, "{p}");
        assert_eq!(&b[..], &c[..], "{p}");
    }
    let shas: BTreeSet<String> = files.iter().map(|(_, c)| sha_hex(c)).collect();
    assert!(shas.is_subset(&stored_blobs(&t)));
    assert_eq!(stored_blobs(&t), referenced_blobs(&t).await);
    assert_eq!(count(&t, "SELECT count(*) FROM pending_objects").await, 0);
    assert!(files_under(&staging).is_empty());
}

/// The usage a commit checks its quota against is recorded and moved by
/// what each commit links anew, instead of summed three times per commit
/// (which grew with the namespace). It must never be below the true sum
/// (that would let a tenant past its quota): checked after every step here,
/// including the changes that bypass commits (an LFS upload session, a repo
/// deleted or moved), which drop the record so the next check sums again.
#[actix_web::test]
async fn recorded_usage_is_never_below_the_sum() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    let (_, root) = t.user("root", true, &["admin", "write"]).await;
    let (alice_id, alice) = t.user("alice", false, &["write", "read"]).await;
    t.org("acme", alice_id).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    create_repo(&app, &alice, "alice/n", false).await;
    set_quota(&app, &root, "alice", 10_000).await;
    let ns = hub_api::db::namespaces::by_name(&t.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let recorded = || async {
        sqlx::query_as::<_, (i64,)>("SELECT bytes FROM namespace_usage WHERE namespace_id = $1")
            .bind(ns)
            .fetch_optional(&t.state.db)
            .await
            .unwrap()
            .map(|r| r.0)
    };
    let sum = || async { hub_api::quota::usage(&t.state.db, ns).await.unwrap() };
    let check = |step: &'static str| async move {
        let (r, s) = (recorded().await, sum().await);
        assert!(r.is_none_or(|r| r >= s), "{step}: recorded {r:?} < sum {s}");
        (r, s)
    };
    let commit_ok = |repo: &'static str, files: Vec<(String, Vec<u8>)>| {
        let app = &app;
        let alice = alice.clone();
        async move {
            let ops: Vec<_> = files.iter().map(|(p, c)| file_op(p, c)).collect();
            let (st, v) = commit(app, &alice, repo, ndjson("c", None, &ops)).await;
            (st, v)
        }
    };

    // What the repos' first commits (.gitattributes) take.
    let base = sum().await;
    // Commits record the sum, then move it by what they link anew: new
    // content counts, content the namespace already links does not (in the
    // same repo or another), overwrites and deletions keep the links.
    let (st, _) = commit_ok(
        "alice/m",
        vec![
            ("a".into(), content(1, 1000)),
            ("b".into(), content(2, 500)),
        ],
    )
    .await;
    assert_eq!(st, 200);
    let (r, s) = check("first commit").await;
    assert_eq!(r, Some(s));
    assert_eq!(s, base + 1500);
    let (st, _) = commit_ok(
        "alice/m",
        vec![
            ("c".into(), content(3, 700)),
            ("a2".into(), content(1, 1000)),
        ],
    )
    .await;
    assert_eq!(st, 200);
    let (r, s) = check("new and duplicate content").await;
    assert_eq!((r, s), (Some(base + 2200), base + 2200));
    let (st, _) = commit_ok("alice/n", vec![("same-as-b".into(), content(2, 500))]).await;
    assert_eq!(st, 200);
    assert_eq!(
        check("content another repo links").await,
        (Some(2200), 2200)
    );

    // The recorded usage refuses like the sum.
    let room = 10_000 - base - 2200;
    let (st, v) = commit_ok(
        "alice/m",
        vec![("big".into(), content(4, room as usize + 1))],
    )
    .await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "quota_exceeded");
    assert_eq!(check("refused").await, (Some(base + 2200), base + 2200));
    let (st, _) = commit_ok("alice/m", vec![("fits".into(), content(5, room as usize))]).await;
    assert_eq!(st, 200);
    assert_eq!(check("filled").await, (Some(10_000), 10_000));
    let (st, v) = commit_ok("alice/m", vec![("one-more".into(), content(6, 1))]).await;
    assert_eq!(st, 413, "{v}");

    // An LFS upload session drops the record; the next commit sums again.
    set_quota(&app, &root, "alice", 1_000_000).await;
    let big = content(7, 4096);
    let (st, _) = batch_upload(&app, &alice, "alice/m", &sha_hex(&big), big.len()).await;
    assert_eq!(st, 200);
    assert_eq!(check("lfs session").await.0, None);
    let (st, _) = commit_ok("alice/m", vec![("d".into(), content(8, 10))]).await;
    assert_eq!(st, 200);
    let (r, s) = check("after the session").await;
    assert_eq!(r, Some(s));
    assert_eq!(s, 10_000 + 4096 + 10);

    // A deleted repo and a moved one drop it too.
    let (st, _, b) = call(
        &app,
        TestRequest::delete()
            .uri("/api/repos/delete")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "n", "organization": "alice"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(check("repo deleted").await.0, None);
    let (st, _) = commit_ok("alice/m", vec![("e".into(), content(9, 10))]).await;
    assert_eq!(st, 200);
    assert!(check("after the delete").await.0.is_some());
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/move")
            .insert_header(bearer(&alice))
            .set_json(json!({"fromRepo": "alice/m", "toRepo": "acme/m", "type": "model"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(check("repo moved away").await, (None, 0));
}

/// A commit over the operation limit is refused when the first operation
/// past it is read (not after the whole payload was applied), and the files
/// stored before that line are given back.
#[actix_web::test]
async fn too_many_operations_are_refused_as_they_are_read() {
    let mut t = TestState::new().await;
    unlimited(&mut t);
    t.state.limits.commit_ops = 100;
    let (_, alice) = t.user("alice", false, &["write", "read"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let before = stored_blobs(&t);
    let ops: Vec<_> = (0..150u32)
        .map(|i| file_op(&format!("f{i}.txt"), &content(5_000 + i, 30)))
        .collect();
    let (st, v) = commit(&app, &alice, "alice/m", ndjson("many", None, &ops)).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "payload_too_large");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("at most 100 operations"),
        "{v}"
    );
    assert_eq!(stored_blobs(&t), before);
    assert_eq!(count(&t, "SELECT count(*) FROM pending_objects").await, 0);
    // At the limit it commits.
    let (st, v) = commit(&app, &alice, "alice/m", ndjson("many", None, &ops[..100])).await;
    assert_eq!(st, 200, "{v}");
}
