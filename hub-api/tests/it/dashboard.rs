//! Dashboard pages through the real app in process, against a real
//! PostgreSQL and a real object store: status codes, authorization (private
//! content never renders for outsiders), Markdown escaping, the safetensors
//! tensor table, history and the commit page, endpoint pages and charts.

use actix_web::http::StatusCode;
use actix_web::test::{call_service, read_body, TestRequest};
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::json;

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

struct Resp {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: String,
}

macro_rules! get {
    ($app:expr, $uri:expr) => {
        get!($app, $uri, None::<&str>)
    };
    ($app:expr, $uri:expr, $tok:expr) => {{
        let mut req = TestRequest::get()
            .uri($uri)
            .insert_header(("Accept", "text/html"));
        if let Some(t) = $tok {
            req = req.insert_header(bearer(t));
        }
        let resp = call_service(&$app, req.to_request()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8_lossy(&read_body(resp).await).into_owned();
        Resp {
            status,
            headers,
            body,
        }
    }};
}

macro_rules! api {
    ($app:expr, $req:expr) => {{
        let resp = call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let body = read_body(resp).await;
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(json!(null))
    }};
}

macro_rules! create {
    ($app:expr, $tok:expr, $body:expr) => {
        api!(
            $app,
            TestRequest::post()
                .uri("/api/repos/create")
                .insert_header(bearer($tok))
                .set_json($body)
        )
    };
}

macro_rules! commit {
    ($app:expr, $tok:expr, $repo:expr, $summary:expr, $ops:expr) => {
        api!(
            $app,
            TestRequest::post()
                .uri(&format!("/api/models/{}/commit/main", $repo))
                .insert_header(bearer($tok))
                .insert_header(("Content-Type", "application/x-ndjson"))
                .set_payload(ndjson($summary, None, $ops))
        )
    };
}

fn is_html(r: &Resp) -> bool {
    r.headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"))
}

const XSS_README: &str = "---\nlicense: apache-2.0\npipeline_tag: feature-extraction\nlibrary_name: transformers\ntags:\n- tiny\n- \"<b>bold-tag</b>\"\n---\n# Tiny model\n\nSome **bold** text.\n\n<script>alert('xss-in-readme')</script>\n\n<img src=x onerror=alert(2)>\n\n[click](javascript:alert(3)) [ok](https://example.com)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";

fn safetensors_bytes() -> Vec<u8> {
    use safetensors::tensor::{serialize, Dtype, TensorView};
    let w = vec![0u8; 4 * 6];
    let b = vec![0u8; 4 * 3];
    let tensors = vec![
        (
            "encoder.weight",
            TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap(),
        ),
        (
            "encoder.bias",
            TensorView::new(Dtype::F32, vec![3], &b).unwrap(),
        ),
    ];
    serialize(tensors, None).unwrap()
}

#[actix_web::test]
async fn browse_repo_card_and_files() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "tiny"}));
    create!(
        app,
        &alice,
        json!({"name": "secret-model", "private": true})
    );
    commit!(
        app,
        &alice,
        "alice/tiny",
        "add card and weights",
        &[
            file_op("README.md", XSS_README.as_bytes()),
            file_op(
                "config.json",
                b"{\"architectures\":[\"BertModel\"],\"model_type\":\"bert\"}"
            ),
            file_op("model.safetensors", &safetensors_bytes()),
            file_op("docs/notes.txt", b"line one\nline <two>\nline three\n"),
        ]
    );
    commit!(
        app,
        &alice,
        "alice/secret-model",
        "secret card",
        &[file_op("README.md", b"# TOP-SECRET-CARD\n")]
    );

    // Home: public repos for everyone; the private one only for its owner.
    let r = get!(app, "/");
    assert_eq!(r.status, StatusCode::OK);
    assert!(is_html(&r));
    assert!(r
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(r.body.contains("alice/tiny"));
    assert!(!r.body.contains("secret-model"));
    let r = get!(app, "/", Some(&bob));
    assert!(
        !r.body.contains("secret-model"),
        "bob must not see alice's private repo"
    );
    let r = get!(app, "/", Some(&alice));
    assert!(r.body.contains("alice/secret-model"));
    // Filters and sort.
    let r = get!(app, "/models?task=feature-extraction&sort=downloads");
    assert!(r.body.contains("alice/tiny"));
    assert!(r.body.contains("feature-extraction (1)"), "facet counts");
    let r = get!(app, "/models?task=text-classification");
    assert!(!r.body.contains("alice/tiny"));
    let r = get!(app, "/models?license=apache-2.0&author=alice&q=tin");
    assert!(r.body.contains("alice/tiny"));
    let r = get!(app, "/datasets");
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("alice/tiny"));

    // The repo page: card rendered, raw HTML escaped, dangerous links gone.
    let r = get!(app, "/alice/tiny");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<h1>Tiny model</h1>"));
    assert!(r.body.contains("<strong>bold</strong>"));
    assert!(r.body.contains("<table>"));
    assert!(
        !r.body.contains("<script>alert"),
        "raw script must be escaped"
    );
    assert!(
        r.body.contains("&lt;script&gt;alert("),
        "the script shows as text"
    );
    assert!(!r.body.contains("<img src=x"), "raw img must be escaped");
    assert!(
        !r.body.to_lowercase().contains("javascript:"),
        "no javascript: links"
    );
    assert!(!r.body.contains("<b>bold-tag</b>"), "tags are escaped too");
    assert!(r.body.contains("href=\"https://example.com\""));
    // Badges and snippets with the hub's URL.
    assert!(r.body.contains("License: apache-2.0"));
    assert!(r.body.contains(">feature-extraction</a>"));
    assert!(r.body.contains(">transformers</a>"));
    assert!(
        r.body
            .contains("os.environ[&#34;HF_ENDPOINT&#34;] = &#34;http://hub.test&#34;")
            || r.body
                .contains("HF_ENDPOINT&quot;] = &quot;http://hub.test"),
        "snippet has the public URL"
    );
    assert!(r
        .body
        .contains("http://hub.test/alice/tiny/resolve/main/config.json"));
    assert!(r.body.contains("9 (safetensors)") || r.body.contains("Parameters"));

    // Private repos of others are a friendly 404 that shows nothing of them.
    for (uri, tok) in [
        ("/alice/secret-model", None),
        ("/alice/secret-model", Some(bob.as_str())),
        ("/alice/secret-model/tree/main", Some(bob.as_str())),
        (
            "/alice/secret-model/blob/main/README.md",
            Some(bob.as_str()),
        ),
        ("/alice/secret-model/commits/main", Some(bob.as_str())),
        ("/alice/secret-model/refs", None),
        ("/alice/secret-model/settings", Some(bob.as_str())),
        ("/alice/secret-model/upload", Some(bob.as_str())),
        ("/alice/nope", None),
    ] {
        let r = get!(app, uri, tok);
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(is_html(&r), "{uri}");
        assert!(r.body.contains("Repository not found"), "{uri}");
        assert!(!r.body.contains("TOP-SECRET"), "{uri}");
    }
    let r = get!(app, "/alice/secret-model", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("TOP-SECRET-CARD"));

    // Files: sizes, LFS and safetensors badges, folders first.
    let r = get!(app, "/alice/tiny/tree/main");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("model.safetensors"));
    assert!(
        r.body.contains("title=\"Stored with Git LFS\">LFS"),
        "LFS badge"
    );
    assert!(r.body.contains(">safetensors</span>"), "safetensors badge");
    assert!(r.body.find(">docs</a>").unwrap() < r.body.find(">README.md</a>").unwrap());
    assert!(
        r.body.contains("add card and weights"),
        "last commit column"
    );
    let r = get!(app, "/alice/tiny/tree/main/docs");
    assert!(r.body.contains(">notes.txt</a>"));
    let r = get!(app, "/alice/tiny/tree/main/missing");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get!(app, "/alice/tiny/tree/no-such-branch");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("Revision not found"));

    // File view: text with line numbers (escaped), download and copy link.
    let r = get!(app, "/alice/tiny/blob/main/docs/notes.txt");
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body
            .contains("<li id=\"L2\"><code>line &#60;two&#62;</code></li>"),
        "{}",
        r.body
    );
    assert!(r.body.contains("/alice/tiny/resolve/"));
    assert!(r
        .body
        .contains("data-copy=\"http://hub.test/alice/tiny/resolve/main/docs/notes.txt\""));
    // The safetensors tensor table, read from the header.
    let r = get!(app, "/alice/tiny/blob/main/model.safetensors");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<code>encoder.weight</code></td><td><code>[2, 3]</code></td><td>F32</td><td class=\"num\">6</td>"), "{}", r.body);
    assert!(r.body.contains("<code>encoder.bias</code>"));
    assert!(r.body.contains("parameters (9) in 2 tensors"));
    // A folder URL under /blob goes to the tree.
    let r = get!(app, "/alice/tiny/blob/main/docs");
    assert_eq!(r.status, StatusCode::FOUND);

    // Datasets live under /datasets/, canonical repos at /{name}.
    create!(app, &alice, json!({"name": "corpus", "type": "dataset"}));
    let r = get!(app, "/datasets/alice/corpus");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Dataset card"));
    assert!(
        r.body.contains("load_dataset(&#34;alice/corpus&#34;)") || r.body.contains("load_dataset")
    );
    let r = get!(app, "/datasets/alice/corpus/tree/main");
    assert_eq!(r.status, StatusCode::OK);
    let r = get!(app, "/alice/corpus");
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a dataset is not a model");
    let (_, root) = t.user("root", true, &["read", "write"]).await;
    create!(app, &root, json!({"name": "gpt9", "canonical": true}));
    let r = get!(app, "/gpt9");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("href=\"/gpt9/tree/main\""));
    let r = get!(app, "/gpt9/commits/main");
    assert_eq!(r.status, StatusCode::OK);

    // The rev picker without script.
    let r = get!(app, "/alice/tiny/tree?rev=main");
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers.get("location").unwrap(), "/alice/tiny/tree/main");
}

