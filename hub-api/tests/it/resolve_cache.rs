//! `/resolve`'s per-process cache (`hub_api::resolve_cache`) across two hub
//! replicas over one database: each answers from its warm cache, and every
//! change of what a revision means (a commit moving a branch, a tag created
//! or moved, a branch deleted, an LFS object permanently removed) is seen by
//! the other replica's very next request, with no notification in between.
//! (These replicas run no listener, so the repo row itself is read on every
//! request; with a listener it is cached too, see `it::repo_cache`.)

use crate::common::*;
use crate::send;
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::json;
use sha2::Digest;

macro_rules! head {
    ($app:expr, $uri:expr) => {{
        let (st, h, _) = send!(
            $app,
            TestRequest::default()
                .method(actix_web::http::Method::HEAD)
                .uri($uri)
        );
        let commit = h
            .get("x-repo-commit")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let etag = h
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (st, commit, etag)
    }};
}

macro_rules! commit {
    ($app:expr, $tok:expr, $rev:expr, $ops:expr) => {{
        let (st, _, b) = send!(
            $app,
            TestRequest::post()
                .uri(&format!("/api/models/olga/m/commit/{}", $rev))
                .insert_header(bearer($tok))
                .set_payload(ndjson("c", None, $ops))
        );
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["commitOid"].as_str().unwrap().to_string()
    }};
}

// Shared with `it::repo_cache`.
pub(crate) use {commit, head};

/// A hub and a second replica over its database and store, a user `olga`
/// (read, write) with an empty model `olga/m`.
async fn two_replicas() -> (TestState, hub_api::state::AppState, String) {
    let t = TestState::new().await;
    let (_, tok) = t.user("olga", false, &["read", "write"]).await;
    let b_state = t.replica().await;
    let a = app(&t.state).await;
    let (st, _, _) = send!(
        a,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&tok))
            .set_json(json!({"name": "m"}))
    );
    assert_eq!(st, StatusCode::OK);
    (t, b_state, tok)
}

