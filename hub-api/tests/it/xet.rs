//! Xet storage (issue 12, step 2): the token routes and the CAS under `/cas`,
//! through the real app, a real PostgreSQL and a real local object store.
//! Bodies are produced with `hub_xet` (the stock client's formats).

use crate::common::*;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use hub_xet::hash::{self, XetHash};
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

/// A file split over two xorbs (LZ4 and uncompressed), as hf_xet would
/// upload it: the xorb bodies, their indexes, and the upload-form shard.
struct Upload {
    data: Vec<u8>,
    xorbs: Vec<(String, Vec<u8>, XorbIndex)>,
    file: NewFile,
    shard: Vec<u8>,
}

fn xorb_of(chunks: &[&[u8]], scheme: Compression) -> (String, Vec<u8>, XorbIndex) {
    let body = xorb::serialize_chunks(chunks, scheme);
    let leaves: Vec<_> = chunks
        .iter()
        .map(|c| (hash::chunk_hash(c), c.len() as u64))
        .collect();
    let claimed = hash::xorb_hash(&leaves);
    let idx = xorb::validate(&body, &claimed, &Default::default()).unwrap();
    (hash::hash_string(&claimed), body, idx)
}

fn upload(seed: u64, n: usize) -> Upload {
    upload_of(data(seed, n))
}

fn upload_of(data: Vec<u8>) -> Upload {
    let chunks = hub_xet::chunker::chunks(&data);
    assert!(chunks.len() >= 4, "the test file needs several chunks");
    let half = chunks.len() / 2;
    let x1 = xorb_of(&chunks[..half], Compression::Lz4);
    let x2 = xorb_of(&chunks[half..], Compression::None);
    let mut leaves = vec![];
    let mut terms = vec![];
    let mut verification = vec![];
    for x in [&x1.2, &x2.2] {
        leaves.extend(x.hashes_and_sizes());
        verification.push(hash::verification_hash(
            &x.chunks.iter().map(|c| c.hash).collect::<Vec<_>>(),
        ));
        terms.push(FileTerm {
            xorb: x.hash,
            chunk_start: 0,
            chunk_end: x.chunks.len() as u32,
            unpacked_bytes: x.uncompressed_bytes() as u32,
        });
    }
    let file = NewFile {
        hash: hash::file_hash(&leaves),
        terms,
        verification,
        sha256: Some(hash::sha256_of(&data)),
    };
    let shard = shard::write_upload_shard(std::slice::from_ref(&file), &[&x1.2, &x2.2]);
    Upload {
        data,
        xorbs: vec![x1, x2],
        file,
        shard,
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// `GET xet-{kind}-token/{rev}` with an optional hub token.
async fn token_call(
    app: &impl App,
    hub: Option<&str>,
    repo: &str,
    kind: &str,
    rev: &str,
) -> (u16, actix_web::http::header::HeaderMap, Vec<u8>) {
    let mut req = TestRequest::get().uri(&format!("/api/models/{repo}/xet-{kind}-token/{rev}"));
    if let Some(t) = hub {
        req = req.insert_header(bearer(t));
    }
    call(app, req).await
}

/// A CAS access token (asserting the route answers 200).
async fn cas_token(app: &impl App, hub: Option<&str>, repo: &str, kind: &str) -> String {
    let (st, _, b) = token_call(app, hub, repo, kind, "main").await;
    assert_eq!(
        st,
        200,
        "{kind} token for {repo}: {}",
        String::from_utf8_lossy(&b)
    );
    json_of(&b)["accessToken"].as_str().unwrap().to_string()
}

async fn post_xorb(app: &impl App, cas: &str, hash: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/cas/v1/xorbs/default/{hash}"))
            .insert_header(bearer(cas))
            .set_payload(body.to_vec()),
    )
    .await;
    (st, b)
}

async fn post_shard(app: &impl App, cas: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(path)
            .insert_header(bearer(cas))
            .set_payload(body.to_vec()),
    )
    .await;
    (st, b)
}

/// Uploads every xorb and the shard of `u` with a write token.
async fn upload_all(app: &impl App, cas: &str, u: &Upload) {
    for (h, body, _) in &u.xorbs {
        let (st, b) = post_xorb(app, cas, h, body).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    }
    let (st, b) = post_shard(app, cas, "/cas/v1/shards", &u.shard).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b), json!({"result": 1}));
}

/// Path and query of a data link (the app is in process).
fn local(url: &str) -> String {
    url.strip_prefix("http://hub.test")
        .expect("a hub URL")
        .to_string()
}

async fn fetch(app: &impl App, url: &str, start: u64, end: u64) -> (u16, Vec<u8>) {
    let (st, h, b) = call(
        app,
        TestRequest::get()
            .uri(&local(url))
            .insert_header(("Range", format!("bytes={start}-{end}"))),
    )
    .await;
    if st == 206 {
        // A tenant's bytes: never sniffed or rendered on the hub's origin.
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(
            h.get("content-security-policy").unwrap(),
            "sandbox; default-src 'none'"
        );
    }
    (st, b)
}

/// Reassembles a file (or the requested range) from a v2 reconstruction,
/// the way hf_xet does: per term, fetch its descriptor's bytes through the
/// data link, decode the chunks, then skip `offset_into_first_range`.
async fn reassemble_v2(app: &impl App, r: &Value, want: usize) -> Vec<u8> {
    let mut out = vec![];
    for t in r["terms"].as_array().unwrap() {
        let (ts, te) = (
            t["range"]["start"].as_u64().unwrap(),
            t["range"]["end"].as_u64().unwrap(),
        );
        let entries = r["xorbs"][t["hash"].as_str().unwrap()].as_array().unwrap();
        let (url, d) = entries
            .iter()
            .flat_map(|e| {
                e["ranges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |d| (e["url"].as_str().unwrap(), d))
            })
            .find(|(_, d)| {
                d["chunks"]["start"].as_u64().unwrap() <= ts
                    && te <= d["chunks"]["end"].as_u64().unwrap()
            })
            .expect("a fetch entry covering the term");
        let (bs, be) = (
            d["bytes"]["start"].as_u64().unwrap(),
            d["bytes"]["end"].as_u64().unwrap(),
        );
        let (st, bytes) = fetch(app, url, bs, be).await;
        assert_eq!(st, 206);
        assert_eq!(
            bytes.len() as u64,
            be - bs + 1,
            "exactly the requested bytes"
        );
        let chunks = xorb::decode_chunks(&bytes).unwrap();
        let cs = d["chunks"]["start"].as_u64().unwrap();
        let mut term = vec![];
        for c in &chunks[(ts - cs) as usize..(te - cs) as usize] {
            term.extend_from_slice(c);
        }
        assert_eq!(term.len() as u64, t["unpacked_length"].as_u64().unwrap());
        out.extend(term);
    }
    let skip = r["offset_into_first_range"].as_u64().unwrap() as usize;
    out.drain(..skip);
    out.truncate(want);
    out
}

/// The same from a v1 reconstruction (one link per fetch entry).
async fn reassemble_v1(app: &impl App, r: &Value, want: usize) -> Vec<u8> {
    let mut out = vec![];
    for t in r["terms"].as_array().unwrap() {
        let (ts, te) = (
            t["range"]["start"].as_u64().unwrap(),
            t["range"]["end"].as_u64().unwrap(),
        );
        let e = r["fetch_info"][t["hash"].as_str().unwrap()]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["range"]["start"].as_u64().unwrap() <= ts
                    && te <= e["range"]["end"].as_u64().unwrap()
            })
            .expect("a fetch entry covering the term");
        let (bs, be) = (
            e["url_range"]["start"].as_u64().unwrap(),
            e["url_range"]["end"].as_u64().unwrap(),
        );
        let (st, bytes) = fetch(app, e["url"].as_str().unwrap(), bs, be).await;
        assert_eq!(st, 206);
        let chunks = xorb::decode_chunks(&bytes).unwrap();
        let cs = e["range"]["start"].as_u64().unwrap();
        for c in &chunks[(ts - cs) as usize..(te - cs) as usize] {
            out.extend_from_slice(c);
        }
    }
    let skip = r["offset_into_first_range"].as_u64().unwrap() as usize;
    out.drain(..skip);
    out.truncate(want);
    out
}