#[actix_web::test]
async fn history_commit_page_and_refs() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "m"}));
    commit!(
        app,
        &alice,
        "alice/m",
        "first files",
        &[file_op("a.txt", b"a"), file_op("b.txt", b"b")]
    );
    let c2 = commit!(
        app,
        &alice,
        "alice/m",
        "change a, drop b, add c",
        &[
            file_op("a.txt", b"a2"),
            json!({"key": "deletedFile", "value": {"path": "b.txt"}}),
            file_op("dir/c.txt", b"c"),
        ]
    );
    let oid = c2["commitOid"].as_str().unwrap().to_string();
    api!(
        app,
        TestRequest::post()
            .uri("/api/models/alice/m/tag/main")
            .insert_header(bearer(&alice))
            .set_json(json!({"tag": "v1.0"}))
    );

    let r = get!(app, "/alice/m/commits/main");
    assert_eq!(r.status, StatusCode::OK);
    let first = r.body.find("change a, drop b, add c").unwrap();
    let second = r.body.find("first files").unwrap();
    assert!(first < second, "newest first");
    assert!(r.body.contains(&format!("/alice/m/commit/{oid}")));

    let r = get!(app, &format!("/alice/m/commit/{oid}"));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("3 changed files"), "{}", r.body);
    assert!(r.body.contains("(1 added, 1 modified, 1 deleted)"));
    assert!(r
        .body
        .contains("change-added\">added</span>\n      <a href=\"/alice/m/blob/"));
    assert!(r.body.contains("<code>dir/c.txt</code>"));
    assert!(r
        .body
        .contains("change-deleted\">deleted</span>\n      <code>b.txt</code>"));
    // A short id works; a wrong one is a 404 page.
    let r = get!(app, &format!("/alice/m/commit/{}", &oid[..8]));
    assert_eq!(r.status, StatusCode::OK);
    let r = get!(app, "/alice/m/commit/0000000000");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get!(app, "/alice/m/commit/zzzz");
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Browsing an older commit and a tag.
    let r = get!(app, "/alice/m/tree/v1.0");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(">dir</a>"));
    let r = get!(app, "/alice/m/refs");
    assert!(r.body.contains("<strong>main</strong>"));
    assert!(r.body.contains("<strong>v1.0</strong>"));
}

