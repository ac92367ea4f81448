//! Gated bytes (issue 13, item 1): every route that hands out a gated repo's
//! file contents or links asks the one read-and-gate decision
//! (`gating::load_repo_for_download`), and asks it again when a link or a
//! worker's pull token is used: access withdrawn is access gone.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use serde_json::{json, Value};

fn put(uri: &str, tok: &str, body: Value) -> TestRequest {
    TestRequest::put()
        .uri(uri)
        .insert_header(bearer(tok))
        .set_json(body)
}

fn post(uri: &str, tok: &str, body: Value) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header(bearer(tok))
        .set_json(body)
}

/// Uploads `content` as an LFS object of `repo` and commits it at `path`; returns its sha256.
async fn commit_lfs(app: &impl App, tok: &str, repo: &str, path: &str, content: &[u8]) -> String {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(content));
    let (st, _, b) = call(
        app,
        post(
            &format!("/{repo}.git/info/lfs/objects/batch"),
            tok,
            json!({"operation": "upload", "objects": [{"oid": sha, "size": content.len()}]}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let href = json_of(&b)["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    let (st, _, _) = call(
        app,
        TestRequest::put().uri(&href).set_payload(content.to_vec()),
    )
    .await;
    assert_eq!(st, 200);
    let line = json!({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha, "size": content.len()}});
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/api/models/{repo}/commit/main"))
            .insert_header(bearer(tok))
            .set_payload(hub_testkit::ndjson("lfs", None, &[line])),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    sha
}

/// The batch API's download link for `sha` as `tok` (None: refused or no link).
async fn download_link(
    app: &impl App,
    tok: Option<&str>,
    repo: &str,
    sha: &str,
    size: usize,
) -> (u16, Option<String>) {
    let mut req = TestRequest::post()
        .uri(&format!("/{repo}.git/info/lfs/objects/batch"))
        .set_json(json!({"operation": "download", "objects": [{"oid": sha, "size": size}]}));
    if let Some(t) = tok {
        req = req.insert_header(bearer(t));
    }
    let (st, _, b) = call(app, req).await;
    let href = serde_json::from_slice::<Value>(&b).ok().and_then(|v| {
        v["objects"][0]["actions"]["download"]["href"]
            .as_str()
            .map(|h| h.trim_start_matches("http://hub.test").to_string())
    });
    (st, href)
}

/// The exact attack: the oid from the tree listing, then the LFS
/// batch API, as anonymous, before approval, while pending and after
/// rejection. Each is refused with 403 `GatedRepo` and no link.
#[actix_web::test]
async fn lfs_batch_download_of_a_gated_repo_needs_access() {
    let t = TestState::new().await;
    let (_, owner) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &owner, "alice/g", false).await;
    let content = vec![7u8; 20_000];
    commit_lfs(&app, &owner, "alice/g", "w.bin", &content).await;
    assert_eq!(
        call(
            &app,
            put(
                "/api/models/alice/g/settings",
                &owner,
                json!({"gated": "manual"})
            )
        )
        .await
        .0,
        200
    );
    // The oid is metadata: visible in the tree listing to anyone.
    let (st, _, b) = call(
        &app,
        TestRequest::get().uri("/api/models/alice/g/tree/main"),
    )
    .await;
    assert_eq!(st, 200);
    let listing = json_of(&b);
    let entry = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "w.bin")
        .unwrap();
    let oid = entry["lfs"]["oid"].as_str().unwrap().to_string();

    let refused = |st: u16, href: &Option<String>, who: &str| {
        assert_eq!(st, 403, "{who}");
        assert!(href.is_none(), "{who} got a link");
    };
    let (st, href) = download_link(&app, None, "alice/g", &oid, content.len()).await;
    refused(st, &href, "anonymous");
    let (st, href) = download_link(&app, Some(&bob), "alice/g", &oid, content.len()).await;
    refused(st, &href, "bob before asking");
    assert_eq!(
        call(
            &app,
            post(
                "/api/v1/repos/models/alice/g/access-requests",
                &bob,
                json!({})
            )
        )
        .await
        .0,
        201
    );
    let (st, href) = download_link(&app, Some(&bob), "alice/g", &oid, content.len()).await;
    refused(st, &href, "bob pending");
    let decide = |status: &str| {
        put(
            "/api/v1/repos/models/alice/g/access-requests/bob",
            &owner,
            json!({"status": status}),
        )
    };
    assert_eq!(call(&app, decide("rejected")).await.0, 200);
    let (st, href) = download_link(&app, Some(&bob), "alice/g", &oid, content.len()).await;
    refused(st, &href, "bob rejected");
    // The answer says why, with the code huggingface_hub maps to GatedRepoError.
    let (_, h, b) = call(
        &app,
        post(
            "/alice/g.git/info/lfs/objects/batch",
            &bob,
            json!({"operation": "download", "objects": [{"oid": oid, "size": content.len()}]}),
        ),
    )
    .await;
    assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    assert_eq!(json_of(&b)["code"], "gated_repo");
    // Accepted: a link, and the link serves the bytes.
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    let (st, href) = download_link(&app, Some(&bob), "alice/g", &oid, content.len()).await;
    assert_eq!(st, 200);
    let (st, _, body) = call(&app, TestRequest::get().uri(&href.unwrap())).await;
    assert_eq!(st, 200);
    assert_eq!(body, content);
}