async fn reconstruction(
    app: &impl App,
    cas: &str,
    v: u8,
    file: &str,
    range: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut req = TestRequest::get()
        .uri(&format!("/cas/v{v}/reconstructions/{file}"))
        .insert_header(bearer(cas));
    if let Some(r) = range {
        req = req.insert_header(("Range", r.to_string()));
    }
    let (st, _, b) = call(app, req).await;
    (st, b)
}

async fn count(t: &TestState, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&t.state.db)
        .await
        .unwrap()
}

/// Files under the object store's `xorbs/` (and staging) directories.
fn stored_objects(t: &TestState, dir: &str) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        match std::fs::read_dir(p) {
            Err(_) => 0,
            Ok(rd) => rd
                .map(|e| {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum(),
        }
    }
    walk(&t.storage_dir.as_ref().unwrap().path().join(dir))
}

fn put_json(uri: &str, tok: &str, body: Value) -> TestRequest {
    TestRequest::put()
        .uri(uri)
        .insert_header(bearer(tok))
        .set_json(body)
}

#[actix_web::test]
async fn xet_token_routes_answer_json_and_headers_with_repo_rights() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/pub", false).await;
    commit_files(&app, &alice, "alice/pub", &[("a.txt", b"a")]).await;
    create_repo(&app, &alice, "alice/priv", true).await;
    commit_files(&app, &alice, "alice/priv", &[("a.txt", b"a")]).await;

    // JSON body and the three headers, the same values.
    for kind in ["write", "read"] {
        let before = chrono::Utc::now().timestamp();
        let (st, h, b) = token_call(&app, Some(&alice), "alice/pub", kind, "main").await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        let j = json_of(&b);
        assert_eq!(j["casUrl"], "http://hub.test/cas");
        let exp = j["exp"].as_i64().unwrap();
        assert!((before + 3590..=before + 3610).contains(&exp), "exp {exp}");
        let tok = j["accessToken"].as_str().unwrap();
        assert!(!tok.is_empty());
        assert_eq!(h.get("X-Xet-Cas-Url").unwrap(), "http://hub.test/cas");
        assert_eq!(h.get("X-Xet-Access-Token").unwrap(), tok);
        assert_eq!(
            h.get("X-Xet-Token-Expiration").unwrap().to_str().unwrap(),
            exp.to_string()
        );
    }
    // PR uploads: revision `None` with ?create_pr=1 (§2.1), only with it.
    let (st, _, _) = token_call(&app, Some(&alice), "alice/pub", "write", "None?create_pr=1").await;
    assert_eq!(st, 200);
    let (st, _, _) = token_call(&app, Some(&alice), "alice/pub", "write", "None").await;
    assert_eq!(st, 404);
    // Bad credentials: 401; read access only: 403 on write. Anonymous
    // writers get what every write route of the hub answers them (the
    // existing access check, here compared with preupload's answer).
    let (anon_pre, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/pub/preupload/main")
            .set_json(json!({"files": []})),
    )
    .await;
    assert!(anon_pre == 401 || anon_pre == 403, "{anon_pre}");
    assert_eq!(
        token_call(&app, None, "alice/pub", "write", "main").await.0,
        anon_pre
    );
    assert_eq!(
        token_call(&app, Some("hf_bogus"), "alice/pub", "read", "main")
            .await
            .0,
        401
    );
    assert_eq!(
        token_call(&app, Some(&bob), "alice/pub", "write", "main")
            .await
            .0,
        403
    );
    // Public repo: anyone reads, anonymous too.
    assert_eq!(
        token_call(&app, None, "alice/pub", "read", "main").await.0,
        200
    );
    assert_eq!(
        token_call(&app, Some(&bob), "alice/pub", "read", "main")
            .await
            .0,
        200
    );
    // Private repo: outsiders see nothing (404), like the rest of the API.
    assert_eq!(
        token_call(&app, Some(&bob), "alice/priv", "read", "main")
            .await
            .0,
        404
    );
    assert_eq!(
        token_call(&app, Some(&bob), "alice/priv", "write", "main")
            .await
            .0,
        404
    );
    assert_eq!(
        token_call(&app, None, "alice/priv", "read", "main").await.0,
        404
    );
    assert_eq!(
        token_call(&app, Some(&alice), "alice/priv", "read", "main")
            .await
            .0,
        200
    );
    // Unknown repo and revision: 404.
    assert_eq!(
        token_call(&app, Some(&alice), "alice/nope", "read", "main")
            .await
            .0,
        404
    );
    let (st, _, b) = token_call(&app, Some(&alice), "alice/pub", "read", "nobranch").await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (404, Some("revision_not_found"))
    );
    // Gated repo: a read token is a download, so the gate applies (403
    // gated_repo); the owner passes.
    let (st, _, _) = call(
        &app,
        put_json(
            "/api/models/alice/pub/settings",
            &alice,
            json!({"gated": "manual"}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, b) = token_call(&app, Some(&bob), "alice/pub", "read", "main").await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (403, Some("gated_repo"))
    );
    assert_eq!(
        token_call(&app, Some(&alice), "alice/pub", "read", "main")
            .await
            .0,
        200
    );
}

