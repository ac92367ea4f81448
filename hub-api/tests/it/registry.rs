//! Registry behaviour through the real app in process, against a real
//! PostgreSQL (the test kit's throwaway cluster) and a real object store.

use actix_web::http::StatusCode;
use actix_web::test::{call_service, read_body, TestRequest};
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::{json, Value};
use sha2::Digest;

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

macro_rules! send {
    ($app:expr, $req:expr) => {{
        let resp = call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_body(resp).await;
        (status, headers, body)
    }};
}

async fn create_repo(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
    tok: &str,
    name: &str,
    private: bool,
) {
    let req = TestRequest::post()
        .uri("/api/repos/create")
        .insert_header(bearer(tok))
        .set_json(json!({"name": name, "private": private}));
    let resp = call_service(app, req.to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", read_body(resp).await);
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

#[actix_web::test]
async fn create_commit_download_roundtrip() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "m", false).await;

    // Creating it again is a conflict, with the URL.
    let (st, _, body) = send!(
        app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_json(json!({"name": "m"}))
    );
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(json_of(&body)["url"], "http://hub.test/alice/m");

    let body = ndjson(
        "add files",
        None,
        &[
            file_op(
                "README.md",
                b"---\nlicense: apache-2.0\npipeline_tag: feature-extraction\n---\n# M\n",
            ),
            file_op("dir/a b.txt", b"hello world"),
            file_op("unicod\u{e9}/\u{6587}.txt", b"x"),
        ],
    );
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/x-ndjson"))
            .set_payload(body)
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let commit = json_of(&b)["commitOid"].as_str().unwrap().to_string();
    assert_eq!(commit.len(), 40);
    assert_eq!(
        json_of(&b)["commitUrl"],
        format!("http://hub.test/alice/m/commit/{commit}")
    );

    // Download by branch, by commit, with Range.
    for rev in ["main", commit.as_str()] {
        let (st, h, b) = send!(
            app,
            TestRequest::get().uri(&format!("/alice/m/resolve/{rev}/dir/a%20b.txt"))
        );
        assert_eq!(st, StatusCode::OK);
        assert_eq!(&b[..], b"hello world");
        assert_eq!(h.get("x-repo-commit").unwrap(), commit.as_str());
        assert_eq!(
            h.get("etag").unwrap().to_str().unwrap(),
            format!("\"{}\"", hub_api::git::blob_oid(b"hello world"))
        );
        assert_eq!(h.get("x-linked-size").unwrap(), "11");
        assert_eq!(h.get("accept-ranges").unwrap(), "bytes");
        assert!(h.get("content-encoding").is_none());
        // A tenant's bytes never run as HTML or script on the hub's origin.
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(
            h.get("content-security-policy").unwrap(),
            "sandbox; default-src 'none'"
        );
        assert!(h
            .get("content-disposition")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("inline; filename=\"a b.txt\""));
    }
    let (st, h, _) = send!(
        app,
        TestRequest::get().uri("/alice/m/resolve/main/dir/a%20b.txt?download=true")
    );
    assert_eq!(st, StatusCode::OK);
    assert!(h
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"a b.txt\""));
    let (st, h, b) = send!(
        app,
        TestRequest::get()
            .uri("/alice/m/resolve/main/dir%2Fa%20b.txt")
            .insert_header(("Range", "bytes=6-100"))
    );
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&b[..], b"world");
    assert_eq!(h.get("content-range").unwrap(), "bytes 6-10/11");
    let (st, h, _) = send!(
        app,
        TestRequest::get()
            .uri("/alice/m/resolve/main/dir/a%20b.txt")
            .insert_header(("Range", "bytes=0-0"))
            .insert_header(("Accept-Encoding", "gzip"))
    );
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h.get("content-range").unwrap(), "bytes 0-0/11");
    let (st, h, _) = send!(
        app,
        TestRequest::get()
            .uri("/alice/m/resolve/main/dir/a%20b.txt")
            .insert_header(("Range", "bytes=11-"))
    );
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h.get("content-range").unwrap(), "bytes */11");
    let (st, _, b) = send!(
        app,
        TestRequest::get().uri("/alice/m/resolve/main/unicod%C3%A9/%E6%96%87.txt")
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&b[..], b"x");

    // 404s carry the codes the clients classify by.
    let (st, h, _) = send!(
        app,
        TestRequest::get().uri("/alice/m/resolve/main/nope.txt")
    );
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(h.get("x-error-code").unwrap(), "EntryNotFound");
    assert_eq!(h.get("x-repo-commit").unwrap(), commit.as_str());
    let (_, h, _) = send!(
        app,
        TestRequest::get().uri("/alice/m/resolve/nobranch/README.md")
    );
    assert_eq!(h.get("x-error-code").unwrap(), "RevisionNotFound");
    let (_, h, _) = send!(
        app,
        TestRequest::get().uri("/alice/nothere/resolve/main/README.md")
    );
    assert_eq!(h.get("x-error-code").unwrap(), "RepoNotFound");

    // Repo info carries the card metadata and the commit.
    let (st, _, b) = send!(app, TestRequest::get().uri("/api/models/alice/m"));
    assert_eq!(st, StatusCode::OK);
    let info = json_of(&b);
    assert_eq!(info["sha"], commit);
    assert_eq!(info["cardData"]["license"], "apache-2.0");
    assert_eq!(info["pipeline_tag"], "feature-extraction");
    assert!(info["lastModified"].as_str().unwrap().ends_with('Z'));
    let names: Vec<&str> = info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            ".gitattributes",
            "README.md",
            "dir/a b.txt",
            "unicod\u{e9}/\u{6587}.txt"
        ]
    );
}