#[actix_web::test]
async fn errors_assets_and_account_pages() {
    let t = TestState::new().await;
    let (uid, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read"]).await;
    let app = app(&t.state).await;

    // Unknown routes: HTML for browsers, JSON for API clients.
    let r = get!(app, "/no/such/page/here");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(is_html(&r));
    assert!(r.body.contains("Page not found"));
    let resp = call_service(
        &app,
        TestRequest::get().uri("/api/nothing/here/x").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = read_body(resp).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "not_found");
    // A reserved first segment is never a repo; API clients get JSON.
    let resp = call_service(&app, TestRequest::get().uri("/api/whatever").to_request()).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("json"));

    // A bad query string on a page is the friendly error page, not JSON.
    let r = get!(app, "/models?page=first");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(is_html(&r));
    assert!(r.body.contains("invalid query"), "{}", r.body);
    // Other methods on a page URL answer like an unknown route.
    let resp = call_service(&app, TestRequest::post().uri("/alice/m").to_request()).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Static assets: hashed URL, long cache; a stale hash gets a short one.
    let r = get!(app, "/");
    let css = r
        .body
        .split("href=\"/static/")
        .find(|s| s.split('"').next().unwrap().ends_with("app.css"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = get!(app, &format!("/static/{css}"));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .headers
        .get("cache-control")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert!(r
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let r = get!(app, "/static/000000000000/app.css");
    assert!(!r
        .headers
        .get("cache-control")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("immutable"));
    let r = get!(app, "/static/000000000000/nope.js");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get!(app, "/favicon.ico");
    assert_eq!(r.status, StatusCode::OK);

    // Pages that need an account redirect anonymous visitors to sign in.
    for uri in ["/new", "/settings", "/settings/tokens", "/inference"] {
        let r = get!(app, uri);
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{uri}");
        assert!(r
            .headers
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("/login?next="));
    }
    let r = get!(app, "/login?next=//evil.example/x");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("data-next=\"/\""), "no open redirect");
    // A bad bearer token is still a 401 page, not anonymous browsing.
    let r = get!(app, "/", Some("pdk_not_a_real_token"));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Account and tokens: listed with last use; never the secret.
    let r = get!(app, "/settings", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("alice"));
    let r = get!(app, "/settings/tokens", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("data-revoke="));
    assert!(!r.body.contains(&alice), "the secret never renders");
    assert!(r.body.contains("read, write"));

    // New repo page offers the user's own namespace and writable orgs only.
    t.org("acme", uid).await;
    let r = get!(app, "/new", Some(&alice));
    assert!(r.body.contains("value=\"acme\""));
    let r = get!(app, "/new", Some(&bob));
    assert!(!r.body.contains("value=\"acme\""));

    // Organization page: members only; audit log for admins.
    let r = get!(app, "/organizations/acme", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Members"));
    assert!(r.body.contains("data-member-role=\"alice\""));
    let r = get!(app, "/organizations/acme", Some(&bob));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get!(app, "/organizations/acme/audit", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);

    // Upload and settings: writers / admins only.
    create!(app, &alice, json!({"name": "pub"}));
    let r = get!(app, "/alice/pub/upload", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .body
        .contains("data-batch=\"/alice/pub.git/info/lfs/objects/batch\""));
    let r = get!(app, "/alice/pub/upload", Some(&bob));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = get!(app, "/alice/pub/upload");
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = get!(app, "/alice/pub/settings", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Delete this repository"));
    let r = get!(app, "/alice/pub/settings", Some(&bob));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn endpoint_pages_and_usage_charts() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "enc"}));
    commit!(
        app,
        &alice,
        "alice/enc",
        "config",
        &[file_op(
            "config.json",
            b"{\"architectures\":[\"BertModel\"]}"
        )]
    );
    let r = get!(app, "/inference/new?repo=alice/enc", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("value=\"feature-extraction\" selected"),
        "task derived from the repo"
    );
    api!(
        app,
        TestRequest::post()
            .uri("/api/v1/endpoints/alice")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "enc-ep", "repository": "alice/enc", "task": "feature-extraction", "min_replicas": 0}))
    );
    let e = hub_api::db::endpoints::get(&t.state.db, "alice", "enc-ep")
        .await
        .unwrap()
        .unwrap();
    let recs: Vec<_> = (0..20)
        .map(|i| hub_api::usage_rollup::UsageRecord {
            namespace_id: e.namespace_id,
            endpoint_id: e.id,
            endpoint_name: "enc-ep",
            token_id: None,
            input_tokens: 7,
            output_tokens: 0,
            latency_ms: 5.0 + i as f32,
            status: 200,
        })
        .collect();
    hub_api::db::endpoints::insert_usage(
        &t.state.db,
        &hub_api::usage_rollup::UsageBatch::of(&recs),
    )
    .await
    .unwrap();

    let r = get!(app, "/inference", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("data-endpoint=\"alice/enc-ep\""));
    let r = get!(app, "/inference/alice/enc-ep", Some(&alice));
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body.matches("<svg class=\"chart\"").count(), 3);
    assert!(
        r.body.contains("<polyline class=\"line s2\""),
        "latency lines"
    );
    assert!(
        r.body.contains("<title>") && r.body.contains(": 20</title></rect>"),
        "today's 20 requests drawn"
    );
    assert!(
        r.body.contains("http://hub.test/endpoints/alice/enc-ep"),
        "snippets carry the URL"
    );
    assert!(r.body.contains("InferenceClient"));
    // Outsiders see nothing of it.
    let r = get!(app, "/inference/alice/enc-ep", Some(&bob));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get!(app, "/inference/alice", Some(&bob));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get!(app, "/inference", Some(&bob));
    assert!(!r.body.contains("enc-ep"));
}