#[actix_web::test]
async fn xet_cas_refuses_missing_bad_and_read_only_tokens() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"a")]).await;
    let u = upload(1, 300_000);
    let (h, body, _) = &u.xorbs[0];
    // No token, a hub token (not a CAS token), garbage: 401.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/cas/v1/xorbs/default/{h}"))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(post_xorb(&app, &alice, h, body).await.0, 401);
    assert_eq!(post_xorb(&app, "x.y.z", h, body).await.0, 401);
    // A read token can only read.
    let read = cas_token(&app, Some(&alice), "alice/m", "read").await;
    let (st, b) = post_xorb(&app, &read, h, body).await;
    assert_eq!((st, json_of(&b)["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        post_shard(&app, &read, "/cas/v1/shards", &u.shard).await.0,
        403
    );
    assert_eq!(count(&t, "xet_xorbs").await, 0);
    assert_eq!(stored_objects(&t, "xorbs"), 0);
    // Optional and unknown routes are 404 (hf_xet falls back only on 404),
    // for every method, also on served paths.
    let write = cas_token(&app, Some(&alice), "alice/m", "write").await;
    for (m, p) in [
        ("POST", format!("/cas/v1/xorb-grants/default/{h}")),
        ("POST", "/cas/v2/shards".to_string()),
        ("GET", "/cas/v1/nothing".to_string()),
        ("PUT", format!("/cas/v1/xorbs/default/{h}")),
        ("GET", "/cas/v1/shards".to_string()),
    ] {
        let req = TestRequest::default()
            .method(actix_web::http::Method::from_bytes(m.as_bytes()).unwrap())
            .uri(&p)
            .insert_header(bearer(&write));
        assert_eq!(call(&app, req).await.0, 404, "{m} {p}");
    }
}

#[actix_web::test]
async fn xet_xorb_upload_validates_stores_once_and_rejects_corruption() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"a")]).await;
    let cas = cas_token(&app, Some(&alice), "alice/m", "write").await;
    let u = upload(2, 300_000);
    let (h, body, idx) = &u.xorbs[0];

    // Corrupt: one flipped payload byte, a wrong claimed hash, a truncated
    // body, a bad hash string. 400 with a message, nothing stored.
    let mut flipped = body.clone();
    flipped[100] ^= 1;
    let other = &u.xorbs[1].0;
    for (claim, b, why) in [
        (h.as_str(), &flipped[..], "flipped byte"),
        (other.as_str(), &body[..], "wrong hash"),
        (h.as_str(), &body[..body.len() - 3], "truncated"),
        ("abc", &body[..], "bad hash string"),
    ] {
        let (st, resp) = post_xorb(&app, &cas, claim, b).await;
        let j = json_of(&resp);
        assert_eq!(
            (st, j["code"].as_str()),
            (400, Some("invalid_xet_data")),
            "{why}: {j}"
        );
        assert!(!j["error"].as_str().unwrap().is_empty());
    }
    assert_eq!(count(&t, "xet_xorbs").await, 0);
    assert_eq!(stored_objects(&t, "xorbs"), 0);
    assert_eq!(stored_objects(&t, "staging"), 0);
    // Other prefixes are refused.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/cas/v1/xorbs/other/{h}"))
            .insert_header(bearer(&cas))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(st, 400);

    // Valid: stored (the §5.6 stored form) and indexed once.
    let (st, b) = post_xorb(&app, &cas, h, body).await;
    assert_eq!((st, json_of(&b)), (200, json!({"was_inserted": true})));
    let (st, b) = post_xorb(&app, &cas, h, body).await;
    assert_eq!((st, json_of(&b)), (200, json!({"was_inserted": false})));
    assert_eq!(count(&t, "xet_xorbs").await, 1);
    let stored = std::fs::read(
        t.storage_dir
            .as_ref()
            .unwrap()
            .path()
            .join(format!("xorbs/default/{h}")),
    )
    .unwrap();
    assert_eq!(stored, xorb::stored_object(body, idx));
    let (n, len): (i32, i64) = sqlx::query_as("SELECT num_chunks, stored_bytes FROM xet_xorbs")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    assert_eq!(
        (n as usize, len as u64),
        (idx.chunks.len(), idx.stored_len())
    );
    assert_eq!(stored_objects(&t, "staging"), 0);

    // Over the body limit: 413 before validation.
    let mut small = t.state.clone();
    small.limits.xet_xorb_body = 1000;
    let app2 = hub_testkit::app(&small).await;
    let (st, b) = post_xorb(&app2, &cas, &u.xorbs[1].0, &u.xorbs[1].1).await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[actix_web::test]