/// A signed download link records its reader, and opening it decides again:
/// a rejection, a removed membership or a repo made private ends the links
/// handed out before.
#[actix_web::test]
async fn signed_links_stop_when_access_is_withdrawn() {
    let t = TestState::new().await;
    let (alice_id, owner) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let (carol_id, carol) = t.user("carol", false, &["read"]).await;
    let acme = t.org("acme", alice_id).await;
    use hub_api::db::namespaces::{set_member, Role};
    set_member(&t.state.db, acme, carol_id, Role::Read)
        .await
        .unwrap();
    let app = app(&t.state).await;
    create_repo(&app, &owner, "acme/g", false).await;
    let content = vec![9u8; 10_000];
    let sha = commit_lfs(&app, &owner, "acme/g", "w.bin", &content).await;
    // Public, not gated: an anonymous link.
    let (st, anon) = download_link(&app, None, "acme/g", &sha, content.len()).await;
    assert_eq!(st, 200);
    let anon = anon.unwrap();
    assert_eq!(call(&app, TestRequest::get().uri(&anon)).await.0, 200);
    // Gated: the anonymous link stops at once.
    assert_eq!(
        call(
            &app,
            put(
                "/api/models/acme/g/settings",
                &owner,
                json!({"gated": "manual"})
            )
        )
        .await
        .0,
        200
    );
    let (st, h, _) = call(&app, TestRequest::get().uri(&anon)).await;
    assert_eq!(st, 403);
    assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    // Bob accepted: his link works until he is rejected.
    assert_eq!(
        call(
            &app,
            post(
                "/api/v1/repos/models/acme/g/access-requests",
                &bob,
                json!({})
            )
        )
        .await
        .0,
        201
    );
    let decide = |status: &str| {
        put(
            "/api/v1/repos/models/acme/g/access-requests/bob",
            &owner,
            json!({"status": status}),
        )
    };
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    let bobs = download_link(&app, Some(&bob), "acme/g", &sha, content.len())
        .await
        .1
        .unwrap();
    let (st, _, body) = call(&app, TestRequest::get().uri(&bobs)).await;
    assert_eq!((st, body), (200, content.clone()));
    assert_eq!(call(&app, decide("rejected")).await.0, 200);
    let (st, h, body) = call(&app, TestRequest::get().uri(&bobs)).await;
    assert_eq!(st, 403);
    assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    assert!(
        body.len() < 1000 && !body.contains(&9u8),
        "no object bytes in the refusal"
    );
    // Carol (a member) has a link; removed from the org, it stops.
    let carols = download_link(&app, Some(&carol), "acme/g", &sha, content.len())
        .await
        .1
        .unwrap();
    assert_eq!(call(&app, TestRequest::get().uri(&carols)).await.0, 200);
    hub_api::db::namespaces::remove_member(&t.state.db, acme, carol_id)
        .await
        .unwrap();
    assert_eq!(call(&app, TestRequest::get().uri(&carols)).await.0, 403);
    // Made private: a non-member's link is a 404, like the repo.
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    assert_eq!(call(&app, TestRequest::get().uri(&bobs)).await.0, 200);
    assert_eq!(
        call(
            &app,
            put(
                "/api/models/acme/g/settings",
                &owner,
                json!({"private": true})
            )
        )
        .await
        .0,
        200
    );
    assert_eq!(call(&app, TestRequest::get().uri(&bobs)).await.0, 404);
    // A link is for its object only, and tampering breaks it.
    let other = bobs.replace(&sha, &"0".repeat(64));
    assert_eq!(call(&app, TestRequest::get().uri(&other)).await.0, 403);
    let tampered = format!("{}x", bobs);
    assert_eq!(call(&app, TestRequest::get().uri(&tampered)).await.0, 403);
}