/// The endpoint pages decide with the API's rule (`Action::ReadEndpoints`,
/// `ManageEndpoints`): a token restricted to one repo, which the API answers
/// 404 for the namespace's endpoints, sees none of them on `/inference`
/// (the list used to add the user's own namespace unchecked), and a read-only
/// token, which the API refuses to let pause an endpoint, gets no Pause
/// button (the page used to compare the role alone).
#[actix_web::test]
async fn endpoint_pages_follow_the_token_like_the_api() {
    let t = TestState::new().await;
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "enc"}));
    commit!(
        app,
        &alice,
        "alice/enc",
        "config",
        &[file_op(
            "config.json",
            b"{\"architectures\":[\"BertModel\"]}"
        )]
    );
    api!(
        app,
        TestRequest::post()
            .uri("/api/v1/endpoints/alice")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "enc-ep", "repository": "alice/enc", "task": "feature-extraction", "min_replicas": 0}))
    );
    let r = get!(app, "/inference/alice/enc-ep", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("data-ep-action=\"pause\""),
        "writers may pause"
    );

    let restricted = crate::common::token(
        &t,
        alice_id,
        &["read", "write"],
        Some(&["model:alice/enc"]),
        None,
    )
    .await
    .1;
    let api = call_service(
        &app,
        TestRequest::get()
            .uri("/api/v1/endpoints/alice")
            .insert_header(bearer(&restricted))
            .to_request(),
    )
    .await;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let r = get!(app, "/inference", Some(&restricted));
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("enc-ep"), "{}", r.body);

    let read_only = crate::common::token(&t, alice_id, &["read"], None, None)
        .await
        .1;
    let api = call_service(
        &app,
        TestRequest::post()
            .uri("/api/v1/endpoints/alice/enc-ep/pause")
            .insert_header(bearer(&read_only))
            .to_request(),
    )
    .await;
    assert_eq!(api.status(), StatusCode::FORBIDDEN);
    let r = get!(app, "/inference/alice/enc-ep", Some(&read_only));
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.body.contains("data-ep-action=\"pause\""),
        "no Pause for a read-only token"
    );
}