async fn xet_shard_registers_a_file_that_reconstructs_through_data_links() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"a")]).await;
    create_repo(&app, &alice, "alice/other", false).await;
    commit_files(&app, &alice, "alice/other", &[("a.txt", b"a")]).await;
    let cas = cas_token(&app, Some(&alice), "alice/m", "write").await;
    let u = upload(3, 700_000);
    let file = hash::hash_string(&u.file.hash);

    // A shard whose xorbs are not uploaded yet: 400, nothing registered.
    let (st, b) = post_shard(&app, &cas, "/cas/v1/shards", &u.shard).await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (400, Some("invalid_xet_data"))
    );
    assert!(json_of(&b)["error"]
        .as_str()
        .unwrap()
        .contains("not stored"));
    // Garbage and a tampered shard: 400.
    assert_eq!(
        post_shard(&app, &cas, "/cas/v1/shards", b"not a shard")
            .await
            .0,
        400
    );
    for (h, body, _) in &u.xorbs {
        assert_eq!(post_xorb(&app, &cas, h, body).await.0, 200);
    }
    let mut tampered = u.shard.clone();
    let at = tampered.len() - 40;
    tampered[at] ^= 0xff;
    assert_eq!(
        post_shard(&app, &cas, "/cas/v1/shards", &tampered).await.0,
        400
    );
    // A shard whose SHA-256 does not match the stored bytes: 400.
    let mut lying = u.file.clone();
    lying.sha256 = Some(hash::sha256_of(b"something else"));
    let lie = shard::write_upload_shard(&[lying], &[&u.xorbs[0].2, &u.xorbs[1].2]);
    let (st, b) = post_shard(&app, &cas, "/cas/v1/shards", &lie).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    for table in [
        "xet_files",
        "xet_repo_files",
        "xet_file_xorbs",
        "xet_uploads",
        "xet_dedup_chunks",
    ] {
        assert_eq!(count(&t, table).await, 0, "{table} after refused shards");
    }

    // The real shard, on the old unversioned alias: registered for this repo.
    let (st, b) = post_shard(&app, &cas, "/cas/shards", &u.shard).await;
    assert_eq!((st, json_of(&b)), (200, json!({"result": 1})));
    let (sha,): (String,) = sqlx::query_as("SELECT sha256 FROM xet_repo_files")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    assert_eq!(sha, sha256_hex(&u.data));

    // Whole file, v2 and v1, with a read token: reassembled from the links.
    let read = cas_token(&app, Some(&alice), "alice/m", "read").await;
    let (st, b) = reconstruction(&app, &read, 2, &file, None).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let r = json_of(&b);
    assert_eq!(r["terms"].as_array().unwrap().len(), 2);
    assert_eq!(reassemble_v2(&app, &r, u.data.len()).await, u.data);
    let (st, b) = reconstruction(&app, &read, 1, &file, None).await;
    assert_eq!(st, 200);
    assert_eq!(
        reassemble_v1(&app, &json_of(&b), u.data.len()).await,
        u.data
    );

    // Ranges: inside chunks, across the two xorbs, clamped past the end.
    let size = u.data.len() as u64;
    for (a, z) in [
        (1000u64, 5000u64),
        (200_000, 600_000),
        (size - 10, size + 1000),
        (0, 0),
    ] {
        let (st, b) = reconstruction(
            &app,
            &read,
            2,
            &file,
            Some(format!("bytes={a}-{z}").as_str()),
        )
        .await;
        assert_eq!(st, 200, "{a}-{z}");
        let want = (z.min(size - 1) - a + 1) as usize;
        let got = reassemble_v2(&app, &json_of(&b), want).await;
        assert_eq!(got, u.data[a as usize..a as usize + want], "{a}-{z}");
    }
    // 416 exactly when the start is at or past the end.
    for r in [
        format!("bytes={size}-{}", size + 10),
        format!("bytes={}-", size + 5),
    ] {
        let (st, _) = reconstruction(&app, &read, 2, &file, Some(r.as_str())).await;
        assert_eq!(st, 416, "{r}");
        assert_eq!(
            reconstruction(&app, &read, 1, &file, Some(r.as_str()))
                .await
                .0,
            416
        );
    }
    assert_eq!(
        reconstruction(&app, &read, 2, &file, Some("bytes=5-2"))
            .await
            .0,
        400
    );
    // Unknown file, bad id: 404, 400.
    let unknown = hash::hash_string(&hash::chunk_hash(b"nothing"));
    assert_eq!(reconstruction(&app, &read, 2, &unknown, None).await.0, 404);
    assert_eq!(reconstruction(&app, &read, 2, "zz", None).await.0, 400);
    // Another repo's token (same owner) does not see this repo's file: a
    // write token registers files for its own repo only.
    let other = cas_token(&app, Some(&alice), "alice/other", "read").await;
    assert_eq!(reconstruction(&app, &other, 2, &file, None).await.0, 404);
    let other_w = cas_token(&app, Some(&alice), "alice/other", "write").await;
    assert_eq!(reconstruction(&app, &other_w, 2, &file, None).await.0, 404);

    // Data links: exactly the listed range, nothing else; no token needed.
    let (_, b) = reconstruction(&app, &read, 1, &file, None).await;
    let r = json_of(&b);
    let x1 = &u.xorbs[0];
    let e = &r["fetch_info"][&x1.0][0];
    let url = e["url"].as_str().unwrap();
    let (bs, be) = (
        e["url_range"]["start"].as_u64().unwrap(),
        e["url_range"]["end"].as_u64().unwrap(),
    );
    let stored = xorb::stored_object(&x1.1, &x1.2);
    let (st, bytes) = fetch(&app, url, bs + 8, bs + 20).await;
    assert_eq!(
        (st, &bytes[..]),
        (206, &stored[bs as usize + 8..=bs as usize + 20])
    );
    assert_eq!(
        fetch(&app, url, bs, be + 1).await.0,
        403,
        "past the signed range"
    );
    let (st, _, _) = call(
        &app,
        TestRequest::get().uri(&local(url).replace(&x1.0, &u.xorbs[1].0)),
    )
    .await;
    assert_eq!(st, 403, "another xorb");
    let mut forged = local(url);
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        call(
            &app,
            TestRequest::get()
                .uri(&forged)
                .insert_header(("Range", format!("bytes={bs}-{be}")))
        )
        .await
        .0,
        403
    );
    let bare = format!("/cas/v1/xorbs/default/{}", x1.0);
    assert_eq!(call(&app, TestRequest::get().uri(&bare)).await.0, 403);

    // An expired link: 403 (the client then asks for a new reconstruction).
    let mut short = t.state.clone();
    short.limits.xet_data_link_ttl_s = 2;
    let app_short = hub_testkit::app(&short).await;
    let (_, b) = reconstruction(&app_short, &read, 2, &file, None).await;
    let r = json_of(&b);
    let d = &r["xorbs"][&x1.0][0];
    let url = d["url"].as_str().unwrap().to_string();
    let (bs, be) = (
        d["ranges"][0]["bytes"]["start"].as_u64().unwrap(),
        d["ranges"][0]["bytes"]["end"].as_u64().unwrap(),
    );
    assert_eq!(
        fetch(&app_short, &url, bs, be).await.0,
        206,
        "valid before expiry"
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (st, b) = fetch(&app_short, &url, bs, be).await;
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&b));
}

#[actix_web::test]
async fn xet_dedup_query_and_xorb_references_stay_within_the_namespace() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    for (tok, repo) in [(&alice, "alice/m"), (&alice, "alice/n"), (&bob, "bob/m")] {
        create_repo(&app, tok, repo, false).await;
        commit_files(&app, tok, repo, &[("a.txt", b"a")]).await;
    }
    let cas = cas_token(&app, Some(&alice), "alice/m", "write").await;
    let u = upload(4, 400_000);
    // First chunk of a file: always dedup-eligible.
    let first = u.xorbs[0].2.chunks[0].hash;
    let first_s = hash::hash_string(&first);
    let query = |tok: String, prefix: &'static str, chunk: String| {
        TestRequest::get()
            .uri(&format!("/cas/v1/chunks/{prefix}/{chunk}"))
            .insert_header(bearer(&tok))
    };
    // Before the upload: a miss.
    assert_eq!(
        call(&app, query(cas.clone(), "default", first_s.clone()))
            .await
            .0,
        404
    );
    upload_all(&app, &cas, &u).await;

    // A read token is refused, even the namespace owner's: the answer covers
    // every repo of the namespace, and anyone can mint a read token for a
    // public repo (here anonymously).
    for (who, repo) in [(Some(alice.as_str()), "alice/n"), (None, "alice/n")] {
        let read = cas_token(&app, who, repo, "read").await;
        let (st, _, b) = call(&app, query(read, "default", first_s.clone())).await;
        assert_eq!(st, 403, "{}", String::from_utf8_lossy(&b));
    }
    // A hit, with either prefix, for a write token of any repo of the
    // namespace: a full shard listing the upload's xorbs, chunk hashes keyed
    // (not the raw ones), sizes intact.
    let alice_n = cas_token(&app, Some(&alice), "alice/n", "write").await;
    for (tok, prefix) in [
        (cas.clone(), "default"),
        (cas.clone(), "default-merkledb"),
        (alice_n, "default"),
    ] {
        let (st, h, b) = call(&app, query(tok, prefix, first_s.clone())).await;
        assert_eq!(st, 200, "{prefix}");
        assert_eq!(h.get("content-type").unwrap(), "application/octet-stream");
        let parsed = shard::parse(&b, shard::DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert!(parsed.files.is_empty());
        let listed: Vec<XetHash> = parsed.xorbs.iter().map(|x| x.hash).collect();
        assert_eq!(listed, vec![u.xorbs[0].2.hash, u.xorbs[1].2.hash]);
        let x = &parsed.xorbs[0];
        assert_eq!(x.chunks.len(), u.xorbs[0].2.chunks.len());
        assert_ne!(x.chunks[0].hash, first, "chunk hashes are HMAC-keyed");
        assert_eq!(x.chunks[0].len, u.xorbs[0].2.chunks[0].uncompressed_len);
    }
    // A chunk nobody uploaded, a bad prefix: 404.
    let miss = hash::hash_string(&hash::chunk_hash(b"never uploaded"));
    assert_eq!(call(&app, query(cas.clone(), "default", miss)).await.0, 404);
    assert_eq!(
        call(&app, query(cas.clone(), "other", first_s.clone()))
            .await
            .0,
        404
    );
    // Another tenant never sees this namespace's chunks, not even as a 200.
    let bob_w = cas_token(&app, Some(&bob), "bob/m", "write").await;
    assert_eq!(
        call(&app, query(bob_w.clone(), "default", first_s.clone()))
            .await
            .0,
        404
    );
    // Nor can bob reconstruct alice's file with his own repo's token.
    let file = hash::hash_string(&u.file.hash);
    assert_eq!(reconstruction(&app, &bob_w, 2, &file, None).await.0, 404);
    // Nor register a file over alice's xorbs by their hashes alone: his
    // namespace never uploaded them, so the shard is refused as naming unknown
    // xorbs, and nothing is registered for his repo.
    let repo_files = count(&t, "xet_repo_files").await;
    let (st, b) = post_shard(&app, &bob_w, "/cas/v1/shards", &u.shard).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(count(&t, "xet_repo_files").await, repo_files);
    assert_eq!(reconstruction(&app, &bob_w, 2, &file, None).await.0, 404);
    // With the bytes (he uploads the same xorbs: `was_inserted` false), he may.
    for (h, body, _) in &u.xorbs {
        let (st, b) = post_xorb(&app, &bob_w, h, body).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json_of(&b), json!({"was_inserted": false}));
    }
    let (st, b) = post_shard(&app, &bob_w, "/cas/v1/shards", &u.shard).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(reconstruction(&app, &bob_w, 2, &file, None).await.0, 200);
}

