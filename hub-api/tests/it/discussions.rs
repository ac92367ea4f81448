//! Pull requests from contributors without write access.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};

/// A contributor without write access commits inline files to pull requests;
/// those bytes are stored in the repo (and count toward its owner's quota),
/// so they are capped per contributor and repo (`Limits::contribution`):
/// the commit past the cap is a 413 that writes nothing (no pull request is
/// opened for a refused `create_pr`), smaller ones still fit, and writers
/// are not capped.
#[actix_web::test]
async fn contributors_without_write_access_have_an_allowance() {
    let mut t = TestState::new().await;
    t.state.limits.contribution = 1000;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_repo(&app, &alice, "alice/m", false).await;
    let commit = |tok: &str, rev: &str, name: &str, size: usize| {
        TestRequest::post()
            .uri(&format!("/api/models/alice/m/commit/{rev}"))
            .insert_header(bearer(tok))
            .set_payload(hub_testkit::ndjson(
                "proposal",
                None,
                &[hub_testkit::file_op(name, &vec![b'x'; size])],
            ))
    };
    let prs = || async {
        let (st, _, b) = call(
            &app,
            TestRequest::get().uri("/api/models/alice/m/discussions"),
        )
        .await;
        assert_eq!(st, 200);
        json_of(&b)["count"].as_i64().unwrap()
    };
    let (st, _, b) = call(&app, commit(&bob, "main?create_pr=1", "a.txt", 600)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let pr = "refs%2Fpr%2F1";
    let (st, _, b) = call(&app, commit(&bob, pr, "b.txt", 600)).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
    let e = json_of(&b);
    assert_eq!(e["code"], "quota_exceeded");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("at most 1000 bytes") && msg.contains("added 600"),
        "{msg}"
    );
    let (st, _, b) = call(&app, commit(&bob, "main?create_pr=1", "c.txt", 500)).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
    assert_eq!(prs().await, 1, "a refused create_pr leaves no pull request");
    let (st, _, b) = call(&app, commit(&bob, pr, "d.txt", 400)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, _) = call(&app, commit(&bob, pr, "e.txt", 1)).await;
    assert_eq!(st, 413);
    // The pull request holds a.txt and d.txt only.
    assert_eq!(
        tree_paths(&app, &format!("/api/models/alice/m/tree/{pr}")).await,
        [".gitattributes", "a.txt", "d.txt"]
    );
    // The repo's writer is not a contributor: no allowance applies.
    let (st, _, b) = call(&app, commit(&alice, pr, "f.txt", 5000)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}
