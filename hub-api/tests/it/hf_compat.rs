//! Compatibility points found by running huggingface_hub's own test suite
//! against the hub (scripts/hf-suite): each test pins one behaviour of the
//! real Hub that the client's tests rely on.

use crate::common::{bearer, call, commit_files, create_repo, json_of};
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use serde_json::json;

/// `create_tag(revision=oid[:7])`: a short commit id resolves like a full one,
/// wherever a revision is accepted; an unknown one is RevisionNotFound.
#[actix_web::test]
async fn short_commit_ids_resolve() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    let first = commit_files(&app, &tok, "alice/m", &[("a.txt", b"one")]).await;
    commit_files(&app, &tok, "alice/m", &[("a.txt", b"two")]).await;

    let (st, h, b) = call(
        &app,
        TestRequest::get().uri(&format!("/alice/m/resolve/{}/a.txt", &first[..7])),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(b, b"one");
    assert_eq!(h.get("x-repo-commit").unwrap(), first.as_str());

    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri(&format!("/api/models/alice/m/tag/{}", &first[..7]))
            .insert_header(bearer(&tok))
            .set_json(json!({"tag": "v1"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/m/refs")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(json_of(&b)["tags"][0]["targetCommit"], first.as_str());

    // Not a commit of this repo: RevisionNotFound, as for any unknown revision.
    let (st, h, _) = call(
        &app,
        TestRequest::get().uri("/api/models/alice/m/revision/0000000"),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "RevisionNotFound");
}

/// `delete_file("dir")` sends `deletedFile` for a folder: the Hub deletes the
/// folder. A path that is neither a file nor a folder stays EntryNotFound.
#[actix_web::test]
async fn deleted_file_on_a_folder_deletes_it() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    commit_files(
        &app,
        &tok,
        "alice/m",
        &[
            ("dir/a.txt", b"a"),
            ("dir/sub/b.txt", b"b"),
            ("keep.txt", b"k"),
        ],
    )
    .await;
    let delete = |path: &str| {
        TestRequest::post()
            .uri("/api/models/alice/m/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(format!(
                "{}\n{}\n",
                json!({"key": "header", "value": {"summary": "rm"}}),
                json!({"key": "deletedFile", "value": {"path": path}})
            ))
    };
    let (st, _, b) = call(&app, delete("dir")).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = call(
        &app,
        TestRequest::get().uri("/api/models/alice/m/tree/main?recursive=true"),
    )
    .await;
    let paths: Vec<String> = json_of(&b)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!paths.iter().any(|p| p.starts_with("dir")), "{paths:?}");
    assert!(paths.contains(&"keep.txt".to_string()));

    let (st, h, _) = call(&app, delete("nothing-here")).await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "EntryNotFound");
}

