//! Xet storage's quotas, garbage collection and CAS rate limits (issue 12):
//! a namespace pays for the xorb bytes it added; the sweeper never collects a
//! xorb a registered or committed file uses, collects the rest, and never lets
//! a registration point at a xorb it deletes; CAS transfers have their own
//! rate bucket. The real app, a real PostgreSQL, a real local object store.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_api::sweeper::{self, Policy};
use hub_testkit::{app, TestState};
use hub_xet::hash;
use hub_xet::shard::{self, FileTerm, NewFile};
use hub_xet::xorb::{self, Compression, XorbIndex};
use serde_json::{json, Value};

/// SplitMix64 bytes (incompressible, deterministic).
fn data(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A stored-to-be xorb: hash string, upload body, index, and its bytes.
#[derive(Clone)]
struct Xorb {
    name: String,
    body: Vec<u8>,
    index: XorbIndex,
    bytes: Vec<u8>,
}

/// One xorb of the chunks of `seed`'s `n` bytes.
fn xorb(seed: u64, n: usize) -> Xorb {
    let bytes = data(seed, n);
    let chunks = hub_xet::chunker::chunks(&bytes);
    let body = xorb::serialize_chunks(&chunks, Compression::Lz4);
    let leaves: Vec<_> = chunks
        .iter()
        .map(|c| (hash::chunk_hash(c), c.len() as u64))
        .collect();
    let claimed = hash::xorb_hash(&leaves);
    let index = xorb::validate(&body, &claimed, &Default::default()).unwrap();
    Xorb {
        name: hash::hash_string(&claimed),
        body,
        index,
        bytes,
    }
}

/// A file made of whole xorbs, in order: its bytes and the upload shard that
/// lists `new` (the xorbs uploaded with it; the others were deduplicated).
fn file_of(parts: &[&Xorb], new: &[&Xorb]) -> (Vec<u8>, NewFile, Vec<u8>) {
    let mut bytes = vec![];
    let mut leaves = vec![];
    let mut terms = vec![];
    let mut verification = vec![];
    for x in parts {
        bytes.extend_from_slice(&x.bytes);
        leaves.extend(x.index.hashes_and_sizes());
        verification.push(hash::verification_hash(
            &x.index.chunks.iter().map(|c| c.hash).collect::<Vec<_>>(),
        ));
        terms.push(FileTerm {
            xorb: x.index.hash,
            chunk_start: 0,
            chunk_end: x.index.chunks.len() as u32,
            unpacked_bytes: x.index.uncompressed_bytes() as u32,
        });
    }
    let file = NewFile {
        hash: hash::file_hash(&leaves),
        terms,
        verification,
        sha256: Some(hash::sha256_of(&bytes)),
    };
    let listed: Vec<&XorbIndex> = new.iter().map(|x| &x.index).collect();
    let shard = shard::write_upload_shard(std::slice::from_ref(&file), &listed);
    (bytes, file, shard)
}

async fn cas_token(app: &impl App, hub: &str, repo: &str, kind: &str) -> String {
    let (st, _, b) = call(
        app,
        TestRequest::get()
            .uri(&format!("/api/models/{repo}/xet-{kind}-token/main"))
            .insert_header(bearer(hub)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json_of(&b)["accessToken"].as_str().unwrap().to_string()
}

async fn post_xorb(app: &impl App, cas: &str, x: &Xorb) -> (u16, Value) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/cas/v1/xorbs/default/{}", x.name))
            .insert_header(bearer(cas))
            .set_payload(x.body.clone()),
    )
    .await;
    (st, json_of(&b))
}

async fn post_shard(app: &impl App, cas: &str, body: &[u8]) -> (u16, Value) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri("/cas/v1/shards")
            .insert_header(bearer(cas))
            .set_payload(body.to_vec()),
    )
    .await;
    (st, json_of(&b))
}

