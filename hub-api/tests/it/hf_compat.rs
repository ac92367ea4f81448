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