#[actix_web::test]
async fn gated_repo_files_and_access_requests() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (bob_id, bob) = t.user("bob", false, &["read"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "gated"}));
    commit!(
        app,
        &alice,
        "alice/gated",
        "files",
        &[
            file_op("README.md", b"# Gated card\n"),
            file_op("weights.txt", b"GATED-CONTENT\n")
        ]
    );
    api!(
        app,
        TestRequest::put()
            .uri("/api/models/alice/gated/settings")
            .insert_header(bearer(&alice))
            .set_json(json!({"gated": "manual"}))
    );
    let repo = hub_api::db::repos::find(&t.state.db, "model", "alice", "gated")
        .await
        .unwrap()
        .unwrap();
    sqlx::query(
        "INSERT INTO access_requests (repo_id, user_id, status) VALUES ($1, $2, 'pending')",
    )
    .bind(repo.id)
    .bind(bob_id)
    .execute(&t.state.db)
    .await
    .unwrap();

    // The card and the listing stay visible; file contents need access.
    let r = get!(app, "/alice/gated", Some(&bob));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Gated card"));
    assert!(r.body.contains("badge gated"));
    let r = get!(app, "/alice/gated/blob/main/weights.txt", Some(&bob));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("This repository is gated"));
    assert!(!r.body.contains("GATED-CONTENT"));
    let r = get!(app, "/alice/gated/blob/main/weights.txt", Some(&alice));
    assert!(r.body.contains("GATED-CONTENT"));

    // The owner's settings list the pending request with its decisions.
    let r = get!(app, "/alice/gated/settings", Some(&alice));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<option value=\"manual\" selected>"));
    assert!(r
        .body
        .contains("data-requests-api=\"/api/v1/repos/models/alice/gated/access-requests\""));
    assert!(r
        .body
        .contains("data-decide=\"accepted\" data-user=\"bob\""));
}