/// Branches and tags: the Hub's error texts (clients match on them), a branch
/// may share a tag's name, and tagging a missing revision is RevisionNotFound
/// even when the tag name is bad.
#[actix_web::test]
async fn branch_and_tag_rules_and_texts() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    let post = |uri: &str, body: serde_json::Value| {
        TestRequest::post()
            .uri(uri)
            .insert_header(bearer(&tok))
            .set_json(body)
    };
    let msg = |h: &actix_web::http::header::HeaderMap| {
        h.get("x-error-message")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };

    let (st, _, _) = call(
        &app,
        post("/api/models/alice/m/tag/main", json!({"tag": "v"})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, h, _) = call(
        &app,
        post("/api/models/alice/m/tag/main", json!({"tag": "v"})),
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(msg(&h), "Reference refs/tags/v already exists");
    let (st, _, b) = call(&app, post("/api/models/alice/m/branch/v", json!({}))).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));

    let (st, h, _) = call(&app, post("/api/models/alice/m/branch/main", json!({}))).await;
    assert_eq!(st, 409);
    assert_eq!(msg(&h), "Reference refs/heads/main already exists");

    let (st, h, _) = call(
        &app,
        TestRequest::delete()
            .uri("/api/models/alice/m/branch/main")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(msg(&h), "Cannot delete refs/heads/main");
    let (st, h, _) = call(
        &app,
        TestRequest::delete()
            .uri("/api/models/alice/m/branch/nope")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(msg(&h), "Invalid rev id: nope");

    let (st, h, _) = call(
        &app,
        post("/api/models/alice/m/tag/foobar", json!({"tag": "bad tag"})),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "RevisionNotFound");
    let (st, _, _) = call(
        &app,
        post("/api/models/alice/m/tag/main", json!({"tag": "bad tag"})),
    )
    .await;
    assert_eq!(st, 400);
}

/// An empty file is regular even where `.gitattributes` says LFS (no pointer
/// to a zero-byte blob); preupload applies the repo's own `.gitignore` when
/// the commit does not bring one.
#[actix_web::test]
async fn empty_files_are_regular_and_the_repo_gitignore_applies() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    commit_files(
        &app,
        &tok,
        "alice/m",
        &[(".gitignore", b"*.log\n"), ("empty.pkl", b"")],
    )
    .await;

    let (_, _, b) = call(
        &app,
        TestRequest::get().uri("/api/models/alice/m/tree/main"),
    )
    .await;
    let tree = json_of(&b);
    let empty = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "empty.pkl")
        .unwrap();
    assert_eq!(empty["size"], 0);
    assert!(empty.get("lfs").is_none(), "{empty}");
    assert_eq!(empty["oid"], hub_api::git::blob_oid(b""));

    let preupload = |body: serde_json::Value| {
        TestRequest::post()
            .uri("/api/models/alice/m/preupload/main")
            .insert_header(bearer(&tok))
            .set_json(body)
    };
    let files = json!([
        {"path": "run.log", "sample": "", "size": 3},
        {"path": "keep.txt", "sample": "", "size": 3},
        {"path": "weights.pkl", "sample": "", "size": 0}
    ]);
    let (st, _, b) = call(&app, preupload(json!({ "files": files }))).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let got = json_of(&b);
    let verdict = |i: usize| {
        (
            got["files"][i]["shouldIgnore"].as_bool().unwrap(),
            got["files"][i]["uploadMode"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(verdict(0), (true, "regular".into()));
    assert_eq!(verdict(1), (false, "regular".into()));
    assert_eq!(verdict(2), (false, "regular".into()));

    // A `.gitignore` sent with the commit replaces the repo's.
    let (_, _, b) = call(
        &app,
        preupload(json!({ "files": files, "gitIgnore": "*.txt\n" })),
    )
    .await;
    let got = json_of(&b);
    assert_eq!(got["files"][0]["shouldIgnore"], false);
    assert_eq!(got["files"][1]["shouldIgnore"], true);
}

/// Every response carries `X-Request-Id` (the client prints it in errors):
/// the caller's own id when it sent a sane one, else a fresh one.
#[actix_web::test]
async fn responses_carry_a_request_id() {
    let t = TestState::new().await;
    let app = app(&t.state).await;
    let (st, h, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/nobody/nothing")
            .insert_header(("X-Amzn-Trace-Id", "0b5f3c2e-5d1c-4f7e-9d7a-3a1c2b4d5e6f")),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        h.get("x-request-id").unwrap(),
        "0b5f3c2e-5d1c-4f7e-9d7a-3a1c2b4d5e6f"
    );
    let (_, h1, _) = call(&app, TestRequest::get().uri("/healthz")).await;
    let (_, h2, _) = call(
        &app,
        TestRequest::get()
            .uri("/healthz")
            .insert_header(("X-Request-Id", "bad id\twith spaces")),
    )
    .await;
    let (a, b) = (
        h1.get("x-request-id").unwrap(),
        h2.get("x-request-id").unwrap(),
    );
    assert_eq!(a.len(), 36);
    assert_ne!(a, b);
    assert_ne!(b, "bad id\twith spaces");
}

/// `auth_check` is the download decision: 200 for a reader, 404 RepoNotFound
/// for a missing repo, 403 GatedRepo (with the Hub's text) for a stranger on
/// a gated repo.
#[actix_web::test]
async fn auth_check_is_the_download_decision() {
    let t = TestState::new().await;
    let (_, owner) = t.user("alice", false, &["read", "write"]).await;
    let (_, other) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &owner, "alice/g", false).await;
    let check = |tok: &str, repo: &str| {
        TestRequest::get()
            .uri(&format!("/api/models/{repo}/auth-check"))
            .insert_header(bearer(tok))
    };
    assert_eq!(call(&app, check(&other, "alice/g")).await.0, 200);
    let (st, h, _) = call(&app, check(&other, "alice/missing")).await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "RepoNotFound");

    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri("/api/models/alice/g/settings")
            .insert_header(bearer(&owner))
            .set_json(json!({"gated": "auto"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(call(&app, check(&owner, "alice/g")).await.0, 200);
    let (st, h, _) = call(&app, check(&other, "alice/g")).await;
    assert_eq!(st, 403);
    assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    assert!(h
        .get("x-error-message")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(
            "Access to model alice/g is restricted and you are not in the authorized list"
        ));
}

/// The Hub's texts for a move onto an existing repo and a stale parentCommit.
#[actix_web::test]
async fn move_conflict_and_stale_parent_texts() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/a", false).await;
    create_repo(&app, &tok, "alice/b", false).await;
    let (st, h, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/move")
            .insert_header(bearer(&tok))
            .set_json(json!({"fromRepo": "alice/a", "toRepo": "alice/b", "type": "model"})),
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(
        h.get("x-error-message").unwrap(),
        "A model repository called alice/b already exists"
    );

    let first = commit_files(&app, &tok, "alice/a", &[("x.txt", b"1")]).await;
    commit_files(&app, &tok, "alice/a", &[("x.txt", b"2")]).await;
    let (st, h, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/a/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(hub_testkit::ndjson(
                "stale",
                Some(&first),
                &[hub_testkit::file_op("y.txt", b"y")],
            )),
    )
    .await;
    assert_eq!(st, 412);
    assert_eq!(
        h.get("x-error-message").unwrap(),
        "The branch was updated since you opened this page. Please refresh and try again."
    );
}

/// `validate-yaml` checks metadata, not only YAML syntax: a `model-index`
/// or `license` of the wrong shape is a 400 with `errors`, a card without
/// metadata a 200 with a warning (front matter may follow blank lines).
#[actix_web::test]
async fn validate_yaml_checks_metadata() {
    let t = TestState::new().await;
    let app = app(&t.state).await;
    let validate = |content: &str| {
        TestRequest::post()
            .uri("/api/validate-yaml")
            .set_json(json!({"content": content, "repoType": "model"}))
    };
    let (st, _, b) = call(&app, validate("\n---\nmodel-index: foo\n---\n\nbody\n")).await;
    assert_eq!(st, 400);
    assert!(json_of(&b)["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("model-index"));
    let (st, _, b) = call(&app, validate("---\nlicense: {a: 1}\n---\n")).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));

    let (st, _, b) = call(&app, validate("A card without metadata")).await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b)["errors"], json!([]));
    assert_eq!(json_of(&b)["warnings"].as_array().unwrap().len(), 1);

    let good = "---\nlicense: mit\ntags: [a, b]\nmodel-index:\n- name: m\n  results: []\n---\n";
    let (st, _, b) = call(&app, validate(good)).await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b), json!({"errors": [], "warnings": []}));
}

