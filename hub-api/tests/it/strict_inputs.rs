//! Issue 13, item 7: restricted tokens and token management, `If-Range`,
//! strict boolean query parameters, and JSON bodies on every error.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use serde_json::json;

/// A token restricted to one repo cannot see or manage its owner's other
/// tokens (API and dashboard); unrestricted tokens and sessions still can.
#[actix_web::test]
async fn restricted_tokens_cannot_manage_tokens() {
    let t = TestState::new().await;
    let (uid, full) = t.user("alice", false, &["read", "write", "admin"]).await;
    let (_, restricted) = token(
        &t,
        uid,
        &["read", "write", "admin"],
        Some(&["model:alice/one"]),
        None,
    )
    .await;
    let (_, reader) = token(&t, uid, &["read"], None, None).await;
    let (other_id, _) = token(&t, uid, &["read"], None, None).await;
    let app = app(&t.state).await;
    let list = |tok: &str| {
        TestRequest::get()
            .uri("/api/v1/tokens")
            .insert_header(bearer(tok))
    };
    let (st, _, b) = call(&app, list(&restricted)).await;
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&b));
    let body = json_of(&b);
    assert_eq!(body["code"], "forbidden");
    assert!(body["error"].as_str().unwrap().contains("unrestricted"));
    assert!(body.get("items").is_none());
    // Nor create or revoke.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/tokens")
            .insert_header(bearer(&restricted))
            .set_json(json!({"name": "x", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{other_id}"))
            .insert_header(bearer(&restricted)),
    )
    .await;
    assert_eq!(st, 403);
    // The account's audit log lists token events: refused too.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/v1/users/me/audit")
            .insert_header(bearer(&restricted)),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(json_of(&b)["code"], "forbidden");
    // The dashboard's tokens page is the same list: refused too.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/settings/tokens")
            .insert_header(bearer(&restricted)),
    )
    .await;
    assert_eq!(st, 403);
    assert!(!String::from_utf8_lossy(&b).contains("pdk_"));
    // Unrestricted tokens with a read scope list (all four tokens).
    for tok in [&full, &reader] {
        let (st, _, b) = call(&app, list(tok)).await;
        assert_eq!(st, 200);
        assert_eq!(json_of(&b)["items"].as_array().unwrap().len(), 4);
    }
}

async fn repo_with_file(t: &TestState) -> (impl App, String, Vec<u8>) {
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    commit_files(
        &app,
        &tok,
        "alice/m",
        &[("f.bin", &content), ("d/x.txt", b"x")],
    )
    .await;
    (app, tok, content)
}

/// `If-Range` (RFC 9110 §13.1.5): a matching strong ETag gets the range
/// (206); a stale ETag, a weak one or a date gets the whole file (200).
#[actix_web::test]
async fn if_range_with_a_stale_validator_sends_the_whole_file() {
    let t = TestState::new().await;
    let (app, _, content) = repo_with_file(&t).await;
    let (st, h, _) = call(
        &app,
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/alice/m/resolve/main/f.bin"),
    )
    .await;
    assert_eq!(st, 200);
    let etag = h.get("etag").unwrap().to_str().unwrap().to_string();
    let get = |if_range: Option<&str>| {
        let mut r = TestRequest::get()
            .uri("/alice/m/resolve/main/f.bin")
            .insert_header(("Range", "bytes=10-19"));
        if let Some(v) = if_range {
            r = r.insert_header(("If-Range", v.to_string()));
        }
        r
    };
    for ok in [None, Some(etag.as_str())] {
        let (st, h, body) = call(&app, get(ok)).await;
        assert_eq!(st, 206, "{ok:?}");
        assert_eq!(h.get("content-range").unwrap(), "bytes 10-19/1000");
        assert_eq!(body, content[10..20]);
    }
    let weak = format!("W/{etag}");
    for stale in [
        "\"0123456789abcdef0123456789abcdef01234567\"",
        weak.as_str(),
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "garbage",
    ] {
        let (st, h, body) = call(&app, get(Some(stale))).await;
        assert_eq!(st, 200, "If-Range {stale}");
        assert!(h.get("content-range").is_none());
        assert_eq!(body, content, "If-Range {stale}: the whole file");
    }
}

/// The same rule on the signed LFS download link, which also serves ranges.
#[actix_web::test]
async fn lfs_download_links_serve_ranges_and_if_range() {
    use sha2::Digest;
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    let content: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let batch = |op: &str| {
        TestRequest::post()
            .uri("/alice/m.git/info/lfs/objects/batch")
            .insert_header(bearer(&tok))
            .set_json(json!({"operation": op, "objects": [{"oid": sha, "size": content.len()}]}))
    };
    let (_, _, b) = call(&app, batch("upload")).await;
    let up = json_of(&b)["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    assert_eq!(
        call(
            &app,
            TestRequest::put().uri(&up).set_payload(content.clone())
        )
        .await
        .0,
        200
    );
    let line = json!({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(hub_testkit::ndjson("lfs", None, &[line])),
    )
    .await;
    assert_eq!(st, 200);
    let (_, _, b) = call(&app, batch("download")).await;
    let link = json_of(&b)["objects"][0]["actions"]["download"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    let (st, h, body) = call(&app, TestRequest::get().uri(&link)).await;
    assert_eq!((st, body.len()), (200, content.len()));
    let etag = h.get("etag").unwrap().to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{sha}\""));
    let ranged = |if_range: &str| {
        TestRequest::get()
            .uri(&link)
            .insert_header(("Range", "bytes=100-199"))
            .insert_header(("If-Range", if_range.to_string()))
    };
    let (st, _, body) = call(&app, ranged(&etag)).await;
    assert_eq!((st, body), (206, content[100..200].to_vec()));
    let (st, _, body) = call(&app, ranged("\"stale\"")).await;
    assert_eq!((st, body), (200, content.clone()));
}