/// A text-generation endpoint's page: the chat playground (labelled
/// controls, the gateway's chat route, `chat.js`) instead of the task form,
/// chat snippets, and a tokens chart with prompt and completion tokens as two
/// series with their totals (`usage_counts.output_tokens`).
#[actix_web::test]
async fn generation_endpoint_page_has_a_chat_and_charts_completion_tokens() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "llm"}));
    commit!(
        app,
        &alice,
        "alice/llm",
        "config",
        &[
            file_op(
                "README.md",
                b"---\npipeline_tag: text-generation\n---\n# A decoder\n"
            ),
            file_op(
                "config.json",
                br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_size":64,"max_position_embeddings":128}"#
            )
        ]
    );
    let r = get!(app, "/inference/new?repo=alice/llm", Some(&alice));
    assert!(
        r.body.contains("value=\"text-generation\" selected"),
        "the deploy form offers text-generation, chosen from the card"
    );
    api!(
        app,
        TestRequest::post()
            .uri("/api/v1/endpoints/alice")
            .insert_header(bearer(&alice))
            .set_json(json!({"name": "chat-ep", "repository": "alice/llm", "task": "text-generation", "min_replicas": 0}))
    );
    let r = get!(app, "/inference/alice/chat-ep", Some(&alice));
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("id=\"chat\"") && !r.body.contains("id=\"playground\""));
    assert!(r
        .body
        .contains("data-chat-url=\"/endpoints/alice/chat-ep/v1\""));
    for id in [
        "chat-system",
        "chat-temperature",
        "chat-max-tokens",
        "chat-input",
    ] {
        assert!(
            r.body.contains(&format!("<label for=\"{id}\">")),
            "#{id} labelled"
        );
    }
    assert!(r.body.contains("/chat.js\" defer"), "chat.js loaded");
    assert!(r.body.contains("client.chat.completions.create("));
    assert!(r.body.contains("/v1/chat/completions"));
    // No usage yet: totals are zero.
    assert!(r.body.contains("<dd id=\"total-completion-tokens\">0</dd>"));

    let e = hub_api::db::endpoints::get(&t.state.db, "alice", "chat-ep")
        .await
        .unwrap()
        .unwrap();
    // Three metered chat requests, with completion tokens as the gateway
    // meters them for generation (plain SQL, so the test does not depend on
    // the shape of `UsageBatch`): one row of three calls of about 48 ms (bucket 125).
    sqlx::query(
        "INSERT INTO usage_counts (flush_id, seq, namespace_id, endpoint_id, endpoint_name, at, status, requests,
                                   input_tokens, output_tokens, latency_buckets, latency_counts)
         VALUES (gen_random_uuid(), 0, $1, $2, 'chat-ep', now(), 200, 3, 30, 75, '{125}', '{3}')",
    )
    .bind(e.namespace_id)
    .bind(e.id)
    .execute(&t.state.db)
    .await
    .unwrap();
    let r = get!(app, "/inference/alice/chat-ep", Some(&alice));
    assert!(r.body.contains("<dd id=\"total-prompt-tokens\">30</dd>"));
    assert!(r
        .body
        .contains("<dd id=\"total-completion-tokens\">75</dd>"));
    assert!(r.body.contains("<dd id=\"total-tokens\">105</dd>"));
    assert!(
        r.body
            .contains(": 30 prompt tokens, 75 completion tokens, 105 total</title>"),
        "today's bar names both series"
    );
    assert!(r.body.contains(">completion tokens</text>"));
    // The usage API reads the same column.
    let u = api!(
        app,
        TestRequest::get()
            .uri("/api/v1/usage?namespace=alice")
            .insert_header(bearer(&alice))
    );
    assert_eq!(u["items"][0]["output_tokens"], 75);
    assert_eq!(u["items"][0]["input_tokens"], 30);
}