/// A commit's `lfsFile` line.
fn lfs_op(path: &str, sha256: &str, size: Option<usize>) -> Value {
    let mut v = json!({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha256}});
    if let Some(s) = size {
        v["value"]["size"] = json!(s);
    }
    v
}

async fn commit_ops(app: &impl App, tok: &str, repo: &str, ops: &[Value]) -> (u16, Vec<u8>) {
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/api/models/{repo}/commit/main"))
            .insert_header(bearer(tok))
            .insert_header(("Content-Type", "application/x-ndjson"))
            .set_payload(hub_testkit::ndjson("xet", None, ops)),
    )
    .await;
    (st, b)
}

/// §9: a file registered by a shard commits as an `lfsFile` (oid = its
/// SHA-256) with no LFS upload; `/resolve` then switches `hf_xet` to the CAS
/// (`X-Xet-Hash`, an absolute `rel="xet-auth"` link to the read token of the
/// commit) and serves everyone else the bytes, reassembled from the xorbs,
/// whole and by Range; tree and paths-info carry `xetHash`. Unknown oids and
/// wrong sizes are refused, and a repo that never registered or committed the
/// file cannot claim it.
#[actix_web::test]
async fn xet_commit_links_a_registered_file_and_resolve_serves_its_bytes() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    commit_files(&app, &alice, "alice/m", &[("a.txt", b"a")]).await;
    create_repo(&app, &alice, "alice/other", false).await;
    let cas = cas_token(&app, Some(&alice), "alice/m", "write").await;
    // Xorbs over 512 KiB: reads of the store end inside chunks, which the
    // reassembly completes from the next read.
    let u = upload(11, 3_000_000);
    let sha = sha256_hex(&u.data);
    let file = hash::hash_string(&u.file.hash);

    // Before the shard: the oid is unknown to the repo.
    let (st, b) = commit_ops(
        &app,
        &alice,
        "alice/m",
        &[lfs_op("w.bin", &sha, Some(u.data.len()))],
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "lfs_object_missing");
    upload_all(&app, &cas, &u).await;
    // No plain object: the bytes live in the xorbs only.
    let whole = format!("blobs/sha256/{}/{}/{sha}", &sha[..2], &sha[2..4]);
    let root = t.storage_dir.as_ref().unwrap().path();
    assert!(!root.join(&whole).exists(), "not stored whole");
    assert!(root.join("blobs").exists());
    assert_eq!(stored_objects(&t, "xet/recipes"), 1);

    // Another repo of the same owner cannot claim it by oid.
    let (st, b) = commit_ops(&app, &alice, "alice/other", &[lfs_op("w.bin", &sha, None)]).await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (400, Some("lfs_object_missing"))
    );
    // A wrong size is refused.
    let (st, b) = commit_ops(&app, &alice, "alice/m", &[lfs_op("w.bin", &sha, Some(5))]).await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (400, Some("digest_mismatch")),
        "{}",
        String::from_utf8_lossy(&b)
    );
    // The commit as huggingface_hub sends it.
    let (st, b) = commit_ops(
        &app,
        &alice,
        "alice/m",
        &[lfs_op("weights/w.bin", &sha, Some(u.data.len()))],
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let commit = json_of(&b)["commitOid"].as_str().unwrap().to_string();

    // HEAD: the headers that switch hf_xet to the CAS.
    let (st, h, _) = call(
        &app,
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/alice/m/resolve/main/weights/w.bin"),
    )
    .await;
    assert_eq!(st, 200);
    let hv = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(hv("x-xet-hash").as_deref(), Some(file.as_str()));
    assert_eq!(
        hv("link").as_deref(),
        Some(
            format!(
                "<http://hub.test/api/models/alice/m/xet-read-token/{commit}>; rel=\"xet-auth\""
            )
            .as_str()
        )
    );
    assert_eq!(hv("x-linked-etag"), Some(format!("\"{sha}\"")));
    assert_eq!(hv("x-linked-size"), Some(u.data.len().to_string()));
    assert_eq!(hv("x-repo-commit").as_deref(), Some(commit.as_str()));
    // The link works, for this commit, with the caller's rights.
    let (st, _, b) = call(
        &app,
        TestRequest::get().uri(&format!("/api/models/alice/m/xet-read-token/{commit}")),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let read = json_of(&b)["accessToken"].as_str().unwrap().to_string();
    let (st, _) = reconstruction(&app, &read, 2, &file, None).await;
    assert_eq!(st, 200);

    // GET: every other client gets the reassembled bytes, whole and by Range.
    let (st, h, b) = call(
        &app,
        TestRequest::get().uri("/alice/m/resolve/main/weights/w.bin"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        h.get("content-length").unwrap().to_str().unwrap(),
        u.data.len().to_string()
    );
    assert!(b == u.data, "whole file differs");
    let n = u.data.len();
    let split = u.xorbs[0].2.uncompressed_bytes() as usize;
    for (a, z) in [
        (0, 0),
        (1, 99),
        (4000, 70_000),
        (split - 10, split + 10),
        (split, split),
        (n - 1, n - 1),
        (123_456, n - 1),
    ] {
        let (st, h, b) = call(
            &app,
            TestRequest::get()
                .uri("/alice/m/resolve/main/weights/w.bin")
                .insert_header(("Range", format!("bytes={a}-{z}"))),
        )
        .await;
        assert_eq!(st, 206, "bytes={a}-{z}");
        assert_eq!(
            h.get("content-range").unwrap().to_str().unwrap(),
            format!("bytes {a}-{z}/{n}")
        );
        assert!(b[..] == u.data[a..=z], "bytes={a}-{z} differ");
    }
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/alice/m/resolve/main/weights/w.bin")
            .insert_header(("Range", format!("bytes={n}-"))),
    )
    .await;
    assert_eq!(st, 416);

    // A plain file of the same commit has no Xet headers.
    let (_, h, _) = call(&app, TestRequest::get().uri("/alice/m/resolve/main/a.txt")).await;
    assert!(h.get("x-xet-hash").is_none() && h.get("link").is_none());

    // Listings carry xetHash for the Xet file only.
    let (st, _, b) = call(
        &app,
        TestRequest::get().uri("/api/models/alice/m/tree/main?recursive=true"),
    )
    .await;
    assert_eq!(st, 200);
    let tree = json_of(&b);
    let entry = |path: &str| {
        tree.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("weights/w.bin")["xetHash"], file.as_str());
    assert_eq!(entry("weights/w.bin")["lfs"]["oid"], sha.as_str());
    assert!(entry("a.txt").get("xetHash").is_none());
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/paths-info/main")
            .insert_header(bearer(&alice))
            .set_form([("paths", "weights/w.bin")]),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)[0]["xetHash"], file.as_str());

    // A repo the file was never registered or committed in cannot read it
    // through the CAS.
    let other_cas = cas_token(&app, Some(&alice), "alice/other", "read").await;
    assert_eq!(
        reconstruction(&app, &other_cas, 2, &file, None).await.0,
        404
    );
}