/// `super_squash_history`: the branch becomes one root commit with the same
/// files; another branch keeps the old history.
#[actix_web::test]
async fn super_squash_makes_one_root_commit() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", false).await;
    commit_files(&app, &tok, "alice/m", &[("a.txt", b"1")]).await;
    let head = commit_files(&app, &tok, "alice/m", &[("a.txt", b"2")]).await;
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/branch/keep")
            .insert_header(bearer(&tok))
            .set_json(json!({})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/super-squash/main")
            .insert_header(bearer(&tok))
            .set_json(json!({"message": "Super-squash branch 'main'"})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let squashed = json_of(&b)["commitOid"].as_str().unwrap().to_string();
    assert_ne!(squashed, head);

    let history = |rev: &'static str| {
        TestRequest::get()
            .uri(&format!("/api/models/alice/m/commits/{rev}"))
            .insert_header(bearer(&tok))
    };
    let (_, _, b) = call(&app, history("main")).await;
    let main = json_of(&b);
    assert_eq!(main.as_array().unwrap().len(), 1);
    assert_eq!(main[0]["id"], squashed.as_str());
    assert_eq!(main[0]["title"], "Super-squash branch 'main'");
    let (_, _, b) = call(&app, history("keep")).await;
    assert_eq!(json_of(&b).as_array().unwrap().len(), 3);
    let (st, _, b) = call(&app, TestRequest::get().uri("/alice/m/resolve/main/a.txt")).await;
    assert_eq!((st, &b[..]), (200, &b"2"[..]));

    let (st, h, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/m/super-squash/nope")
            .insert_header(bearer(&tok))
            .set_json(json!({"message": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "RevisionNotFound");
}

/// Likes: `like` / `unlike` are idempotent and move the repo's `likes`
/// count; `list_liked_repos` lists public repos only; a missing repo is
/// RepoNotFound, a missing user 404.
#[actix_web::test]
async fn likes_count_and_list() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/pub", false).await;
    create_repo(&app, &alice, "alice/priv", true).await;
    let like = |tok: &str, repo: &str, on: bool| {
        let r = if on {
            TestRequest::post()
        } else {
            TestRequest::delete()
        };
        r.uri(&format!("/api/models/{repo}/like"))
            .insert_header(bearer(tok))
    };
    for _ in 0..2 {
        assert_eq!(call(&app, like(&bob, "alice/pub", true)).await.0, 200);
    }
    assert_eq!(call(&app, like(&alice, "alice/pub", true)).await.0, 200);
    assert_eq!(call(&app, like(&alice, "alice/priv", true)).await.0, 200);
    let (st, h, _) = call(&app, like(&bob, "alice/priv", true)).await;
    assert_eq!(
        (st, h.get("x-error-code").unwrap().to_str().unwrap()),
        (404, "RepoNotFound")
    );
    let (st, _, _) = call(&app, like(&bob, "alice/missing", false)).await;
    assert_eq!(st, 404);

    let (_, _, b) = call(&app, TestRequest::get().uri("/api/models/alice/pub")).await;
    assert_eq!(json_of(&b)["likes"], 2);
    let (_, _, b) = call(&app, TestRequest::get().uri("/api/users/alice/likes")).await;
    let listed = json_of(&b);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        listed[0]["repo"],
        json!({"name": "alice/pub", "type": "model"})
    );

    assert_eq!(call(&app, like(&bob, "alice/pub", false)).await.0, 200);
    assert_eq!(call(&app, like(&bob, "alice/pub", false)).await.0, 200);
    let (_, _, b) = call(&app, TestRequest::get().uri("/api/models/alice/pub")).await;
    assert_eq!(json_of(&b)["likes"], 1);
    let (_, _, b) = call(&app, TestRequest::get().uri("/api/users/bob/likes")).await;
    assert_eq!(json_of(&b), json!([]));
    assert_eq!(
        call(&app, TestRequest::get().uri("/api/users/nobody/likes"))
            .await
            .0,
        404
    );
}