/// Uploads the xorbs (200 each), then the shard (200).
async fn upload(app: &impl App, cas: &str, xorbs: &[&Xorb], shard: &[u8]) {
    for x in xorbs {
        let (st, v) = post_xorb(app, cas, x).await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = post_shard(app, cas, shard).await;
    assert_eq!(st, 200, "{v}");
}

/// A file's bytes through a v2 reconstruction and its data links, the way
/// hf_xet reads it (all terms here are whole xorbs).
async fn download(app: &impl App, cas: &str, file: &NewFile) -> Result<Vec<u8>, u16> {
    let (st, _, b) = call(
        app,
        TestRequest::get()
            .uri(&format!(
                "/cas/v2/reconstructions/{}",
                hash::hash_string(&file.hash)
            ))
            .insert_header(bearer(cas)),
    )
    .await;
    if st != 200 {
        return Err(st);
    }
    let r = json_of(&b);
    let mut out = vec![];
    for t in r["terms"].as_array().unwrap() {
        let entry = &r["xorbs"][t["hash"].as_str().unwrap()][0];
        let url = entry["url"].as_str().unwrap();
        let d = &entry["ranges"][0];
        let (bs, be) = (
            d["bytes"]["start"].as_u64().unwrap(),
            d["bytes"]["end"].as_u64().unwrap(),
        );
        let (st, _, bytes) = call(
            app,
            TestRequest::get()
                .uri(url.strip_prefix("http://hub.test").unwrap())
                .insert_header(("Range", format!("bytes={bs}-{be}"))),
        )
        .await;
        if st != 206 {
            return Err(st);
        }
        for c in xorb::decode_chunks(&bytes).unwrap() {
            out.extend_from_slice(&c);
        }
    }
    Ok(out)
}

/// Whether the xorb's object and its index row are there (both or neither).
async fn stored(t: &TestState, x: &Xorb) -> bool {
    let object = t
        .storage_dir
        .as_ref()
        .unwrap()
        .path()
        .join("xorbs/default")
        .join(&x.name)
        .exists();
    let (row,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM xet_xorbs WHERE hash = $1)")
        .bind(hash::hash_raw(&x.index.hash).to_vec())
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    assert_eq!(object, row, "xorb {}: object and row disagree", x.name);
    row
}

async fn count(t: &TestState, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&t.state.db)
        .await
        .unwrap()
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

async fn set_storage_quota(t: &TestState, ns: i64, bytes: i64) {
    hub_api::quota::set(
        &t.state.db,
        ns,
        &hub_api::quota::Settings {
            storage_bytes: Some(bytes),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn delete_repo(app: &impl App, tok: &str, ns: &str, name: &str) {
    let (st, _, b) = call(
        app,
        TestRequest::delete()
            .uri("/api/repos/delete")
            .insert_header(bearer(tok))
            .set_json(json!({"name": name, "organization": ns})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}

async fn sweep(t: &TestState, policy: &Policy) -> sweeper::Swept {
    sweeper::sweep_once(&t.state, policy).await.unwrap()
}

fn stored_len(xs: &[&Xorb]) -> i64 {
    xs.iter().map(|x| x.index.stored_len() as i64).sum()
}

#[actix_web::test]
async fn xet_quota_counts_the_xorb_bytes_a_namespace_added() {
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/base", false).await;
    create_repo(&app, &alice, "alice/tuned", false).await;
    let before = used(&app, &alice, "alice").await;

    // A checkpoint of three xorbs: the namespace pays their stored bytes.
    let (a, b, c) = (xorb(1, 300_000), xorb(2, 300_000), xorb(3, 300_000));
    let (_, base, base_shard) = file_of(&[&a, &b, &c], &[&a, &b, &c]);
    let cas = cas_token(&app, &alice, "alice/base", "write").await;
    upload(&app, &cas, &[&a, &b, &c], &base_shard).await;
    let after_base = used(&app, &alice, "alice").await;
    assert_eq!(after_base - before, stored_len(&[&a, &b, &c]));

    // A fine-tune that changed one xorb's worth, in another repo: it adds
    // only the new xorb, however large the file (each xorb counted once).
    let b2 = xorb(22, 300_000);
    let (_, tuned, tuned_shard) = file_of(&[&a, &b2, &c], &[&b2]);
    let cas2 = cas_token(&app, &alice, "alice/tuned", "write").await;
    upload(&app, &cas2, &[&b2], &tuned_shard).await;
    let after_tuned = used(&app, &alice, "alice").await;
    assert_eq!(after_tuned - after_base, stored_len(&[&b2]));
    assert!(after_tuned - before < (base.terms.len() + tuned.terms.len()) as i64 * 300_000);
    // Re-uploading a xorb it already has adds nothing.
    assert_eq!(post_xorb(&app, &cas2, &a).await.0, 200);
    assert_eq!(used(&app, &alice, "alice").await, after_tuned);

    // Over quota: a new xorb is refused before anything is stored, with the
    // LFS batch's code; one the namespace already pays for still passes.
    set_storage_quota(&t, alice_id, after_tuned + 1000).await;
    let big = xorb(4, 300_000);
    let (st, v) = post_xorb(&app, &cas2, &big).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (413, Some("quota_exceeded")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("bytes"), "{v}");
    assert!(!stored(&t, &big).await, "no object and no row");
    assert_eq!(
        count(&t, "SELECT count(*) FROM xet_xorb_reservations").await,
        0
    );
    assert_eq!(count(&t, "SELECT count(*) FROM xet_xorb_owners").await, 4);
    assert_eq!(post_xorb(&app, &cas2, &b).await.0, 200);
    // With room again it goes through, and the reservation is given back.
    set_storage_quota(&t, alice_id, after_tuned + stored_len(&[&big])).await;
    let (st, v) = post_xorb(&app, &cas2, &big).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        count(&t, "SELECT count(*) FROM xet_xorb_reservations").await,
        0
    );
    assert_eq!(
        used(&app, &alice, "alice").await,
        after_tuned + stored_len(&[&big])
    );
    // The other tenant is unaffected, and pays for its own copy of the bytes.
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    create_repo(&app, &bob, "bob/m", false).await;
    let bob_before = used(&app, &bob, "bob").await;
    let cas_b = cas_token(&app, &bob, "bob/m", "write").await;
    assert_eq!(post_xorb(&app, &cas_b, &a).await.0, 200);
    assert_eq!(
        used(&app, &bob, "bob").await - bob_before,
        stored_len(&[&a])
    );
}

#[actix_web::test]
async fn xet_sweeper_keeps_referenced_xorbs_and_collects_the_rest() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    for r in ["a", "b", "c"] {
        create_repo(&app, &alice, &format!("alice/{r}"), false).await;
    }
    let cas_a = cas_token(&app, &alice, "alice/a", "write").await;
    let cas_b = cas_token(&app, &alice, "alice/b", "write").await;
    let cas_c = cas_token(&app, &alice, "alice/c", "write").await;
    let [x1, x2, x3, x4, x5] = [11, 12, 13, 14, 15].map(|s| xorb(s, 200_000));
    // F1 registered in repo a over x1 x2; F2 registered in repo b over x1
    // (deduplicated) and x3; F5 in repo c over x1 and x5, committed there;
    // x4 uploaded and never referenced.
    let (f1_bytes, f1, s1) = file_of(&[&x1, &x2], &[&x1, &x2]);
    let (f2_bytes, f2, s2) = file_of(&[&x1, &x3], &[&x3]);
    let (f5_bytes, f5, s5) = file_of(&[&x1, &x5], &[&x5]);
    upload(&app, &cas_a, &[&x1, &x2], &s1).await;
    upload(&app, &cas_b, &[&x3], &s2).await;
    upload(&app, &cas_c, &[&x5], &s5).await;
    let sha5 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&f5_bytes))
    };
    let op = json!({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": sha5}});
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/c/commit/main")
            .insert_header(bearer(&alice))
            .insert_header(("Content-Type", "application/x-ndjson"))
            .set_payload(hub_testkit::ndjson("xet", None, &[op])),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(post_xorb(&app, &cas_a, &x4).await.0, 200);
    let resolve = |range: Option<&str>| {
        let mut r = TestRequest::get()
            .uri("/alice/c/resolve/main/w.bin")
            .insert_header(bearer(&alice));
        if let Some(range) = range {
            r = r.insert_header(("Range", range.to_string()));
        }
        r
    };

    // Within the grace period nothing goes, not even x4.
    let s = sweep(&t, &Policy::production(true)).await;
    assert_eq!((s.xorbs, s.xet_files, s.blobs), (0, 0, 0), "{s:?}");
    for x in [&x1, &x2, &x3, &x4, &x5] {
        assert!(stored(&t, x).await);
    }
    // After it, only the unreferenced x4.
    let s = sweep(&t, &Policy::immediate()).await;
    assert_eq!((s.xorbs, s.xet_files, s.blobs), (1, 0, 0), "{s:?}");
    assert!(!stored(&t, &x4).await);
    for x in [&x1, &x2, &x3, &x5] {
        assert!(stored(&t, x).await, "{} is referenced", x.name);
    }
    assert_eq!(download(&app, &cas_a, &f1).await.unwrap(), f1_bytes);
    assert_eq!(download(&app, &cas_b, &f2).await.unwrap(), f2_bytes);
    // A shard over the collected xorb is refused (the client re-uploads its
    // bytes after clearing its shard cache), and registers nothing.
    let files = count(&t, "SELECT count(*) FROM xet_repo_files").await;
    let (_, _, s4) = file_of(&[&x4], &[]);
    let (st, v) = post_shard(&app, &cas_a, &s4).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("invalid_xet_data")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("not stored"), "{v}");
    assert_eq!(
        count(&t, "SELECT count(*) FROM xet_repo_files").await,
        files
    );
    // Uploading x4 again makes it usable again.
    assert_eq!(post_xorb(&app, &cas_a, &x4).await.0, 200);
    let (st, v) = post_shard(&app, &cas_a, &s4).await;
    assert_eq!(st, 200, "{v}");

    // Repo a goes: F1, x4's file, their blobs and x2, x4 (only they used
    // them) go; x1 stays (F2 and the committed F5 use it), and F2 and F5
    // still download byte for byte, through the CAS and through /resolve.
    delete_repo(&app, &alice, "alice", "a").await;
    let s = sweep(&t, &Policy::immediate()).await;
    assert_eq!((s.xorbs, s.xet_files), (2, 2), "{s:?}");
    assert!(!stored(&t, &x2).await && !stored(&t, &x4).await);
    for x in [&x1, &x3, &x5] {
        assert!(stored(&t, x).await, "{} is referenced", x.name);
    }
    assert_eq!(download(&app, &cas_b, &f2).await.unwrap(), f2_bytes);
    assert_eq!(download(&app, &cas_c, &f5).await.unwrap(), f5_bytes);
    let (st, _, body) = call(&app, resolve(None)).await;
    assert_eq!(st, 200);
    assert_eq!(body, f5_bytes);
    let (st, _, body) = call(&app, resolve(Some("bytes=199000-201999"))).await;
    assert_eq!(st, 206);
    assert_eq!(body, &f5_bytes[199_000..202_000]);
    // A second pass finds nothing more.
    let s = sweep(&t, &Policy::immediate()).await;
    assert_eq!((s.xorbs, s.xet_files, s.blobs), (0, 0, 0), "{s:?}");
    // Repo b goes: x3 goes; x1 stays for the committed F5.
    delete_repo(&app, &alice, "alice", "b").await;
    let s = sweep(&t, &Policy::immediate()).await;
    assert_eq!(s.xorbs, 1, "{s:?}");
    assert!(!stored(&t, &x3).await);
    assert!(stored(&t, &x1).await && stored(&t, &x5).await);
    let (st, _, body) = call(&app, resolve(None)).await;
    assert_eq!((st, body == f5_bytes), (200, true));
    assert_eq!(
        count(&t, "SELECT count(*) FROM xet_xorbs").await,
        2,
        "only the committed file's xorbs are left"
    );
}

#[actix_web::test]
async fn xet_sweeper_keeps_xorbs_a_dedup_answer_handed_out() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/a", false).await;
    create_repo(&app, &alice, "alice/b", false).await;
    let cas_a = cas_token(&app, &alice, "alice/a", "write").await;
    let cas_b = cas_token(&app, &alice, "alice/b", "write").await;
    let (y1, y2) = (xorb(41, 200_000), xorb(42, 200_000));
    let (_, _, sy) = file_of(&[&y1, &y2], &[&y1, &y2]);
    upload(&app, &cas_a, &[&y1, &y2], &sy).await;
    // A client uploading to repo b asks the dedup query about the file's
    // first chunk: the answer hands out y1 and y2, usable for seven days.
    let first = hash::hash_string(&y1.index.chunks[0].hash);
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/cas/v1/chunks/default/{first}"))
            .insert_header(bearer(&cas_b)),
    )
    .await;
    assert_eq!(st, 200);
    // Repo a goes, and with it the only file over y1 and y2; the set it
    // uploaded stays, marked as handed out: its xorbs are kept while the
    // answer's key is valid.
    delete_repo(&app, &alice, "alice", "a").await;
    let hold = Policy {
        dedup_hold: chrono::Duration::days(8),
        ..Policy::immediate()
    };
    let s = sweep(&t, &hold).await;
    assert_eq!((s.xet_files, s.xorbs), (1, 0), "{s:?}");
    assert!(stored(&t, &y1).await && stored(&t, &y2).await);
    // The client registers its deduplicated file in repo b: it works.
    let (bytes, f, s_b) = file_of(&[&y1, &y2], &[]);
    let (st, v) = post_shard(&app, &cas_b, &s_b).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(download(&app, &cas_b, &f).await.unwrap(), bytes);
    delete_repo(&app, &alice, "alice", "b").await;
    // Still handed out: kept. Once the key has expired, they go, set and all.
    let s = sweep(&t, &hold).await;
    assert_eq!(s.xorbs, 0, "{s:?}");
    let s = sweep(&t, &Policy::immediate()).await;
    assert_eq!(s.xorbs, 2, "{s:?}");
    assert!(s.xet_sets >= 1, "{s:?}");
    assert!(!stored(&t, &y1).await && !stored(&t, &y2).await);
    assert_eq!(count(&t, "SELECT count(*) FROM xet_uploads").await, 0);
}