#[actix_web::test]
async fn a_ref_moved_on_one_replica_is_seen_by_the_next_request_on_the_other() {
    let (t, b_state, tok) = two_replicas().await;
    let (a, b) = (app(&t.state).await, app(&b_state).await);
    let c1 = commit!(a, &tok, "main", &[file_op("f.txt", b"one")]);

    // Both replicas answer (and cache) main -> c1.
    for _ in 0..2 {
        assert_eq!(head!(a, "/olga/m/resolve/main/f.txt").1, c1);
        assert_eq!(head!(b, "/olga/m/resolve/main/f.txt").1, c1);
    }
    assert!(!b_state.resolved.revisions.is_empty() && !b_state.resolved.entries.is_empty());
    let e1 = head!(b, "/olga/m/resolve/main/f.txt").2;

    // A commit through replica A: B's next request sees it.
    let c2 = commit!(a, &tok, "main", &[file_op("f.txt", b"two")]);
    let (st, commit, etag) = head!(b, "/olga/m/resolve/main/f.txt");
    assert_eq!((st, commit.as_str()), (StatusCode::OK, c2.as_str()));
    assert_ne!(etag, e1);
    let (_, _, body) = send!(b, TestRequest::get().uri("/olga/m/resolve/main/f.txt"));
    assert_eq!(&body[..], b"two");
    // A revision by commit id still names the old content.
    assert_eq!(
        head!(b, &format!("/olga/m/resolve/{c1}/f.txt")),
        (StatusCode::OK, c1.clone(), e1.clone())
    );

    // A tag created on A at c1, then moved to c2 (deleted and re-created).
    let (st, _, _) = send!(
        a,
        TestRequest::post()
            .uri("/api/models/olga/m/tag/main")
            .insert_header(bearer(&tok))
            .set_json(json!({"tag": "v1"}))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(head!(b, "/olga/m/resolve/v1/f.txt").1, c2);
    let (st, _, _) = send!(
        a,
        TestRequest::delete()
            .uri("/api/models/olga/m/tag/v1")
            .insert_header(bearer(&tok))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        head!(b, "/olga/m/resolve/v1/f.txt").0,
        StatusCode::NOT_FOUND,
        "a deleted tag resolves to nothing on the other replica"
    );

    // A branch made on A, used on B, deleted on A.
    let (st, _, _) = send!(
        a,
        TestRequest::post()
            .uri("/api/models/olga/m/branch/dev")
            .insert_header(bearer(&tok))
            .set_json(json!({}))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(head!(b, "/olga/m/resolve/dev/f.txt").1, c2);
    let (st, _, _) = send!(
        a,
        TestRequest::delete()
            .uri("/api/models/olga/m/branch/dev")
            .insert_header(bearer(&tok))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        head!(b, "/olga/m/resolve/dev/f.txt").0,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn an_lfs_object_removed_from_the_repo_is_gone_from_every_replica() {
    let (t, b_state, tok) = two_replicas().await;
    let (a, b) = (app(&t.state).await, app(&b_state).await);
    // An LFS object, uploaded with the basic transfer and committed.
    let content = vec![7u8; 4096];
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let batch = json!({"operation": "upload", "transfers": ["basic"], "objects": [{"oid": sha, "size": content.len()}]});
    let (_, _, body) = send!(
        a,
        TestRequest::post()
            .uri("/olga/m.git/info/lfs/objects/batch")
            .insert_header(bearer(&tok))
            .set_payload(batch.to_string())
    );
    let resp: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let href = resp["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    let (st, _, _) = send!(
        a,
        TestRequest::put().uri(&href).set_payload(content.clone())
    );
    assert_eq!(st, StatusCode::OK);
    let line = json!({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": sha, "size": content.len()}});
    let c1 = commit!(a, &tok, "main", &[line]);
    let uri = format!("/olga/m/resolve/{c1}/w.bin");
    assert_eq!(head!(b, &uri).0, StatusCode::OK);
    assert_eq!(head!(b, &uri).0, StatusCode::OK, "and from B's cache");

    // What a permanent deletion does to the repo's hold on the object.
    sqlx::query("DELETE FROM repo_lfs_objects WHERE sha256 = $1")
        .bind(&sha)
        .execute(&t.state.db)
        .await
        .unwrap();
    assert_eq!(head!(b, &uri).0, StatusCode::NOT_FOUND);
    assert_eq!(head!(a, &uri).0, StatusCode::NOT_FOUND);
}

/// Repo lookups made at once share queries (`hub_api::repo_lookup`): 200
/// concurrent lookups of four repos, one missing and some in other letter
/// cases, each get their own right answer from far fewer queries; and a
/// lookup made after a change sees it (a repo made private is refused to an
/// anonymous HEAD by the very next request, on a replica that had just
/// served it).
#[actix_web::test]
async fn concurrent_repo_lookups_share_queries_and_stay_exact() {
    let (t, b_state, tok) = two_replicas().await;
    let a = app(&t.state).await;
    for name in ["n1", "n2"] {
        let (st, _, _) = send!(
            a,
            TestRequest::post()
                .uri("/api/repos/create")
                .insert_header(bearer(&tok))
                .set_json(json!({"name": name}))
        );
        assert_eq!(st, StatusCode::OK);
    }
    let lookups = b_state.resolved.repos.clone();
    let names = ["m", "N1", "n2", "missing"];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (l, db) = (lookups.clone(), b_state.db.clone());
            let name = names[i % names.len()];
            let ns = if i % 3 == 0 { "OLGA" } else { "olga" };
            tokio::spawn(async move { (name, l.find(&db, "model", ns, name).await) })
        })
        .collect();
    for task in tasks {
        let (name, got) = task.await.unwrap();
        let got = got.unwrap();
        if name == "missing" {
            assert!(got.is_none());
        } else {
            let row = got.unwrap_or_else(|| panic!("{name} not found"));
            assert_eq!(row.name, name.to_lowercase());
            assert_eq!(row.namespace, "olga");
        }
    }
    let (queries, repos) = lookups.stats();
    assert!(queries < 100, "200 lookups took {queries} queries");
    assert!(
        repos <= queries * 4,
        "a query read {repos} repos in {queries} queries"
    );

    // Fresh: made private through replica A, refused by B's next request.
    let b = app(&b_state).await;
    let c = commit!(a, &tok, "main", &[file_op("f.txt", b"one")]);
    assert_eq!(head!(b, "/olga/m/resolve/main/f.txt").1, c);
    let (st, _, _) = send!(
        a,
        TestRequest::put()
            .uri("/api/models/olga/m/settings")
            .insert_header(bearer(&tok))
            .set_json(json!({"private": true}))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        head!(b, "/olga/m/resolve/main/f.txt").0,
        StatusCode::NOT_FOUND
    );
}