#[actix_web::test]
async fn lfs_upload_verify_commit_and_dedup() {
    let t = TestState::new().await;
    let (_, tok) = t.user("bob", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "w", false).await;

    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let batch = json!({"operation": "upload", "transfers": ["basic", "multipart"], "objects": [{"oid": sha, "size": content.len()}], "hash_algo": "sha256"});
    let (st, h, b) = send!(
        app,
        TestRequest::post()
            .uri("/bob/w.git/info/lfs/objects/batch")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/vnd.git-lfs+json"))
            .set_payload(batch.to_string())
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        h.get("content-type").unwrap(),
        "application/vnd.git-lfs+json"
    );
    let resp = json_of(&b);
    let href = resp["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(href.starts_with("http://hub.test/lfs/upload/"));
    let path = href.trim_start_matches("http://hub.test");

    // A commit referencing the object before it is uploaded is refused.
    let lfs_line = json!({"key": "lfsFile", "value": {"path": "model.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/bob/w/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson("too early", None, std::slice::from_ref(&lfs_line)))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&b)["code"], "lfs_object_missing");

    // Lying bodies are refused and leave nothing referable.
    let mut flipped = content.clone();
    flipped[1000] ^= 1;
    let (st, _, b) = send!(app, TestRequest::put().uri(path).set_payload(flipped));
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (st, _, _) = send!(
        app,
        TestRequest::put()
            .uri(path)
            .set_payload(content[..1000].to_vec())
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let mut longer = content.clone();
    longer.push(0);
    let (st, _, _) = send!(app, TestRequest::put().uri(path).set_payload(longer));
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send!(
        app,
        TestRequest::put()
            .uri(path)
            .insert_header(("Content-Encoding", "gzip"))
            .set_payload(content.clone())
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A tampered link is refused.
    let (st, _, _) = send!(
        app,
        TestRequest::put()
            .uri(&format!("{path}x"))
            .set_payload(content.clone())
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The real bytes verify.
    let (st, _, b) = send!(
        app,
        TestRequest::put().uri(path).set_payload(content.clone())
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));

    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/bob/w/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson("add lfs", None, &[lfs_line]))
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));

    let (st, h, b) = send!(app, TestRequest::get().uri("/bob/w/resolve/main/model.bin"));
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b.len(), content.len());
    assert_eq!(
        h.get("etag").unwrap().to_str().unwrap(),
        format!("\"{sha}\"")
    );
    let (st, h, b) = send!(
        app,
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/bob/w/resolve/main/model.bin")
    );
    assert_eq!(st, StatusCode::OK);
    assert!(b.is_empty());
    assert_eq!(
        h.get("content-length").unwrap().to_str().unwrap(),
        content.len().to_string()
    );

    // The tree shows the LFS pointer; .gitattributes covers the path.
    let (_, _, b) = send!(
        app,
        TestRequest::get().uri("/api/models/bob/w/tree/main?recursive=true&expand=false")
    );
    let tree = json_of(&b);
    let entry = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "model.bin")
        .unwrap()
        .clone();
    let pointer = hub_api::git::lfs_pointer(&sha, content.len() as u64);
    assert_eq!(entry["oid"], hub_api::git::blob_oid(pointer.as_bytes()));
    assert_eq!(entry["lfs"]["oid"], sha);
    assert_eq!(entry["lfs"]["pointerSize"], pointer.len());

    // A second batch for the same object in the same repo: already there, no actions.
    let batch = json!({"operation": "upload", "objects": [{"oid": sha, "size": content.len()}]});
    let (_, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/bob/w.git/info/lfs/objects/batch")
            .insert_header(bearer(&tok))
            .set_payload(batch.to_string())
    );
    assert!(json_of(&b)["objects"][0].get("actions").is_none());

    // Another tenant knowing the digest cannot commit it without uploading it.
    let (_, tok2) = t.user("mallory", false, &["write"]).await;
    create_repo(&app, &tok2, "steal", false).await;
    let line = json!({"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/mallory/steal/commit/main")
            .insert_header(bearer(&tok2))
            .set_payload(ndjson("steal", None, &[line]))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&b)["code"], "lfs_object_missing");
}