/// The file browser pages a big folder (issue 17): 500 entries a page and a
/// "More files" link carrying the cursor, every entry on exactly one page; a
/// cursor that is not one of ours is a 400.
#[actix_web::test]
async fn file_browser_pages_a_big_folder() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create!(app, &alice, json!({"name": "big"}));
    let mut ops: Vec<serde_json::Value> = (0..1_234)
        .map(|i| file_op(&format!("flat/{i:05}.txt"), b"x"))
        .collect();
    ops.push(file_op("flat/sub/inner.txt", b"y"));
    commit!(app, &alice, "alice/big", "many files", &ops);

    let mut uri = "/alice/big/tree/main/flat".to_string();
    let mut seen: Vec<String> = vec![];
    let mut pages = 0;
    loop {
        let r = get!(app, &uri, Some(&alice));
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        pages += 1;
        let body = r.body.replace("&#x2f;", "/").replace("&amp;", "&");
        for part in body.split("href=\"/alice/big/").skip(1) {
            let target = part.split('"').next().unwrap();
            if let Some(name) = target
                .strip_prefix("blob/main/flat/")
                .or_else(|| target.strip_prefix("tree/main/flat/"))
            {
                seen.push(name.to_string());
            }
        }
        match body.split("rel=\"next\" href=\"").nth(1) {
            Some(rest) => uri = rest.split('"').next().unwrap().to_string(),
            None => break,
        }
        assert!(pages < 10, "no end to the pages");
    }
    assert_eq!(pages, 3);
    let mut want: Vec<String> = (0..1_234).map(|i| format!("{i:05}.txt")).collect();
    want.push("sub".into());
    let mut got = seen.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every entry on exactly one page");

    let r = get!(app, "/alice/big/tree/main/flat?cursor=!!", Some(&alice));
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
