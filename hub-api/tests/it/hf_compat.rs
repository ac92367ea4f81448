//! Compatibility points found by running huggingface_hub's own test suite
//! against the hub (scripts/hf-suite): each test pins one behaviour of the
//! real Hub that the client's tests rely on.

use crate::common::{bearer, call, commit_files, create_repo, json_of, token, tree_paths};
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
/// RepoNotFound, a missing user 404. A like changes state in the caller's
/// name: a read-only token is 403 and changes nothing.
#[actix_web::test]
async fn likes_count_and_list() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (bob_id, bob) = t.user("bob", false, &["read", "write"]).await;
    let (_, bob_ro) = token(&t, bob_id, &["read"], None, None).await;
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
    for on in [true, false] {
        let (st, _, b) = call(&app, like(&bob_ro, "alice/pub", on)).await;
        assert_eq!(
            (st, json_of(&b)["code"].as_str()),
            (403, Some("forbidden")),
            "{}",
            String::from_utf8_lossy(&b)
        );
        assert!(json_of(&b)["error"]
            .as_str()
            .unwrap()
            .contains("write scope"));
    }

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

/// A single-segment repo id's one-word actions (`unlike("missing_repo_id")`,
/// `list_repo_refs("gpt2")`) share their path shape with a two-segment repo's
/// info: they reach the action (404 `RepoNotFound` for a missing repo, not
/// 405), while the info of a readable repo `ns/refs` still answers as before.
#[actix_web::test]
async fn single_segment_actions_are_routed() {
    let t = TestState::new().await;
    let (_, root) = t.user("root", true, &["read", "write"]).await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;

    // Missing single-segment repo: every action is RepoNotFound.
    for req in [
        TestRequest::post().uri("/api/models/missing_repo_id/like"),
        TestRequest::delete().uri("/api/models/missing_repo_id/like"),
        TestRequest::get().uri("/api/models/missing_repo_id/refs"),
        TestRequest::get().uri("/api/models/missing_repo_id/auth-check"),
        TestRequest::put()
            .uri("/api/datasets/missing_repo_id/settings")
            .set_json(json!({"private": true})),
    ] {
        let (st, h, b) = call(&app, req.insert_header(bearer(&tok))).await;
        assert_eq!(st, 404, "{}", String::from_utf8_lossy(&b));
        assert_eq!(h.get("x-error-code").unwrap(), "RepoNotFound");
    }

    // An existing single-segment repo: the real actions.
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&root))
            .set_json(json!({"name": "gpt9", "canonical": true})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/gpt9/refs")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["branches"][0]["name"], "main");
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/gpt9/like")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    let (_, _, b) = call(&app, TestRequest::get().uri("/api/models/gpt9")).await;
    assert_eq!(json_of(&b)["likes"], 1);
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/gpt9/auth-check")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri("/api/models/gpt9/settings")
            .insert_header(bearer(&root))
            .set_json(json!({"private": true})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/gpt9")
            .insert_header(bearer(&root)),
    )
    .await;
    assert_eq!(json_of(&b)["private"], true);

    // A two-segment repo named like an action keeps its info route; an
    // outsider who cannot see it gets the single-segment action (404 here).
    create_repo(&app, &tok, "alice/refs", true).await;
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/refs")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["id"], "alice/refs");
    let (st, h, _) = call(&app, TestRequest::get().uri("/api/models/alice/refs")).await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "RepoNotFound");
    // Its GET-only info path still answers other methods with 405.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/alice/refs")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 405);
}