/// A signed link records the API token it was minted with: revoking the
/// token ends its links (401), as it ends the token, while links minted
/// anonymously or with another token keep working.
#[actix_web::test]
async fn signed_links_stop_when_their_token_is_revoked() {
    let t = TestState::new().await;
    let (_, owner) = t.user("alice", false, &["read", "write"]).await;
    let (bob_id, bob) = t.user("bob", false, &["read", "write"]).await;
    let (laptop_id, laptop) = token(&t, bob_id, &["read"], None, None).await;
    let app = app(&t.state).await;
    create_repo(&app, &owner, "alice/m", false).await;
    let content = vec![5u8; 12_000];
    let sha = commit_lfs(&app, &owner, "alice/m", "w.bin", &content).await;
    let by_laptop = download_link(&app, Some(&laptop), "alice/m", &sha, content.len())
        .await
        .1
        .unwrap();
    let by_bob = download_link(&app, Some(&bob), "alice/m", &sha, content.len())
        .await
        .1
        .unwrap();
    let anon = download_link(&app, None, "alice/m", &sha, content.len())
        .await
        .1
        .unwrap();
    for l in [&by_laptop, &by_bob, &anon] {
        assert_eq!(call(&app, TestRequest::get().uri(l)).await.0, 200);
    }
    let (st, _, _) = call(
        &app,
        TestRequest::delete()
            .uri(&format!("/api/v1/tokens/{laptop_id}"))
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 204);
    let (st, _, body) = call(&app, TestRequest::get().uri(&by_laptop)).await;
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));
    assert!(body.len() < 1000, "no object bytes in the refusal");
    for l in [&by_bob, &anon] {
        assert_eq!(call(&app, TestRequest::get().uri(l)).await.0, 200);
    }
}

/// A token's restriction and scopes limit the gate like they limit private
/// repos: a member's token restricted to another repo, or without the read
/// scope, acts as an anonymous caller.
#[actix_web::test]
async fn restricted_and_readless_tokens_do_not_pass_the_gate() {
    let t = TestState::new().await;
    let (alice_id, owner) = t.user("alice", false, &["read", "write"]).await;
    let (reed_id, reed) = t.user("reed", false, &["read"]).await;
    let (_, reed_elsewhere) =
        token(&t, reed_id, &["read"], Some(&["model:acme/other"]), None).await;
    let (_, reed_here) = token(&t, reed_id, &["read"], Some(&["model:acme/g"]), None).await;
    let (_, reed_inference) = token(&t, reed_id, &["inference"], None, None).await;
    let acme = t.org("acme", alice_id).await;
    hub_api::db::namespaces::set_member(
        &t.state.db,
        acme,
        reed_id,
        hub_api::db::namespaces::Role::Read,
    )
    .await
    .unwrap();
    let app = app(&t.state).await;
    create_repo(&app, &owner, "acme/g", false).await;
    commit_files(&app, &owner, "acme/g", &[("f.txt", b"gated file")]).await;
    assert_eq!(
        call(
            &app,
            put(
                "/api/models/acme/g/settings",
                &owner,
                json!({"gated": "manual"})
            )
        )
        .await
        .0,
        200
    );
    let get = |tok: &str| {
        TestRequest::get()
            .uri("/acme/g/resolve/main/f.txt")
            .insert_header(bearer(tok))
    };
    assert_eq!(call(&app, get(&reed)).await.0, 200);
    assert_eq!(call(&app, get(&reed_here)).await.0, 200);
    for tok in [&reed_elsewhere, &reed_inference] {
        let (st, h, _) = call(&app, get(tok)).await;
        assert_eq!(st, 403);
        assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    }
}

