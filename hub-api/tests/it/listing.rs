//! Listings at scale (issue 17): `list_repo_tree` pages by cursor as the Hub
//! does (a `Link: <...>; rel="next"` header with an absolute URL carrying
//! `cursor`), and `paths-info` answers a thousand paths in one call. Pages are
//! checked against the set of paths the commits made: every entry exactly
//! once, in one stable order whatever the page size, and a cursor that is
//! not one of ours is a 400.

use actix_web::http::StatusCode;
use actix_web::test::{call_service, read_body, TestRequest};
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

async fn get(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
    tok: &str,
    uri: &str,
) -> (StatusCode, Option<String>, Value) {
    let resp = call_service(
        app,
        TestRequest::get()
            .uri(uri)
            .insert_header(bearer(tok))
            .to_request(),
    )
    .await;
    let status = resp.status();
    let link = resp
        .headers()
        .get("link")
        .map(|l| l.to_str().unwrap().to_string());
    let body = read_body(resp).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, link, v)
}

/// Every page of a listing, following `Link` from `first`: (path, type) in
/// the order served, and the number of pages.
async fn walk(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
    tok: &str,
    first: &str,
) -> (Vec<(String, String)>, usize) {
    let mut out = Vec::new();
    let mut uri = first.to_string();
    let mut pages = 0;
    loop {
        let (st, link, v) = get(app, tok, &uri).await;
        assert_eq!(st, StatusCode::OK, "{uri}: {v}");
        pages += 1;
        for e in v.as_array().unwrap() {
            out.push((
                e["path"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            ));
        }
        let Some(link) = link else { break };
        // As huggingface_hub and hf-hub parse it: an absolute URL, rel quoted.
        let url = link
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("Link header {link:?}"));
        assert!(url.starts_with("http://hub.test/"), "{url}");
        assert!(url.contains("cursor="), "{url}");
        uri = url.trim_start_matches("http://hub.test").to_string();
        assert!(pages < 10_000, "no end to the pages");
    }
    (out, pages)
}

/// The listing order: a folder's entries by name (bytes), each folder
/// followed by everything below it.
fn in_walk_order(paths: &[(String, String)]) -> bool {
    let key = |p: &str| -> Vec<Vec<u8>> { p.split('/').map(|s| s.as_bytes().to_vec()).collect() };
    paths.windows(2).all(|w| key(&w[0].0) < key(&w[1].0))
}

fn files() -> Vec<String> {
    let mut f = vec![
        // Names around '/' in byte order ('-' and '.' sort before it, '0' after).
        "a".to_string() + "-b.txt",
        "a.txt".into(),
        "a/x.txt".into(),
        "a/b/c.txt".into(),
        "a/b-c/d.txt".into(),
        "a0.txt".into(),
        "deep/1/2/3/4/5/6/7/8/leaf.txt".into(),
        "unicod\u{e9}/\u{6587}.txt".into(),
        "README.md".into(),
    ];
    // One folder bigger than a page, and many small folders.
    for i in 0..1_234 {
        f.push(format!("flat/{i:05}.txt"));
    }
    for i in 0..60 {
        f.push(format!("many/{i:02}/only.txt"));
    }
    f
}

/// Every path the files make: files, and the folders above them.
fn expected(files: &[String]) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for f in files {
        all.insert(f.clone(), "file".to_string());
        let segs: Vec<&str> = f.split('/').collect();
        for i in 1..segs.len() {
            all.insert(segs[..i].join("/"), "directory".to_string());
        }
    }
    all
}

async fn setup() -> (TestState, String, Vec<String>) {
    let mut t = TestState::new().await;
    // Walking pages of one entry is thousands of requests: no rate limit.
    let off = hub_api::ratelimit::Rate { per_s: 0, burst: 0 };
    t.state.tenancy.rate = std::sync::Arc::new(hub_api::ratelimit::RateLimiter::new(
        hub_api::ratelimit::RateDefaults {
            token: off,
            anonymous: off,
            trust_forwarded_for: false,
        },
    ));
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_json(json!({"name": "big"}))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let files = files();
    let ops: Vec<Value> = files
        .iter()
        .map(|p| file_op(p, format!("content of {p}\n").as_bytes()))
        .collect();
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/big/commit/main")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/x-ndjson"))
            .set_payload(ndjson("many files", None, &ops))
            .to_request(),
    )
    .await;
    let st = resp.status();
    assert_eq!(st, StatusCode::OK, "{:?}", read_body(resp).await);
    let mut all = files;
    all.push(".gitattributes".into());
    (t, tok, all)
}