/// An expired CAS token (or one signed for another audience) is a 401 with a
/// code on every CAS route, and an upload with it stores nothing; the same
/// claims unexpired are accepted (so the refusal is the expiry's).
#[actix_web::test]
async fn xet_cas_refuses_an_expired_token_and_stores_nothing() {
    use hub_api::routes::xet::{sign_cas_token, Scope};
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let grant = hub_api::auth::grants::Grant::session(alice_id, None);
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let (repo, ns): (i64, i64) =
        sqlx::query_as("SELECT id, namespace_id FROM repos WHERE name = 'm'")
            .fetch_one(&t.state.db)
            .await
            .unwrap();
    let (expired, _) = sign_cas_token(&t.state, Scope::Write, repo, ns, grant, -3600)
        .await
        .unwrap();
    let u = upload(21, 300_000);
    let (h, body, _) = &u.xorbs[0];
    let (st, b) = post_xorb(&app, &expired, h, body).await;
    assert_eq!(
        (st, json_of(&b)["code"].as_str()),
        (401, Some("unauthorized")),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(json_of(&b)["error"].as_str().unwrap().contains("expired"));
    let (st, _) = post_shard(&app, &expired, "/cas/v1/shards", &u.shard).await;
    assert_eq!(st, 401);
    let file = hash::hash_string(&u.file.hash);
    assert_eq!(reconstruction(&app, &expired, 2, &file, None).await.0, 401);
    assert_eq!(count(&t, "xet_xorbs").await, 0);
    assert_eq!(stored_objects(&t, "xorbs"), 0);
    assert_eq!(stored_objects(&t, "staging"), 0);
    // The same claims, not expired: accepted.
    let (fresh, _) = sign_cas_token(&t.state, Scope::Write, repo, ns, grant, 60)
        .await
        .unwrap();
    assert_eq!(post_xorb(&app, &fresh, h, body).await.0, 200);
    assert_eq!(count(&t, "xet_xorbs").await, 1);
}

/// `/resolve` of a Xet file whose chunks are compressed (LZ4 and uncompressed
/// xorbs mixed): the hub decodes them, whole and by Range, exactly.
#[actix_web::test]
async fn xet_resolve_decodes_compressed_chunks() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/c", false).await;
    let cas = cas_token(&app, Some(&alice), "alice/c", "write").await;
    // Compressible but not constant, so the chunker still cuts several chunks.
    let mut bytes = Vec::new();
    for i in 0..120_000u32 {
        bytes.extend_from_slice(format!("row {i} value {}\n", i % 97).as_bytes());
    }
    let u = upload_of(bytes);
    let body = &u.xorbs[0].1;
    assert_eq!(body[4], 1, "the first xorb's chunks are LZ4-compressed");
    upload_all(&app, &cas, &u).await;
    let sha = sha256_hex(&u.data);
    let (st, b) = commit_ops(
        &app,
        &alice,
        "alice/c",
        &[lfs_op("t.csv", &sha, Some(u.data.len()))],
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = call(&app, TestRequest::get().uri("/alice/c/resolve/main/t.csv")).await;
    assert_eq!(st, 200);
    assert!(b == u.data, "whole file differs");
    let n = u.data.len();
    for (a, z) in [(0, 10), (5000, 200_000), (n / 2, n - 1), (n - 3, n - 1)] {
        let (st, _, b) = call(
            &app,
            TestRequest::get()
                .uri("/alice/c/resolve/main/t.csv")
                .insert_header(("Range", format!("bytes={a}-{z}"))),
        )
        .await;
        assert_eq!(st, 206);
        assert!(b[..] == u.data[a..=z], "bytes={a}-{z} differ");
    }
}

/// Xet bodies are whole in memory while they are checked, so each reserves
/// its bytes in its namespace's share of the upload memory first: a tenant
/// whose share is taken is told `tenant_busy` (429, `Retry-After`, nothing
/// stored) while another tenant's uploads go on.
#[actix_web::test]
async fn xet_upload_memory_is_bounded_per_namespace() {
    use hub_api::membudget::{BudgetLimits, MemoryBudget};
    use std::sync::Arc;
    let mut t = TestState::new().await;
    t.state.tenancy.upload_memory = Arc::new(MemoryBudget::new(BudgetLimits {
        global: 64 * 1024 * 1024,
        per_namespace: 8 * 1024 * 1024,
        wait: std::time::Duration::from_millis(200),
    }));
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    create_repo(&app, &bob, "bob/m", false).await;
    let cas_a = cas_token(&app, Some(&alice), "alice/m", "write").await;
    let cas_b = cas_token(&app, Some(&bob), "bob/m", "write").await;
    let u = upload(7, 200_000);
    let (h, body, _) = &u.xorbs[0];

    // Alice's share is taken (as by her own uploads in flight).
    let held = t
        .state
        .tenancy
        .upload_memory
        .reserve(alice_id, 8 * 1024 * 1024)
        .await
        .unwrap();
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/cas/v1/xorbs/default/{h}"))
            .insert_header(bearer(&cas_a))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(st, 429, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["code"], "tenant_busy");
    assert_eq!(count(&t, "xet_xorbs").await, 0);
    let (st, b) = post_shard(&app, &cas_a, "/cas/v1/shards", &u.shard).await;
    assert_eq!(st, 429, "{}", String::from_utf8_lossy(&b));

    // Bob is served meanwhile, and holds nothing once his upload is done.
    upload_all(&app, &cas_b, &u).await;
    assert_eq!(count(&t, "xet_xorbs").await as usize, u.xorbs.len());

    drop(held);
    assert_eq!(t.state.tenancy.upload_memory.reserved(alice_id), 0);
    let (st, b) = post_xorb(&app, &cas_a, h, body).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(t.state.tenancy.upload_memory.reserved(alice_id), 0);
}

/// The first data link of a v2 reconstruction, with the byte range it serves.
fn first_link(r: &Value) -> (String, u64, u64) {
    let (_, entries) = r["xorbs"].as_object().unwrap().iter().next().unwrap();
    let e = &entries[0];
    let d = &e["ranges"][0]["bytes"];
    (
        e["url"].as_str().unwrap().to_string(),
        d["start"].as_u64().unwrap(),
        d["end"].as_u64().unwrap(),
    )
}

/// A v2 reconstruction of `file` with `cas` (asserting it answers 200).
async fn reconstruct_ok(app: &impl App, cas: &str, file: &str) -> Value {
    let (st, b) = reconstruction(app, cas, 2, file, None).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json_of(&b)
}

/// Status and error code of a CAS call that must be refused.
fn refusal(st: u16, b: &[u8]) -> (u16, String) {
    (st, json_of(b)["code"].as_str().unwrap_or("").to_string())
}

/// Access withdrawn ends the Xet credentials minted before it, not their
/// expiry an hour later: a member removed from the organization can no
/// longer reconstruct with their read token, fetch the data links a
/// reconstruction gave them, nor upload with their write token (nothing is
/// stored). Each use decides the token's grant again.
#[actix_web::test]
async fn xet_tokens_and_data_links_stop_when_a_member_is_removed() {
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let (carol_id, carol) = t.user("carol", false, &["read", "write"]).await;
    let acme = t.org("acme", alice_id).await;
    use hub_api::db::namespaces::{set_member, Role};
    set_member(&t.state.db, acme, carol_id, Role::Write)
        .await
        .unwrap();
    let app = app(&t.state).await;
    create_repo(&app, &alice, "acme/p", true).await;
    let u = upload(41, 300_000);
    let w = cas_token(&app, Some(&alice), "acme/p", "write").await;
    upload_all(&app, &w, &u).await;
    let file = hash::hash_string(&u.file.hash);

    // Carol, a member with the write role: a read token, its links, a write token.
    let read = cas_token(&app, Some(&carol), "acme/p", "read").await;
    let write = cas_token(&app, Some(&carol), "acme/p", "write").await;
    let r = reconstruct_ok(&app, &read, &file).await;
    assert_eq!(reassemble_v2(&app, &r, u.data.len()).await, u.data);
    let (link, s, e) = first_link(&r);
    assert_eq!(fetch(&app, &link, s, e).await.0, 206);
    let more = upload(42, 300_000);
    let (h, body, _) = &more.xorbs[0];
    assert_eq!(post_xorb(&app, &write, h, body).await.0, 200);
    let xorbs = count(&t, "xet_xorbs").await;

    // Removed from acme: every one of them stops at once.
    let (st, _, b) = call(
        &app,
        TestRequest::delete()
            .uri("/api/v1/orgs/acme/members/carol")
            .insert_header(bearer(&alice)),
    )
    .await;
    assert!(st < 300, "{st}: {}", String::from_utf8_lossy(&b));
    let (st, b) = reconstruction(&app, &read, 2, &file, None).await;
    assert_eq!(refusal(st, &b), (404, "repo_not_found".into()));
    let (st, b) = fetch(&app, &link, s, e).await;
    assert_eq!(st, 404, "{}", String::from_utf8_lossy(&b));
    let (h2, body2, _) = &more.xorbs[1];
    let (st, b) = post_xorb(&app, &write, h2, body2).await;
    assert_eq!(refusal(st, &b), (404, "repo_not_found".into()));
    assert_eq!(count(&t, "xet_xorbs").await, xorbs, "nothing stored");
    let (st, _) = post_shard(&app, &write, "/cas/v1/shards", &more.shard).await;
    assert_eq!(st, 404);
    // Alice's own token still works: the refusal is carol's.
    let alices = cas_token(&app, Some(&alice), "acme/p", "read").await;
    reconstruct_ok(&app, &alices, &file).await;
}

/// A Xet token minted by a dashboard session (the web uploader's) ends when
/// the user signs out, with the data links its reconstructions gave, not an
/// hour later: the session's version is recorded in the grant and checked on
/// every use. Signing in again does not revive it; a token minted with an API
/// token of the same user goes on working.
#[actix_web::test]
async fn xet_tokens_minted_by_a_session_stop_at_sign_out() {
    let t = TestState::new().await;
    let alice_id = user_with_password(&t, "alice", "correct horse", false).await;
    let (_, alice) = token(&t, alice_id, &["read", "write"], None, None).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/p", true).await;
    let u = upload(44, 300_000);
    let w = cas_token(&app, Some(&alice), "alice/p", "write").await;
    upload_all(&app, &w, &u).await;
    let file = hash::hash_string(&u.file.hash);

    // The session JWT of the cookie, sent as a bearer token.
    let session = crate::tenancy::login(&app, "alice", "correct horse")
        .await
        .0;
    let read = cas_token(&app, Some(&session), "alice/p", "read").await;
    let write = cas_token(&app, Some(&session), "alice/p", "write").await;
    let by_token = cas_token(&app, Some(&alice), "alice/p", "read").await;
    let r = reconstruct_ok(&app, &read, &file).await;
    let (link, s, e) = first_link(&r);
    assert_eq!(fetch(&app, &link, s, e).await.0, 206);
    let more = upload(45, 300_000);
    let (h1, body1, _) = &more.xorbs[0];
    assert_eq!(post_xorb(&app, &write, h1, body1).await.0, 200);

    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/auth/logout")
            .insert_header(bearer(&session)),
    )
    .await;
    assert_eq!(st, 204, "{}", String::from_utf8_lossy(&b));
    let again = crate::tenancy::login(&app, "alice", "correct horse")
        .await
        .0;
    assert_ne!(again, session);

    let (st, b) = reconstruction(&app, &read, 2, &file, None).await;
    assert_eq!(refusal(st, &b), (401, "unauthorized".into()));
    assert!(
        String::from_utf8_lossy(&b).contains("signed out"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (st, _) = fetch(&app, &link, s, e).await;
    assert_eq!(st, 401);
    let xorbs = count(&t, "xet_xorbs").await;
    let (h2, body2, _) = &more.xorbs[1];
    let (st, b) = post_xorb(&app, &write, h2, body2).await;
    assert_eq!(refusal(st, &b), (401, "unauthorized".into()));
    assert_eq!(count(&t, "xet_xorbs").await, xorbs, "nothing stored");
    // The API token's Xet token is not the session's.
    reconstruct_ok(&app, &by_token, &file).await;
}

/// The other withdrawals, on a public repo: an accepted access request
/// rejected (403 `gated_repo`, and accepted again the same token and link
/// work again: the decision is made each time, not remembered), the API token
/// a CAS token was minted with revoked (401), and the repo made private (an
/// anonymous reader's token and links: 404).
#[actix_web::test]
async fn xet_tokens_and_data_links_follow_gates_revocations_and_privacy() {
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let (bob_id, bob) = t.user("bob", false, &["read", "write"]).await;
    let (bob_tok_id, bob_tok) = token(&t, bob_id, &["read"], None, None).await;
    let _acme = t.org("acme", alice_id).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "acme/pub", false).await;
    let u = upload(43, 300_000);
    let w = cas_token(&app, Some(&alice), "acme/pub", "write").await;
    upload_all(&app, &w, &u).await;
    let file = hash::hash_string(&u.file.hash);

    // Anonymous and token-minted readers of the public repo.
    let anon = cas_token(&app, None, "acme/pub", "read").await;
    let anon_link = first_link(&reconstruct_ok(&app, &anon, &file).await);
    let by_token = cas_token(&app, Some(&bob_tok), "acme/pub", "read").await;
    let token_link = first_link(&reconstruct_ok(&app, &by_token, &file).await);

    // Gated: the anonymous token stops; bob's passes once he is accepted.
    let (st, _, _) = call(
        &app,
        put_json(
            "/api/models/acme/pub/settings",
            &alice,
            json!({"gated": "manual"}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let (st, b) = reconstruction(&app, &anon, 2, &file, None).await;
    assert_eq!(refusal(st, &b), (403, "gated_repo".into()));
    let (l, s, e) = &anon_link;
    assert_eq!(fetch(&app, l, *s, *e).await.0, 403);
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/repos/models/acme/pub/access-requests")
            .insert_header(bearer(&bob))
            .set_json(json!({})),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let decide = |status: &str| {
        put_json(
            "/api/v1/repos/models/acme/pub/access-requests/bob",
            &alice,
            json!({"status": status}),
        )
    };
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    let read = cas_token(&app, Some(&bob), "acme/pub", "read").await;
    let (link, s, e) = first_link(&reconstruct_ok(&app, &read, &file).await);
    assert_eq!(fetch(&app, &link, s, e).await.0, 206);
    assert_eq!(call(&app, decide("rejected")).await.0, 200);
    let (st, b) = reconstruction(&app, &read, 2, &file, None).await;
    assert_eq!(refusal(st, &b), (403, "gated_repo".into()));
    let (st, h, _) = call(
        &app,
        TestRequest::get()
            .uri(&local(&link))
            .insert_header(("Range", format!("bytes={s}-{e}"))),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    reconstruct_ok(&app, &read, &file).await;
    assert_eq!(fetch(&app, &link, s, e).await.0, 206);

    // The API token a CAS token was minted with, revoked: 401 (bob's
    // accepted request would pass the gate, so the refusal is the token's).
    let (l, s2, e2) = &token_link;
    assert_eq!(fetch(&app, l, *s2, *e2).await.0, 206);
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{bob_tok_id}"))
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 204);
    let (st, b) = reconstruction(&app, &by_token, 2, &file, None).await;
    assert_eq!(refusal(st, &b), (401, "unauthorized".into()));
    assert!(
        json_of(&b)["error"]
            .as_str()
            .unwrap()
            .contains("revoked or has expired"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(fetch(&app, l, *s2, *e2).await.0, 401);

    // Private, ungated: bob (not a member) loses it, as the repo's 404.
    let (st, _, _) = call(
        &app,
        put_json(
            "/api/models/acme/pub/settings",
            &alice,
            json!({"gated": false, "private": true}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let (st, b) = reconstruction(&app, &read, 2, &file, None).await;
    assert_eq!(refusal(st, &b), (404, "repo_not_found".into()));
    assert_eq!(fetch(&app, &link, s, e).await.0, 404);
}

/// With the notification listener running (as `serve` runs it), a warm
/// grant is decided from the per-process cache: a data link is served with
/// the replica's database pool closed (no round trip per chunk fetch). A
/// withdrawal made through another replica still reaches a warm cache within
/// a notification's delivery, well under its refresh point (1 s).
#[actix_web::test]
async fn xet_grant_decisions_are_cached_and_dropped_on_every_replica() {
    use std::time::{Duration, Instant};
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let (carol_id, carol) = t.user("carol", false, &["read"]).await;
    let acme = t.org("acme", alice_id).await;
    use hub_api::db::namespaces::{set_member, Role};
    set_member(&t.state.db, acme, carol_id, Role::Read)
        .await
        .unwrap();
    // Replica C with a pool of its own (closed below), replica B sharing A's.
    let mut c_state = t.replica().await;
    c_state.db = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let b_state = t.replica().await;
    for s in [&t.state, &b_state, &c_state] {
        crate::gateway_caches::listening(s, &t.db.url).await;
    }
    let a = app(&t.state).await;
    let b = app(&b_state).await;
    let c = app(&c_state).await;
    create_repo(&a, &alice, "acme/p", true).await;
    let u = upload(44, 300_000);
    let w = cas_token(&a, Some(&alice), "acme/p", "write").await;
    upload_all(&a, &w, &u).await;
    let file = hash::hash_string(&u.file.hash);
    let read = cas_token(&a, Some(&carol), "acme/p", "read").await;
    let (link, s, e) = first_link(&reconstruct_ok(&a, &read, &file).await);

    // C: warm, then without its database.
    assert_eq!(fetch(&c, &link, s, e).await.0, 206);
    assert!(!c_state.tenancy.grants.is_empty());
    c_state.db.close().await;
    for _ in 0..3 {
        assert_eq!(fetch(&c, &link, s, e).await.0, 206);
    }

    // B: warm just before carol is removed through A.
    assert_eq!(fetch(&b, &link, s, e).await.0, 206);
    let (st, _, _) = call(
        &a,
        TestRequest::delete()
            .uri("/api/v1/orgs/acme/members/carol")
            .insert_header(bearer(&alice)),
    )
    .await;
    assert!(st < 300, "{st}");
    // At once on A, which made the change.
    assert_eq!(fetch(&a, &link, s, e).await.0, 404);
    let start = Instant::now();
    loop {
        let st = fetch(&b, &link, s, e).await.0;
        if st == 404 {
            break;
        }
        assert_eq!(st, 206);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "replica B kept serving carol's link for {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "removal seen by the other replica after {:?}",
        start.elapsed()
    );
}
