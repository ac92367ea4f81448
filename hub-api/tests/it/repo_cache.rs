//! The per-process cache of the repo rows `/resolve` reads
//! (`hub_api::repo_cache`): a warm `HEAD` makes no query; a change made
//! through the same process is seen by its next request; a change made
//! anywhere else (straight in the database here, as `hub-api admin`, a
//! background job or another replica makes them) is seen within a
//! notification's delivery; and without its listener the cache is not used.

use crate::common::*;
use crate::gateway_caches::listening;
use crate::send;
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::json;
use std::time::{Duration, Instant};

/// `HEAD uri`: (status, `X-Repo-Commit`).
macro_rules! head {
    ($app:expr, $uri:expr) => {{
        let (st, commit, _etag) = crate::resolve_cache::head!($app, $uri);
        (st, commit)
    }};
}

/// Commits `ops` to `olga/m`'s main; the new commit id.
macro_rules! commit {
    ($app:expr, $tok:expr, $ops:expr) => {
        crate::resolve_cache::commit!($app, $tok, "main", $ops)
    };
}

const F: &str = "/olga/m/resolve/main/f.txt";

/// A hub with a user `olga` (read, write), her model `olga/m` with two
/// commits (c1, then c2 on main), and a second model `olga/n`.
async fn setup() -> (TestState, String, String, String) {
    let t = TestState::new().await;
    let (_, tok) = t.user("olga", false, &["read", "write"]).await;
    let a = app(&t.state).await;
    for name in ["m", "n"] {
        let (st, _, _) = send!(
            a,
            TestRequest::post()
                .uri("/api/repos/create")
                .insert_header(bearer(&tok))
                .set_json(json!({"name": name}))
        );
        assert_eq!(st, StatusCode::OK);
    }
    let c1 = commit!(a, &tok, &[file_op("f.txt", b"one")]);
    let c2 = commit!(a, &tok, &[file_op("f.txt", b"two")]);
    (t, tok, c1, c2)
}

/// Repo-row queries run so far by an app.
fn queries(state: &hub_api::state::AppState) -> u64 {
    state.resolved.repos.stats().0
}

/// Points `olga/m`'s main at `oid` straight in the database.
async fn move_main(t: &TestState, oid: &str) {
    sqlx::query(
        "UPDATE refs SET commit_oid = $1 WHERE name = 'refs/heads/main'
           AND repo_id = (SELECT id FROM repos WHERE name = 'm')",
    )
    .bind(oid)
    .execute(&t.state.db)
    .await
    .unwrap();
}