#[actix_web::test]
async fn tree_pages_list_every_entry_once_in_one_order() {
    let (t, tok, files) = setup().await;
    let app = app(&t.state).await;
    let want = expected(&files);

    // Recursive, at several page sizes: the same sequence, every path once.
    let base = "/api/models/alice/big/tree/main?recursive=true&expand=false";
    let (full, pages) = walk(&app, &tok, base).await;
    assert!(pages >= 2, "{} entries fit one page?", full.len());
    let got: BTreeMap<String, String> = full.iter().cloned().collect();
    assert_eq!(got.len(), full.len(), "an entry listed twice");
    assert_eq!(got, want);
    assert!(in_walk_order(&full), "not in walk order");
    for limit in [3, 100, 999] {
        let (paged, pages) = walk(&app, &tok, &format!("{base}&limit={limit}")).await;
        assert_eq!(paged, full, "limit {limit}");
        assert_eq!(pages, full.len().div_ceil(limit), "limit {limit}");
    }

    // One folder, recursive and not.
    let (sub, _) = walk(
        &app,
        &tok,
        "/api/models/alice/big/tree/main/a?recursive=true&limit=1",
    )
    .await;
    let want_a: Vec<String> = want
        .keys()
        .filter(|p| p.starts_with("a/"))
        .cloned()
        .collect();
    let mut got_a: Vec<String> = sub.iter().map(|e| e.0.clone()).collect();
    assert!(in_walk_order(&sub));
    got_a.sort();
    assert_eq!(got_a, want_a);
    let (flat, pages) = walk(&app, &tok, "/api/models/alice/big/tree/main/flat?limit=100").await;
    assert_eq!(flat.len(), 1_234);
    assert_eq!(pages, 13);
    assert!(in_walk_order(&flat));
    let (root, _) = walk(&app, &tok, "/api/models/alice/big/tree/main?limit=3").await;
    let want_root: BTreeSet<String> = want.keys().filter(|p| !p.contains('/')).cloned().collect();
    let got_root: BTreeSet<String> = root.iter().map(|e| e.0.clone()).collect();
    assert_eq!(got_root, want_root);
    assert_eq!(root.len(), want_root.len());

    // A cursor that is not one of ours: 400, not a guess.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for (uri, why) in [
        (format!("{base}&cursor=!!!"), "not base64"),
        (format!("{base}&cursor=1000"), "an offset"),
        (format!("{base}&cursor={}", b64("nope.txt")), "no such path"),
        (format!("{base}&cursor={}", b64("a.txt/x")), "below a file"),
        (
            format!("{base}&cursor={}", b64("a//x.txt")),
            "empty segment",
        ),
        (
            format!("/api/models/alice/big/tree/main?cursor={}", b64("a/x.txt")),
            "nested path in a flat listing",
        ),
        (format!("{base}&cursor="), "empty"),
    ] {
        let (st, _, v) = get(&app, &tok, &uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{why}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains("cursor"),
            "{why}: {v}"
        );
    }
    // A cursor taken from a page resumes right after that page's last entry.
    let (_, link, first) = get(&app, &tok, &format!("{base}&limit=5")).await;
    let link = link.unwrap();
    let next = link.split('<').nth(1).unwrap().split('>').next().unwrap();
    let (_, _, second) = get(&app, &tok, next.trim_start_matches("http://hub.test")).await;
    assert_eq!(first.as_array().unwrap().len(), 5);
    assert_eq!(second[0]["path"], full[5].0.as_str());
}

#[actix_web::test]
async fn paths_info_answers_a_thousand_paths_in_one_call() {
    let (t, tok, files) = setup().await;
    let app = app(&t.state).await;
    // The listing's entries, to compare with.
    let (_, _, listed) = get(
        &app,
        &tok,
        "/api/models/alice/big/tree/main/flat?limit=1000",
    )
    .await;
    let by_path: BTreeMap<String, Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    let mut asked: Vec<String> = by_path.keys().take(990).cloned().collect();
    asked.extend([
        "a".into(),
        "a/b/c.txt".into(),
        "deep/1/2/3/4/5/6/7/8/leaf.txt".into(),
    ]);
    asked.extend((0..7).map(|i| format!("missing/{i}.txt")));
    assert_eq!(asked.len(), 1_000);
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for p in &asked {
        form.append_pair("paths", p);
    }
    form.append_pair("expand", "false");
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/big/paths-info/main")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload(form.finish())
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
    let got = v.as_array().unwrap();
    // Unknown paths are left out; the rest come in the order asked.
    assert_eq!(got.len(), 993);
    let got_paths: Vec<&str> = got.iter().map(|e| e["path"].as_str().unwrap()).collect();
    let want_paths: Vec<&str> = asked[..993].iter().map(String::as_str).collect();
    assert_eq!(got_paths, want_paths);
    for e in &got[..990] {
        assert_eq!(e, &by_path[e["path"].as_str().unwrap()]);
    }
    assert_eq!(got[990]["type"], "directory");
    assert_eq!(got[991]["type"], "file");
    assert_eq!(got[991]["size"], "content of a/b/c.txt\n".len());
    assert!(files.contains(&"deep/1/2/3/4/5/6/7/8/leaf.txt".to_string()));
    assert_eq!(got[992]["type"], "file");
}

/// `expand=true` gives each entry the newest commit that changed it or
/// anything below it, looked up by path (a folder's range is 'dir/' to
/// 'dir0', so 'a-b.txt' and 'a.txt' are not in folder 'a').
#[actix_web::test]
async fn expanded_entries_carry_their_last_commit() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_json(json!({"name": "m"}))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut oids = vec![];
    for ops in [
        vec![
            file_op("a/x.txt", b"1"),
            file_op("a-b.txt", b"1"),
            file_op("b/y.txt", b"1"),
        ],
        vec![file_op("b/y.txt", b"2")],
        vec![file_op("a.txt", b"3"), file_op("a0", b"3")],
    ] {
        let resp = call_service(
            &app,
            TestRequest::post()
                .uri("/api/models/alice/m/commit/main")
                .insert_header(bearer(&tok))
                .set_payload(ndjson("c", None, &ops))
                .to_request(),
        )
        .await;
        let v: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
        oids.push(v["commitOid"].as_str().unwrap().to_string());
    }
    let (st, _, v) = get(&app, &tok, "/api/models/alice/m/tree/main?expand=true").await;
    assert_eq!(st, StatusCode::OK);
    let last: BTreeMap<String, String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["lastCommit"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(last["a"], oids[0]);
    assert_eq!(last["a-b.txt"], oids[0]);
    assert_eq!(last["b"], oids[1]);
    assert_eq!(last["a.txt"], oids[2]);
    assert_eq!(last["a0"], oids[2]);
}