/// Boolean query parameters are `true`/`false` (and the `True`/`1` forms
/// clients send); anything else is a 400 naming the parameter.
#[actix_web::test]
async fn boolean_query_parameters_are_strict() {
    let t = TestState::new().await;
    let (app, tok, _) = repo_with_file(&t).await;
    let get = |uri: &str| TestRequest::get().uri(uri).insert_header(bearer(&tok));
    for (uri, param) in [
        ("/api/models/alice/m/tree/main?recursive=maybe", "recursive"),
        (
            "/api/models/alice/m/tree/main?recursive=true&expand=yes",
            "expand",
        ),
        ("/api/models/alice/m/tree/main?recursive=", "recursive"),
        ("/api/models/alice/m/tree/main?limit=lots", "limit"),
        ("/api/models/alice/m?blobs=maybe", "blobs"),
        ("/api/models/alice/m/revision/main?blobs=2", "blobs"),
        ("/api/models?full=maybe", "full"),
        ("/api/models?gated=maybe", "gated"),
    ] {
        let (st, _, b) = call(&app, get(uri)).await;
        assert_eq!(st, 400, "{uri}");
        let body = json_of(&b);
        assert_eq!(body["code"], "invalid_request", "{uri}");
        assert!(
            body["error"].as_str().unwrap().contains(param),
            "{uri}: {body}"
        );
    }
    // paths-info as huggingface_hub sends it (form-encoded).
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/paths-info/main")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload("paths=f.bin&expand=perhaps"),
    )
    .await;
    assert_eq!(st, 400);
    assert!(json_of(&b)["error"].as_str().unwrap().contains("expand"));
    // The forms real clients send keep working (recursive adds d/x.txt).
    let (_, _, b) = call(&app, get("/api/models/alice/m/tree/main")).await;
    let flat = json_of(&b).as_array().unwrap().len();
    for (uri, files) in [
        (
            "/api/models/alice/m/tree/main?recursive=true&expand=false",
            flat + 1,
        ),
        (
            "/api/models/alice/m/tree/main?recursive=True&expand=False",
            flat + 1,
        ),
        ("/api/models/alice/m/tree/main?recursive=1", flat + 1),
        (
            "/api/models/alice/m/tree/main?recursive=false&expand=0",
            flat,
        ),
    ] {
        let (st, _, b) = call(&app, get(uri)).await;
        assert_eq!(st, 200, "{uri}");
        assert_eq!(json_of(&b).as_array().unwrap().len(), files, "{uri}");
    }
    for uri in [
        "/api/models/alice/m?blobs=true",
        "/api/models?full=true&gated=false",
        "/api/models?gated=true",
    ] {
        assert_eq!(call(&app, get(uri)).await.0, 200, "{uri}");
    }
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/paths-info/main")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload("paths=f.bin&expand=false"),
    )
    .await;
    assert_eq!(st, 200);
}

/// Every error answer has the JSON error body, static assets included.
#[actix_web::test]
async fn asset_and_other_errors_have_json_bodies() {
    let t = TestState::in_memory().await;
    let app = app(&t.state).await;
    let css = hub_api::dashboard::assets::urls().css.clone();
    let hash = css.split('/').nth(2).unwrap().to_string();
    for uri in [
        format!("/static/{hash}/nope.css"),
        "/static/0000/nope.css".to_string(),
        "/static/nope.css".to_string(),
        "/static/".to_string(),
    ] {
        let (st, h, b) = call(&app, TestRequest::get().uri(&uri)).await;
        assert_eq!(st, 404, "{uri}");
        assert!(
            h.get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{uri}"
        );
        let body = json_of(&b);
        assert_eq!(body["code"], "not_found", "{uri}");
        assert!(body["error"].is_string());
    }
    // The real asset still comes with its long cache.
    let (st, h, _) = call(&app, TestRequest::get().uri(&css)).await;
    assert_eq!(st, 200);
    assert!(h
        .get("cache-control")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("immutable"));
}

/// A method a route does not serve is 405 with `Allow` and the JSON body,
/// not actix's empty answer.
#[actix_web::test]
async fn method_not_allowed_has_a_json_body() {
    let t = TestState::in_memory().await;
    let app = app(&t.state).await;
    for (method, uri, allow) in [
        (actix_web::http::Method::DELETE, "/healthz", "GET"),
        (
            actix_web::http::Method::PATCH,
            "/api/v1/tokens",
            "GET, POST",
        ),
        (actix_web::http::Method::GET, "/api/repos/create", "POST"),
    ] {
        let (st, h, b) = call(&app, TestRequest::default().method(method.clone()).uri(uri)).await;
        assert_eq!(st, 405, "{method} {uri}");
        assert_eq!(h.get("allow").unwrap(), allow, "{method} {uri}");
        let body = json_of(&b);
        assert_eq!(body["code"], "method_not_allowed");
        assert!(body["error"].as_str().unwrap().contains(method.as_str()));
    }
}