/// `move_repo(a, b)` then `hf_hub_download(a, ...)`: the old name redirects
/// (307, method kept) to the same path under the new name, for callers who
/// can read the repo; others still get 404. A repo created under the old
/// name takes it back.
#[actix_web::test]
async fn a_moved_repo_s_old_name_redirects() {
    let t = TestState::new().await;
    let (_, tok) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "alice/m", true).await;
    commit_files(&app, &tok, "alice/m", &[("a.txt", b"one")]).await;
    let mv = |from: &str, to: &str| {
        TestRequest::post()
            .uri("/api/repos/move")
            .insert_header(bearer(&tok))
            .set_json(json!({"fromRepo": from, "toRepo": to, "type": "model"}))
    };
    let (st, _, b) = call(&app, mv("alice/m", "alice/m_renamed")).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));

    for (req, want) in [
        (
            TestRequest::get().uri("/alice/m/resolve/main/a.txt?x=1"),
            "/alice/m_renamed/resolve/main/a.txt?x=1",
        ),
        (
            TestRequest::default()
                .method(actix_web::http::Method::HEAD)
                .uri("/alice/m/resolve/main/a.txt"),
            "/alice/m_renamed/resolve/main/a.txt",
        ),
        (
            TestRequest::get().uri("/api/models/alice/m/revision/main"),
            "/api/models/alice/m_renamed/revision/main",
        ),
    ] {
        let (st, h, _) = call(&app, req.insert_header(bearer(&tok))).await;
        assert_eq!(st, 307);
        assert_eq!(h.get("location").unwrap(), want);
    }
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/alice/m_renamed/resolve/main/a.txt")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!((st, &b[..]), (200, &b"one"[..]));
    // The repo is private: nobody else learns where it went.
    for req in [
        TestRequest::get().uri("/alice/m/resolve/main/a.txt"),
        TestRequest::get()
            .uri("/api/models/alice/m")
            .insert_header(bearer(&bob)),
    ] {
        let (st, h, _) = call(&app, req).await;
        assert_eq!(st, 404);
        assert_eq!(h.get("x-error-code").unwrap(), "RepoNotFound");
        assert!(h.get("location").is_none());
    }
    // Moved again: the first name leads to the newest one.
    let (st, _, _) = call(&app, mv("alice/m_renamed", "alice/m3")).await;
    assert_eq!(st, 200);
    let (st, h, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/m")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 307);
    assert_eq!(h.get("location").unwrap(), "/api/models/alice/m3");
    // Moved back to its first name: that name is the repo's again.
    let (st, _, _) = call(&app, mv("alice/m3", "alice/m")).await;
    assert_eq!(st, 200);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/m")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b)["id"], "alice/m");
    // A new repo under an old name takes it.
    create_repo(&app, &tok, "alice/m3", false).await;
    let (st, _, b) = call(&app, TestRequest::get().uri("/api/models/alice/m3")).await;
    assert_eq!(st, 200);
    assert_eq!(json_of(&b)["id"], "alice/m3");
    let (st, h, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/alice/m_renamed")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 307);
    assert_eq!(h.get("location").unwrap(), "/api/models/alice/m");
}

/// A private-by-default organization (`hub-api admin create-org
/// --private-repos`): a repo created there without a visibility is private;
/// an explicit public one stays public.
#[actix_web::test]
async fn private_by_default_organizations() {
    let t = TestState::new().await;
    let (uid, tok) = t.user("alice", false, &["read", "write"]).await;
    hub_api::db::namespaces::create_user(
        &mut t.state.db.acquire().await.unwrap(),
        "owner",
        None,
        None,
        false,
    )
    .await
    .unwrap();
    hub_api::admin::run(
        &t.state.db,
        hub_api::config::AdminCommand::CreateOrg {
            name: "corp".into(),
            owner: "owner".into(),
            fullname: None,
            private_repos: true,
        },
    )
    .await
    .unwrap();
    let corp = hub_api::db::namespaces::by_name(&t.state.db, "corp")
        .await
        .unwrap()
        .unwrap();
    hub_api::db::namespaces::set_member(
        &t.state.db,
        corp.id,
        uid,
        hub_api::db::namespaces::Role::Write,
    )
    .await
    .unwrap();
    t.org("open", uid).await;
    let app = app(&t.state).await;
    let create = |body: serde_json::Value| {
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_json(body)
    };
    for (body, private) in [
        (json!({"name": "a", "organization": "corp"}), true),
        (
            json!({"name": "b", "organization": "corp", "visibility": "public"}),
            false,
        ),
        (
            json!({"name": "c", "organization": "corp", "private": false}),
            false,
        ),
        (json!({"name": "d", "organization": "open"}), false),
        (json!({"name": "e"}), false),
    ] {
        let (st, _, b) = call(&app, create(body.clone())).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        let id = json_of(&b)["name"].as_str().unwrap().to_string();
        let (st, _, b) = call(
            &app,
            TestRequest::get()
                .uri(&format!("/api/models/{id}"))
                .insert_header(bearer(&tok)),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(json_of(&b)["private"], private, "{body}");
    }
}

/// `list_lfs_files` / `permanently_delete_lfs_files`: the repo's LFS objects
/// with a head that has them; deleting (admins only) drops the files from
/// each branch head, takes the objects from the repo (older revisions then
/// answer 404 EntryNotFound), and deletes the bytes unless another repo
/// holds the same content.
#[actix_web::test]
async fn lfs_files_list_and_permanent_delete() {
    use sha2::Digest;
    let t = TestState::new().await;
    let (alice_id, tok) = t.user("alice", false, &["read", "write"]).await;
    let (bob_id, bob) = t.user("bob", false, &["read", "write"]).await;
    let (carl_id, carl) = t.user("carl", false, &["read", "write"]).await;
    let org = t.org("acme", alice_id).await;
    for (user, role) in [
        (bob_id, hub_api::db::namespaces::Role::Write),
        (carl_id, hub_api::db::namespaces::Role::Read),
    ] {
        hub_api::db::namespaces::set_member(&t.state.db, org, user, role)
            .await
            .unwrap();
    }
    let app = app(&t.state).await;
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let (a, shared, c) = (&b"\0lfs a"[..], &b"\0lfs shared"[..], &b"\0lfs c"[..]);
    create_repo(&app, &tok, "acme/m", false).await;
    let first = commit_files(
        &app,
        &tok,
        "acme/m",
        &[("a.bin", a), ("shared.bin", shared), ("t.txt", b"text")],
    )
    .await;
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/acme/m/branch/dev")
            .insert_header(bearer(&tok))
            .set_json(json!({})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/acme/m/commit/dev")
            .insert_header(bearer(&tok))
            .set_payload(hub_testkit::ndjson(
                "dev",
                None,
                &[hub_testkit::file_op("c.bin", c)],
            )),
    )
    .await;
    assert_eq!(st, 200);
    // Another tenant stores the same bytes in its own repo.
    create_repo(&app, &bob, "bob/other", false).await;
    commit_files(&app, &bob, "bob/other", &[("copy.bin", shared)]).await;

    let list = |tok: String| {
        TestRequest::get()
            .uri("/api/models/acme/m/lfs-files")
            .insert_header(bearer(&tok))
    };
    let (st, _, b) = call(&app, list(bob.clone())).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let items = json_of(&b);
    let mut seen: Vec<(String, String, String)> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["oid"], i["fileOid"]);
            assert!(i["pushedAt"].as_str().unwrap().ends_with('Z'));
            (
                i["fileOid"].as_str().unwrap().to_string(),
                i["filename"].as_str().unwrap().to_string(),
                i["ref"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (sha(a), "a.bin".to_string(), "refs/heads/main".to_string()),
        (sha(shared), "shared.bin".into(), "refs/heads/main".into()),
        (sha(c), "c.bin".into(), "refs/heads/dev".into()),
    ];
    want.sort();
    assert_eq!(seen, want);
    // Readers may not list; writers may not delete.
    let (st, _, _) = call(&app, list(carl.clone())).await;
    assert_eq!(st, 403);
    let delete = |tok: &str, shas: Vec<String>| {
        TestRequest::post()
            .uri("/api/models/acme/m/lfs-files/batch")
            .insert_header(bearer(tok))
            .set_json(json!({"deletions": {"sha": shas, "rewriteHistory": true}}))
    };
    let (st, _, _) = call(&app, delete(&bob, vec![sha(a)])).await;
    assert_eq!(st, 403);
    // An object the repo does not hold: 400, nothing changes.
    let (st, _, b) = call(&app, delete(&tok, vec![sha(a), sha(b"nope")])).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));

    let (st, _, b) = call(&app, delete(&tok, vec![sha(a), sha(shared)])).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = call(&app, list(tok.clone())).await;
    let left: Vec<String> = json_of(&b)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["filename"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec!["c.bin"]);
    // main's head no longer has the files; dev's still has c.bin.
    assert_eq!(
        tree_paths(&app, "/api/models/acme/m/tree/main").await,
        vec![".gitattributes", "t.txt"]
    );
    // The old revision's pointer fails cleanly.
    let (st, h, b) = call(
        &app,
        TestRequest::get().uri(&format!("/acme/m/resolve/{first}/a.bin")),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(h.get("x-error-code").unwrap(), "EntryNotFound");
    assert!(String::from_utf8_lossy(&b).contains("permanently deleted"));
    let (st, _, b) = call(
        &app,
        TestRequest::get().uri(&format!("/acme/m/resolve/{first}/t.txt")),
    )
    .await;
    assert_eq!((st, &b[..]), (200, &b"text"[..]));
    // Nor does the dashboard's file view (bob's copy keeps the bytes stored).
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri(&format!("/acme/m/blob/{first}/shared.bin"))
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&b).contains("permanently deleted"));
    // The LFS batch API no longer hands it out either.
    let (_, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/acme/m.git/info/lfs/objects/batch")
            .insert_header(("Content-Type", "application/vnd.git-lfs+json"))
            .set_payload(
                json!({"operation": "download", "objects": [{"oid": sha(a), "size": a.len()}]})
                    .to_string(),
            ),
    )
    .await;
    assert!(
        json_of(&b)["objects"][0]["actions"].is_null(),
        "{}",
        String::from_utf8_lossy(&b)
    );
    // Bytes only this repo held are gone; shared bytes stay for bob.
    let digest = |b: &[u8]| hub_api::domain::Sha256::parse(&sha(b)).unwrap();
    assert!(!t.state.storage.blob_exists(&digest(a)).await.unwrap());
    assert!(t.state.storage.blob_exists(&digest(shared)).await.unwrap());
    let (st, _, b) = call(
        &app,
        TestRequest::get().uri("/bob/other/resolve/main/copy.bin"),
    )
    .await;
    assert_eq!((st, &b[..]), (200, shared));
    // Committing the object again needs a new upload.
    let line = json!({"key": "lfsFile", "value": {"path": "again.bin", "algo": "sha256", "oid": sha(a), "size": a.len()}});
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/api/models/acme/m/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(hub_testkit::ndjson("again", None, &[line])),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(json_of(&b)["code"], "lfs_object_missing");
}