/// The collector runs back to back with no grace at all while shards register
/// files over freshly uploaded xorbs (each collectable the moment it is
/// stored): a shard is either refused (400, the xorb was collected first) or
/// registered, and then every xorb it uses is stored and the file downloads.
#[actix_web::test]
async fn xet_registration_never_points_at_a_collected_xorb() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/a", false).await;
    let cas = cas_token(&app, &alice, "alice/a", "write").await;
    let stop = std::cell::Cell::new(false);
    let collected = std::cell::Cell::new(0usize);
    // Xet collection with no grace; staging objects and objects no row knows
    // yet keep theirs (with none, the scan deletes a xorb or recipe between
    // its write and its row, which the production graces of hours rule out).
    let policy = Policy {
        staging_grace: chrono::Duration::hours(6),
        pending_grace: chrono::Duration::hours(1),
        scan_grace: chrono::Duration::hours(6),
        ..Policy::immediate()
    };
    let collector = async {
        while !stop.get() {
            let s = sweep(&t, &policy).await;
            collected.set(collected.get() + s.xorbs);
            actix_web::rt::task::yield_now().await;
        }
    };
    // At least ROUNDS uploads, and on until the collector has taken some
    // xorb (whether it wins a race in a given round is up to the scheduler).
    const ROUNDS: u64 = 20;
    const MAX_ROUNDS: u64 = 400;
    let writers = async {
        let mut registered = vec![];
        let mut refused = 0;
        for round in 0..MAX_ROUNDS {
            if round >= ROUNDS && collected.get() > 0 {
                break;
            }
            let (x, y) = (xorb(1_000 + round, 70_000), xorb(10_000 + round, 70_000));
            let (bytes, file, s) = file_of(&[&x, &y], &[&x, &y]);
            for z in [&x, &y] {
                let (st, v) = post_xorb(&app, &cas, z).await;
                assert_eq!(st, 200, "xorb: {v}");
                actix_web::rt::task::yield_now().await;
            }
            let (st, v) = post_shard(&app, &cas, &s).await;
            match st {
                200 => registered.push((bytes, file, x, y)),
                400 => {
                    assert!(v["error"].as_str().unwrap().contains("not stored"), "{v}");
                    refused += 1;
                }
                _ => panic!("shard: {st} {v}"),
            }
        }
        stop.set(true);
        (registered, refused)
    };
    let ((registered, refused), ()) = futures::join!(writers, collector);
    assert!(
        collected.get() > 0,
        "the collector took no xorb in {MAX_ROUNDS} rounds"
    );
    eprintln!(
        "{} registered, {refused} refused, {} xorbs collected",
        registered.len(),
        collected.get()
    );
    for (bytes, file, x, y) in &registered {
        assert!(stored(&t, x).await && stored(&t, y).await);
        assert_eq!(&download(&app, &cas, file).await.unwrap(), bytes);
    }
    // And a pass after the race keeps every registered file's xorbs.
    sweep(&t, &Policy::immediate()).await;
    for (bytes, file, _, _) in &registered {
        assert_eq!(&download(&app, &cas, file).await.unwrap(), bytes);
    }
}