/// Creating an endpoint reads the model: a gated model needs access (403
/// `GatedRepo`), and the worker's pull token is minted only while the
/// endpoint's creator keeps it; once withdrawn, the assignment is dropped
/// and the replica fails with the reason.
#[actix_web::test]
async fn endpoints_and_pull_tokens_follow_the_gate() {
    let t = TestState::new().await;
    let (alice_id, owner) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let (_, svc) = t.user("svc", true, &["worker"]).await;
    let acme = t.org("acme", alice_id).await;
    let _ = acme;
    let app = app(&t.state).await;
    create_repo(&app, &owner, "acme/g", false).await;
    commit_files(
        &app,
        &owner,
        "acme/g",
        &[("config.json", b"{}"), ("f.txt", b"weights")],
    )
    .await;
    assert_eq!(
        call(
            &app,
            put(
                "/api/models/acme/g/settings",
                &owner,
                json!({"gated": "manual"})
            )
        )
        .await
        .0,
        200
    );
    let create = || {
        post(
            "/api/v1/endpoints/bob",
            &bob,
            json!({"name": "e", "repository": "acme/g", "task": "feature-extraction"}),
        )
    };
    let (st, h, b) = call(&app, create()).await;
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    assert_eq!(json_of(&b)["code"], "gated_repo");
    assert!(hub_api::db::endpoints::get(&t.state.db, "bob", "e")
        .await
        .unwrap()
        .is_none());
    // Accepted: the endpoint is created.
    assert_eq!(
        call(
            &app,
            post(
                "/api/v1/repos/models/acme/g/access-requests",
                &bob,
                json!({})
            )
        )
        .await
        .0,
        201
    );
    let decide = |status: &str| {
        put(
            "/api/v1/repos/models/acme/g/access-requests/bob",
            &owner,
            json!({"status": status}),
        )
    };
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    let (st, _, b) = call(&app, create()).await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let e = hub_api::db::endpoints::get(&t.state.db, "bob", "e")
        .await
        .unwrap()
        .unwrap();
    // A worker with a replica of it gets a pull token that reads the model.
    let (st, _, b) = call(
        &app,
        post("/api/v1/workers/register", &svc, json!({"name": "w", "url": "http://127.0.0.1:1", "capacity": {"memory_bytes": 1u64 << 33, "cores": 2}})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let worker: uuid::Uuid = json_of(&b)["worker_id"].as_str().unwrap().parse().unwrap();
    let worker_secret = json_of(&b)["gateway_secret"].as_str().unwrap().to_string();
    let mut conn = t.state.db.acquire().await.unwrap();
    let replica = hub_api::db::endpoints::insert_replica(&mut conn, e.id, worker)
        .await
        .unwrap();
    let poll = || {
        TestRequest::get()
            .uri(&format!("/api/v1/workers/{worker}/assignments?wait_s=0"))
            .insert_header(bearer(&svc))
            .insert_header((
                hub_types::control::WORKER_SECRET_HEADER,
                worker_secret.clone(),
            ))
    };
    let (st, _, b) = call(&app, poll()).await;
    assert_eq!(st, 200);
    let a = json_of(&b);
    let mine: Vec<&Value> = a["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["assignment_id"] == replica.to_string())
        .collect();
    assert_eq!(mine.len(), 1, "{a}");
    let pull = mine[0]["pull_token"].as_str().unwrap().to_string();
    let (st, _, body) = call(
        &app,
        TestRequest::get()
            .uri("/acme/g/resolve/main/f.txt")
            .insert_header(bearer(&pull)),
    )
    .await;
    assert_eq!((st, body), (200, b"weights".to_vec()));
    // Bob is rejected: no pull token any more; the replica fails with the reason.
    assert_eq!(call(&app, decide("rejected")).await.0, 200);
    let (st, _, b) = call(&app, poll()).await;
    assert_eq!(st, 200);
    let a = json_of(&b);
    assert!(
        !a["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["assignment_id"] == replica.to_string()),
        "a pull token was minted after the rejection: {a}"
    );
    assert!(
        !String::from_utf8_lossy(&b).contains("pull_token\":\"ey"),
        "{a}"
    );
    // The pull token handed out before stops too: it is decided again on
    // every use, not honoured until its expiry (an hour).
    let pull_get = || {
        TestRequest::get()
            .uri("/acme/g/resolve/main/f.txt")
            .insert_header(bearer(&pull))
    };
    let (st, _, body) = call(&app, pull_get()).await;
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("pull token was withdrawn"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let replicas = hub_api::db::endpoints::replicas_of(&t.state.db, e.id)
        .await
        .unwrap();
    assert_eq!(replicas[0].status, "failed");
    assert!(
        replicas[0].message.as_deref().unwrap().contains("acme/g"),
        "{:?}",
        replicas[0].message
    );
    // Accepted again: the assignment comes back, and so does the old token.
    assert_eq!(call(&app, decide("accepted")).await.0, 200);
    let (_, _, b) = call(&app, poll()).await;
    assert!(json_of(&b)["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["assignment_id"] == replica.to_string()));
    assert_eq!(call(&app, pull_get()).await.0, 200);
    // The endpoint deleted: its pull tokens stop.
    let (st, _, b) = call(
        &app,
        TestRequest::delete()
            .uri("/api/v1/endpoints/bob/e")
            .insert_header(bearer(&bob)),
    )
    .await;
    assert!(st < 300, "{st}: {}", String::from_utf8_lossy(&b));
    let (st, _, body) = call(&app, pull_get()).await;
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("no longer exists"));
}

/// A pull request builds on the repo's files: a caller who has not passed a
/// gated repo's gate can neither preupload for one (whose answer follows the
/// repo's `.gitignore` and `.gitattributes`) nor commit one; once accepted,
/// both work, as for any reader.
#[actix_web::test]
async fn pull_requests_on_a_gated_repo_need_the_gate() {
    let t = TestState::new().await;
    let (alice_id, owner) = t.user("alice", false, &["read", "write"]).await;
    let (_, pat) = t.user("pat", false, &["read", "write"]).await;
    t.org("acme", alice_id).await;
    let app = app(&t.state).await;
    create_repo(&app, &owner, "acme/g", false).await;
    commit_files(
        &app,
        &owner,
        "acme/g",
        &[(".gitignore", b"secret-*\n"), ("f.txt", b"gated file")],
    )
    .await;
    let (st, _, _) = call(
        &app,
        put(
            "/api/models/acme/g/settings",
            &owner,
            json!({"gated": "manual"}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let preupload = || {
        post(
            "/api/models/acme/g/preupload/main?create_pr=1",
            &pat,
            json!({"files": [{"path": "secret-x.txt", "size": 1, "sample": "eA=="}]}),
        )
    };
    let commit = || {
        TestRequest::post()
            .uri("/api/models/acme/g/commit/main?create_pr=1")
            .insert_header(bearer(&pat))
            .set_payload(hub_testkit::ndjson(
                "pr",
                None,
                &[hub_testkit::file_op("new.txt", b"x")],
            ))
    };
    for req in [preupload(), commit()] {
        let (st, h, b) = call(&app, req).await;
        assert_eq!(st, 403, "{}", String::from_utf8_lossy(&b));
        assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    }
    let (st, _, b) = call(
        &app,
        post(
            "/api/v1/repos/models/acme/g/access-requests",
            &pat,
            json!({"fields": {}}),
        ),
    )
    .await;
    assert!(st == 200 || st == 201, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = call(
        &app,
        put(
            "/api/v1/repos/models/acme/g/access-requests/pat",
            &owner,
            json!({"status": "accepted"}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = call(&app, preupload()).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["files"][0]["shouldIgnore"], true);
    let (st, _, b) = call(&app, commit()).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}