/// Polls `HEAD uri` until `done` holds; how long that took (at most `bound`).
async fn until<S>(
    app: &S,
    uri: &str,
    bound: Duration,
    done: impl Fn(StatusCode, &str) -> bool,
) -> Duration
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let start = Instant::now();
    loop {
        let (st, commit) = head!(app, uri);
        if done(st, &commit) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{uri} still answers {st} {commit} after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The cache made live by hand, with no listener: no notification ever
/// arrives, so only the write middleware can make a change visible. A warm
/// `HEAD` makes no query (and a change made behind the cache's back is, as
/// it must be, not seen); a commit through the same app is seen by the very
/// next request; an applied notification drops exactly its repo.
#[actix_web::test]
async fn a_warm_head_makes_no_query_and_a_write_here_is_seen_at_once() {
    let (t, tok, c1, c2) = setup().await;
    let a = app(&t.state).await;
    t.state.resolved.rows.set_live(true);
    assert_eq!(head!(a, F), (StatusCode::OK, c2.clone()));
    let before = queries(&t.state);
    for _ in 0..20 {
        assert_eq!(head!(a, F), (StatusCode::OK, c2.clone()));
    }
    assert_eq!(queries(&t.state), before, "warm HEADs read the repo row");

    // Unannounced (no listener), a ref move is not seen: the cache answers.
    move_main(&t, &c1).await;
    assert_eq!(head!(a, F).1, c2);
    // The notification the database sent would drop it.
    let m: i64 = sqlx::query_scalar("SELECT id FROM repos WHERE name = 'm'")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    t.state.resolved.rows.received(&format!("repo:{}", m + 1));
    assert_eq!(head!(a, F).1, c2, "another repo's change keeps m's row");
    t.state.resolved.rows.received(&format!("repo:{m}"));
    assert_eq!(head!(a, F).1, c1);

    // A commit through this app: its next request sees it, with no
    // notification at all.
    assert_eq!(head!(a, F).1, c1);
    let c3 = commit!(a, &tok, &[file_op("f.txt", b"three")]);
    assert_eq!(head!(a, F), (StatusCode::OK, c3.clone()));
    // And so does a settings change: private, an anonymous HEAD is refused.
    let (st, _, _) = send!(
        a,
        TestRequest::put()
            .uri("/api/models/olga/m/settings")
            .insert_header(bearer(&tok))
            .set_json(json!({"private": true}))
    );
    assert_eq!(st, StatusCode::OK);
    assert_eq!(head!(a, F).0, StatusCode::NOT_FOUND);
    // Reads and gateway calls leave the cache alone.
    assert!(!t.state.resolved.rows.is_empty());
    let (st, _, _) = send!(
        a,
        TestRequest::get()
            .uri("/api/models/olga/m")
            .insert_header(bearer(&tok))
    );
    assert_eq!(st, StatusCode::OK);
    let _ = send!(
        a,
        TestRequest::post().uri("/endpoints/olga/none/v1/embeddings")
    );
    assert!(!t.state.resolved.rows.is_empty());
    let q = queries(&t.state);
    assert_eq!(head!(a, F).0, StatusCode::NOT_FOUND);
    assert_eq!(queries(&t.state), q);
}

/// Two replicas with their listeners: every change made straight in the
/// database reaches the other replica's cache within a notification's
/// delivery, well under the bound asserted here (printed: the measured
/// delivery), and a counter update (a download) announces nothing.
#[actix_web::test]
async fn changes_made_elsewhere_are_seen_within_a_notification() {
    let (t, tok, c1, c2) = setup().await;
    let b_state = t.replica().await;
    listening(&b_state, &t.db.url).await;
    let b = app(&b_state).await;
    // Under the cache's own background reload (a row older than 1 s is
    // reloaded by the next lookup), so only the notification can pass; each
    // change below is made on rows loaded just before it.
    let bound = Duration::from_millis(500);
    let rewarm = |uri: &'static str| {
        let (b, b_state) = (&b, &b_state);
        async move {
            b_state.resolved.rows.clear();
            let _ = head!(*b, uri);
            assert!(!b_state.resolved.rows.is_empty());
        }
    };

    // A write's sync notification comes back through the listener.
    assert!(b_state.resolved.rows.sync(&b_state.db).await);
    assert!(
        !t.state.resolved.rows.sync(&t.state.db).await,
        "synced without a listener"
    );

    // Warm, then no query.
    assert_eq!(head!(b, F).1, c2);
    assert_eq!(
        head!(b, "/olga/n/resolve/main/.gitattributes").0,
        StatusCode::OK
    );
    let before = queries(&b_state);
    for _ in 0..10 {
        assert_eq!(head!(b, F).1, c2);
    }
    assert_eq!(queries(&b_state), before);

    // A counted download changes only a counter: m's row stays. Notifications
    // arrive in commit order, so once n's change (made after) has dropped
    // n's row, a notification for the download would have dropped m's.
    sqlx::query("UPDATE repos SET downloads = downloads + 1, likes = likes + 1 WHERE name = 'm'")
        .execute(&t.state.db)
        .await
        .unwrap();
    sqlx::query("UPDATE repos SET private = true WHERE name = 'n'")
        .execute(&t.state.db)
        .await
        .unwrap();
    let took = until(&b, "/olga/n/resolve/main/.gitattributes", bound, |st, _| {
        st == StatusCode::NOT_FOUND
    })
    .await;
    eprintln!("privacy change seen by the other replica after {took:?}");
    let q = queries(&b_state);
    assert_eq!(head!(b, F).1, c2);
    assert_eq!(queries(&b_state), q, "a download dropped m's row");

    // A ref moved.
    rewarm(F).await;
    move_main(&t, &c1).await;
    let took = until(&b, F, bound, |_, c| c == c1).await;
    eprintln!("ref move seen by the other replica after {took:?}");

    // The namespace renamed: the old name no longer finds the repo.
    rewarm(F).await;
    sqlx::query("UPDATE namespaces SET name = 'olga2' WHERE name = 'olga'")
        .execute(&t.state.db)
        .await
        .unwrap();
    let took = until(&b, F, bound, |st, _| st != StatusCode::OK).await;
    eprintln!("namespace rename seen after {took:?}");
    assert_eq!(head!(b, "/olga2/m/resolve/main/f.txt").1, c1);

    // A commit through the API of a listening replica A: its response waits
    // for A's own sync, and B has been told by then or very soon after.
    listening(&t.state, &t.db.url).await;
    let a = app(&t.state).await;
    rewarm("/olga2/m/resolve/main/f.txt").await;
    let c3 = {
        let (st, _, body) = send!(
            a,
            TestRequest::post()
                .uri("/api/models/olga2/m/commit/main")
                .insert_header(bearer(&tok))
                .set_payload(ndjson("c", None, &[file_op("f.txt", b"three")]))
        );
        assert_eq!(st, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["commitOid"].as_str().unwrap().to_string()
    };
    let took = until(&b, "/olga2/m/resolve/main/f.txt", bound, |_, c| c == c3).await;
    eprintln!("a commit acknowledged by A seen by B after {took:?}");

    // The repo deleted.
    rewarm("/olga2/m/resolve/main/f.txt").await;
    sqlx::query("DELETE FROM repos WHERE name = 'm'")
        .execute(&t.state.db)
        .await
        .unwrap();
    until(&b, "/olga2/m/resolve/main/f.txt", bound, |st, _| {
        st == StatusCode::NOT_FOUND
    })
    .await;
}

/// When the listener's connection is lost the cache stops answering at once
/// (changes made meanwhile go unannounced) and is emptied; once the
/// listener listens again it is used again.
#[actix_web::test]
async fn without_its_listener_the_cache_is_not_used() {
    let (t, _tok, c1, c2) = setup().await;
    // Not listening: every HEAD reads the row.
    let a = app(&t.state).await;
    let before = queries(&t.state);
    for _ in 0..3 {
        assert_eq!(head!(a, F).1, c2);
    }
    assert_eq!(queries(&t.state), before + 3);
    assert!(t.state.resolved.rows.is_empty());

    listening(&t.state, &t.db.url).await;
    assert_eq!(head!(a, F).1, c2);
    assert!(!t.state.resolved.rows.is_empty());

    // The listener's connection dies.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE query LIKE 'LISTEN%' AND datname = current_database()
            AND pid <> pg_backend_pid()",
    )
    .fetch_one(&t.state.db)
    .await
    .unwrap();
    assert!(killed >= 1, "no listener connection found");
    let start = Instant::now();
    while t.state.resolved.rows.is_live() {
        assert!(start.elapsed() < Duration::from_secs(5), "loss not noticed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(t.state.resolved.rows.is_empty());
    // Unannounced change, seen by the next request: no cache.
    move_main(&t, &c1).await;
    assert_eq!(head!(a, F).1, c1);
    // The listener reconnects (after a second) and the cache serves again.
    let start = Instant::now();
    while !t.state.resolved.rows.is_live() {
        assert!(start.elapsed() < Duration::from_secs(10), "no reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(head!(a, F).1, c1);
    let q = queries(&t.state);
    assert_eq!(head!(a, F).1, c1);
    assert_eq!(queries(&t.state), q);
}