/// One hf_xet transfer makes up to 64 concurrent CAS calls; a burst of 300
/// from one IP with a valid token is within the namespace's CAS bucket,
/// while the same burst of anonymous calls (and CAS calls with a bad token)
/// is limited per IP.
#[actix_web::test]
async fn xet_cas_calls_have_a_bucket_of_their_own() {
    let mut t = TestState::new().await;
    // The default anonymous burst (200) with a slow refill, so the count
    // does not depend on how fast this machine answers; the default CAS rate.
    let defaults = t.state.tenancy.rate.defaults;
    t.state.tenancy.rate = std::sync::Arc::new(hub_api::ratelimit::RateLimiter::new(
        hub_api::ratelimit::RateDefaults {
            anonymous: hub_api::ratelimit::Rate {
                per_s: 1,
                burst: defaults.anonymous.burst,
            },
            ..defaults
        },
    ));
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/a", false).await;
    // A write token: the dedup query is an upload's call (a read token gets 403).
    let cas = cas_token(&app, &alice, "alice/a", "write").await;
    let ip = "10.9.8.7:1000".parse().unwrap();
    let miss = hash::hash_string(&hash::chunk_hash(b"nothing"));
    let cas_call = |tok: &str| {
        TestRequest::get()
            .uri(&format!("/cas/v1/chunks/default/{miss}"))
            .insert_header(bearer(tok))
            .peer_addr(ip)
    };
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        *codes.entry(call(&app, cas_call(&cas)).await.0).or_insert(0) += 1;
    }
    assert_eq!(codes, [(404u16, 300)].into(), "CAS calls with a token");
    // Anonymous traffic from that IP still has its own (anonymous) bucket.
    let mut limited = 0;
    for _ in 0..300 {
        let req = TestRequest::get().uri("/api/models").peer_addr(ip);
        if call(&app, req).await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 90, "anonymous calls are limited: {limited}");
    // A bad token is no way around it: counted per IP, so 429 now.
    let (st, _, _) = call(&app, cas_call("not-a-token")).await;
    assert_eq!(st, 429);
    // The CAS bucket was not the IP's: the token still works.
    assert_eq!(call(&app, cas_call(&cas)).await.0, 404);

    // A CAS bucket runs out too, at the configured CAS rate, per namespace
    // (another repo's token of the same namespace shares it).
    let mut state = t.state.clone();
    state.tenancy.rate = std::sync::Arc::new(
        hub_api::ratelimit::RateLimiter::new(defaults)
            .with_cas(hub_api::ratelimit::Rate { per_s: 1, burst: 3 }),
    );
    let app = hub_testkit::app(&state).await;
    create_repo(&app, &alice, "alice/c", false).await;
    let other = cas_token(&app, &alice, "alice/c", "write").await;
    let codes: Vec<u16> = {
        let mut v = vec![];
        for tok in [&cas, &other, &cas, &other] {
            v.push(call(&app, cas_call(tok)).await.0);
        }
        v
    };
    assert_eq!(codes, [404, 404, 404, 429]);
}