#[actix_web::test]
async fn multipart_upload() {
    let t = TestState::new().await;
    let mut t = t;
    t.state.limits.multipart_threshold = 1000;
    t.state.limits.multipart_chunk = 4096;
    let (_, tok) = t.user("carol", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "mp", false).await;
    let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let batch = json!({"operation": "upload", "transfers": ["basic", "multipart"], "objects": [{"oid": sha, "size": content.len()}]});
    let (_, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/carol/mp.git/info/lfs/objects/batch")
            .insert_header(bearer(&tok))
            .set_payload(batch.to_string())
    );
    let resp = json_of(&b);
    assert_eq!(resp["transfer"], "multipart");
    let upload = &resp["objects"][0]["actions"]["upload"];
    assert_eq!(upload["header"]["chunk_size"], "4096");
    let mut parts = vec![];
    for (i, chunk) in content.chunks(4096).enumerate() {
        let url = upload["header"][(i + 1).to_string()]
            .as_str()
            .unwrap()
            .trim_start_matches("http://hub.test");
        let (st, h, _) = send!(app, TestRequest::put().uri(url).set_payload(chunk.to_vec()));
        assert_eq!(st, StatusCode::OK);
        parts.push(json!({"partNumber": i + 1, "etag": h.get("etag").unwrap().to_str().unwrap()}));
    }
    assert_eq!(parts.len(), 3);
    let complete = upload["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test");
    // Missing a part: refused.
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri(complete)
            .set_json(json!({"oid": sha, "parts": &parts[..2]}))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri(complete)
            .set_json(json!({"oid": sha, "parts": parts}))
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let verify = resp["objects"][0]["actions"]["verify"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test");
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri(verify)
            .insert_header(bearer(&tok))
            .set_json(json!({"oid": sha, "size": content.len()}))
    );
    assert_eq!(st, StatusCode::OK);
    let line = json!({"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/carol/mp/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson("mp", None, &[line]))
    );
    assert_eq!(st, StatusCode::OK);
    let (_, _, b) = send!(
        app,
        TestRequest::get().uri("/carol/mp/resolve/main/big.bin")
    );
    assert_eq!(&b[..], &content[..]);
}

#[actix_web::test]
async fn bad_input_changes_nothing() {
    let t = TestState::new().await;
    let (_, tok) = t.user("dave", false, &["write"]).await;
    let (_, ro) = t.user("reader", false, &["read"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "r", false).await;
    let (_, _, b) = send!(app, TestRequest::get().uri("/api/models/dave/r"));
    let head = json_of(&b)["sha"].as_str().unwrap().to_string();

    for name in ["a--b", "../x", "x.git", "sp ace", "", &"n".repeat(97)] {
        let (st, _, b) = send!(
            app,
            TestRequest::post()
                .uri("/api/repos/create")
                .insert_header(bearer(&tok))
                .set_json(json!({"name": name}))
        );
        assert_eq!(
            st,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let long = "a/".repeat(501) + "x";
    for path in [
        "../etc/passwd",
        "/abs",
        "a\\b",
        "a/../b",
        ".git/config",
        "x/.GIT/y",
        "a\0b",
        long.as_str(),
        "a//b",
        "CON",
        ".g\u{200c}it/x",
    ] {
        let (st, _, b) = send!(
            app,
            TestRequest::post()
                .uri("/api/models/dave/r/commit/main")
                .insert_header(bearer(&tok))
                .set_payload(ndjson("bad", None, &[file_op(path, b"x")]))
        );
        // A path a client would read as leaving the repo's folder is 422 (the
        // Hub's status for `..\\ddd`); the other refusals are 400.
        let escapes = ["../etc/passwd", "/abs", "a\\b", "a/../b"].contains(&path);
        let want = if escapes {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(st, want, "{path:?}: {}", String::from_utf8_lossy(&b));
        assert_eq!(json_of(&b)["code"], "invalid_path");
    }
    // Malformed NDJSON.
    for payload in [
        "not json\n".to_string(),
        format!("{}\n", file_op("a.txt", b"x")),
        ndjson("s", None, &[json!({"key": "copyFile", "value": {}})]),
        ndjson(
            "s",
            None,
            &[
                json!({"key": "file", "value": {"path": "a", "content": "!!!", "encoding": "base64"}}),
            ],
        ),
        ndjson(
            "s",
            None,
            &[json!({"key": "header", "value": {"summary": "again"}})],
        ),
        "".to_string(),
    ] {
        let (st, _, b) = send!(
            app,
            TestRequest::post()
                .uri("/api/models/dave/r/commit/main")
                .insert_header(bearer(&tok))
                .set_payload(payload.clone())
        );
        assert_eq!(
            st,
            StatusCode::BAD_REQUEST,
            "{payload}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    // An invalid safetensors file is stored like any bytes (as on the Hub);
    // it just has no parameter counts. (Another repo: this one must not move.)
    create_repo(&app, &tok, "st", false).await;
    let mut bad_st = 100u64.to_le_bytes().to_vec();
    bad_st.extend(b"{\"a\":1}");
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/dave/st/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson(
                "st",
                None,
                &[file_op("w/model.safetensors", &bad_st)]
            ))
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = send!(
        app,
        TestRequest::get()
            .uri("/api/models/dave/st")
            .insert_header(bearer(&tok))
    );
    assert_eq!(st, StatusCode::OK);
    let info = json_of(&b);
    assert!(info.get("safetensors").is_none(), "{info}");
    assert!(info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["rfilename"] == "w/model.safetensors"));
    // Case twins collide.
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/dave/r/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson(
                "twins",
                None,
                &[file_op("README.md", b"a"), file_op("readme.md", b"b")]
            ))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Writes need a write token.
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/dave/r/commit/main")
            .insert_header(bearer(&ro))
            .set_payload(ndjson("ro", None, &[file_op("a.txt", b"x")]))
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/dave/r/commit/main")
            .set_payload(ndjson("anon", None, &[file_op("a.txt", b"x")]))
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, b) = send!(
        app,
        TestRequest::get()
            .uri("/api/whoami-v2")
            .insert_header(bearer("pdk_not_a_real_token"))
    );
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&b)
    );
    // Oversized JSON body.
    let big = json!({"name": "x".repeat(3 * 1024 * 1024)});
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_json(big)
    );
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // Deep JSON.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_payload(deep)
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Nothing moved.
    let (_, _, b) = send!(app, TestRequest::get().uri("/api/models/dave/r"));
    assert_eq!(json_of(&b)["sha"], head);
    let (_, _, b) = send!(
        app,
        TestRequest::get().uri("/api/models/dave/r/commits/main")
    );
    assert_eq!(json_of(&b).as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn privacy_branches_tags_and_history() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["write"]).await;
    let (_, eve) = t.user("eve", false, &["write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "secret", true).await;
    for uri in [
        "/api/models/alice/secret",
        "/alice/secret/resolve/main/.gitattributes",
        "/api/models/alice/secret/tree/main",
        "/api/models/alice/secret/refs",
    ] {
        for tok in [None, Some(eve.as_str())] {
            let mut req = TestRequest::get().uri(uri);
            if let Some(t) = tok {
                req = req.insert_header(bearer(t));
            }
            let (st, h, _) = send!(app, req);
            assert_eq!(st, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(h.get("x-error-code").unwrap(), "RepoNotFound");
        }
    }
    let (st, _, _) = send!(
        app,
        TestRequest::get()
            .uri("/api/models/alice/secret")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::OK);
    // Listings hide it from others.
    let (_, _, b) = send!(
        app,
        TestRequest::get()
            .uri("/api/models?author=alice")
            .insert_header(bearer(&eve))
    );
    assert_eq!(json_of(&b).as_array().unwrap().len(), 0);
    let (_, _, b) = send!(
        app,
        TestRequest::get()
            .uri("/api/models?author=alice")
            .insert_header(bearer(&alice))
    );
    assert_eq!(json_of(&b).as_array().unwrap().len(), 1);

    // Branches and tags.
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/secret/branch/dev")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/secret/branch/dev")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/secret/branch/bad..name")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/secret/commit/dev")
            .insert_header(bearer(&alice))
            .set_payload(ndjson("on dev", None, &[file_op("d.txt", b"dev")]))
    );
    assert_eq!(st, StatusCode::OK);
    let dev_commit = json_of(&b)["commitOid"].as_str().unwrap().to_string();
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/secret/tag/dev")
            .insert_header(bearer(&alice))
            .set_json(json!({"tag": "v1"}))
    );
    assert_eq!(st, StatusCode::OK);
    let (_, h, b) = send!(
        app,
        TestRequest::get()
            .uri("/alice/secret/resolve/v1/d.txt")
            .insert_header(bearer(&alice))
    );
    assert_eq!(&b[..], b"dev");
    assert_eq!(h.get("x-repo-commit").unwrap(), dev_commit.as_str());
    let (_, _, b) = send!(
        app,
        TestRequest::get()
            .uri("/alice/secret/resolve/refs%2Fheads%2Fdev/d.txt")
            .insert_header(bearer(&alice))
    );
    assert_eq!(&b[..], b"dev");
    let (st, _, _) = send!(
        app,
        TestRequest::get()
            .uri("/alice/secret/resolve/main/d.txt")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, _, b) = send!(
        app,
        TestRequest::get()
            .uri("/api/models/alice/secret/refs")
            .insert_header(bearer(&alice))
    );
    let refs = json_of(&b);
    assert_eq!(refs["branches"].as_array().unwrap().len(), 2);
    assert_eq!(refs["tags"][0]["name"], "v1");
    assert_eq!(refs["tags"][0]["targetCommit"], dev_commit);
    // Commits into a tag are refused; deleting main is refused.
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/secret/commit/v1")
            .insert_header(bearer(&alice))
            .set_payload(ndjson("x", None, &[file_op("a", b"a")]))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send!(
        app,
        TestRequest::delete()
            .uri("/api/models/alice/secret/branch/main")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = send!(
        app,
        TestRequest::delete()
            .uri("/api/models/alice/secret/tag/v1")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send!(
        app,
        TestRequest::delete()
            .uri("/api/models/alice/secret/branch/dev")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::OK);
    // The old commit is still downloadable by id.
    let (st, _, b) = send!(
        app,
        TestRequest::get()
            .uri(&format!("/alice/secret/resolve/{dev_commit}/d.txt"))
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&b[..], b"dev");
    // Deleting the repo makes it 404.
    let (st, _, _) = send!(
        app,
        TestRequest::delete()
            .uri("/api/repos/delete")
            .insert_header(bearer(&eve))
            .set_json(json!({"name": "secret", "organization": "alice"}))
    );
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = send!(
        app,
        TestRequest::delete()
            .uri("/api/repos/delete")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "secret", "organization": "alice"}))
    );
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send!(
        app,
        TestRequest::get()
            .uri("/api/models/alice/secret")
            .insert_header(bearer(&alice))
    );
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// `search=` is a case-insensitive substring of "namespace/name", served by
/// a trigram index on the repo's `search_key`, or by its characters and
/// character pairs where a term has no trigram (`a..`, `zq`): `%`, `_` and
/// `\\` in the search are literal, a moved repo is found by its new id only,
/// and the indexes are what the planner can use (checked with sequential
/// scans off).
#[actix_web::test]
async fn search_is_a_literal_substring_served_by_the_trigram_index() {
    let t = TestState::new().await;
    let (_, tok) = t.user("Searcher", false, &["write", "read"]).await;
    let app = app(&t.state).await;
    for name in [
        "a_b",
        "axb",
        "Mixed.Case-1",
        "plain",
        "zq",
        "q-zq.9z",
        "x-.y",
    ] {
        create_repo(&app, &tok, name, false).await;
    }
    let ids = |b: &[u8]| -> Vec<String> {
        let mut v: Vec<String> = json_of(b)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    for (q, want) in [
        ("a_b", vec!["Searcher/a_b"]),
        ("SEARCHER/A_", vec!["Searcher/a_b"]),
        ("a%25b", vec![]),
        ("%25", vec![]),
        ("%5C", vec![]),
        ("mixed.case", vec!["Searcher/Mixed.Case-1"]),
        ("r/p", vec!["Searcher/plain"]),
        ("XB", vec!["Searcher/axb"]),
        ("_", vec!["Searcher/a_b"]),
        // Two characters (the three-character expansion): at the end of the
        // key, after '/', next to '-', '.' and '_', nowhere, and with a
        // character no name can hold.
        ("zq", vec!["Searcher/q-zq.9z", "Searcher/zq"]),
        ("/z", vec!["Searcher/zq"]),
        ("-z", vec!["Searcher/q-zq.9z"]),
        ("9z", vec!["Searcher/q-zq.9z"]),
        ("q.", vec!["Searcher/q-zq.9z"]),
        ("_B", vec!["Searcher/a_b"]),
        ("1", vec!["Searcher/Mixed.Case-1"]),
        ("e-", vec!["Searcher/Mixed.Case-1"]),
        ("jj", vec![]),
        ("a%25", vec![]),
        // Punctuation pg_trgm takes no trigram from (the pair index), and
        // terms whose runs it pads into one (the trigram index).
        ("-.", vec!["Searcher/x-.y"]),
        ("X-.", vec!["Searcher/x-.y"]),
        ("r/x-", vec!["Searcher/x-.y"]),
        ("---", vec![]),
        ("a..", vec![]),
        (".-", vec![]),
        ("e-1", vec!["Searcher/Mixed.Case-1"]),
        ("q.9", vec!["Searcher/q-zq.9z"]),
        ("-.Y", vec!["Searcher/x-.y"]),
        (
            "",
            vec![
                "Searcher/Mixed.Case-1",
                "Searcher/a_b",
                "Searcher/axb",
                "Searcher/plain",
                "Searcher/q-zq.9z",
                "Searcher/x-.y",
                "Searcher/zq",
            ],
        ),
    ] {
        let (st, _, b) = send!(
            app,
            TestRequest::get().uri(&format!("/api/models?search={q}"))
        );
        assert_eq!(st, StatusCode::OK);
        assert_eq!(ids(&b), want, "search={q}");
    }
    // A move changes what finds the repo.
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri("/api/repos/move")
            .insert_header(bearer(&tok))
            .set_json(
                json!({"fromRepo": "Searcher/plain", "toRepo": "Searcher/renamed", "type": "model"})
            )
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = send!(app, TestRequest::get().uri("/api/models?search=plain"));
    assert!(ids(&b).is_empty());
    let (_, _, b) = send!(app, TestRequest::get().uri("/api/models?search=renam"));
    assert_eq!(ids(&b), vec!["Searcher/renamed"]);
    // The planner can answer a substring search from the index.
    let mut conn = t.state.db.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (filter, index) in [
        ("r.search_key LIKE lower('%cher/mix%')", "repos_search_trgm"),
        (
            "search_grams(r.search_key) @> ARRAY['zq']",
            "repos_search_grams",
        ),
    ] {
        let plan: Vec<(String,)> =
            sqlx::query_as(&format!("EXPLAIN SELECT id FROM repos r WHERE {filter}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|r| r.0).collect();
        assert!(plan.iter().any(|l| l.contains(index)), "{plan:#?}");
    }
    sqlx::query("RESET enable_seqscan")
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[actix_web::test]
async fn list_search_and_pagination() {
    let t = TestState::new().await;
    let (_, tok) = t.user("lister", false, &["write"]).await;
    let app = app(&t.state).await;
    for i in 0..7 {
        create_repo(&app, &tok, &format!("model-{i}"), false).await;
    }
    let (_, h, b) = send!(
        app,
        TestRequest::get().uri("/api/models?author=lister&limit=3&sort=createdAt")
    );
    let page1 = json_of(&b);
    assert_eq!(page1.as_array().unwrap().len(), 3);
    assert_eq!(page1[0]["id"], "lister/model-6");
    let link = h.get("link").unwrap().to_str().unwrap().to_string();
    assert!(link.starts_with("<http://hub.test/api/models?"), "{link}");
    assert!(link.ends_with("rel=\"next\""));
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    let (_, _, b) = send!(app, TestRequest::get().uri(&next));
    let page2 = json_of(&b);
    assert_eq!(page2[0]["id"], "lister/model-3");
    let (_, _, b) = send!(app, TestRequest::get().uri("/api/models?search=model-5"));
    assert_eq!(json_of(&b).as_array().unwrap().len(), 1);
    let (st, _, _) = send!(app, TestRequest::get().uri("/api/models?sort=bogus"));
    assert_eq!(st, StatusCode::BAD_REQUEST);
}
