//! The in-process worker of the single-node binary against a real hub (issue 13,
//! item 6): a signing key retired under it does not stop it. Here rather than in
//! hub-api's tests, which link no inference engine.

use hub_testkit::TestState;
use std::time::{Duration, Instant};

/// Retiring the key that signed the in-process worker's token does not stop
/// the worker: it takes a fresh token and keeps heartbeating.
#[actix_web::test]
async fn the_embedded_worker_survives_key_retirement() {
    let t = TestState::new().await;
    let server = hub_testkit::Server::start(t.state.clone());
    let state = server.state.clone();
    let token = hub_api::auth::service_tokens::worker_token(&state, 3600)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = hub_worker::WorkerConfig::new(&server.url, &token);
    cfg.cache_dir = cache.path().to_path_buf();
    // No free-space floor: the tests must not depend on the disk they run on.
    cfg.cache_min_free_gib = Some(0.0);
    cfg.name = Some("embedded".into());
    cfg.engine = hub_worker::engine::EnginePreference::Candle;
    cfg.threads = Some(1);
    cfg.poll_wait_s = 2;
    cfg.token_refresh = Some(hub_api::server::worker_token_refresh(&state));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(hub_worker::run(cfg, async {
        let _ = stopped.await;
    }));
    let last_beat = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT max(last_heartbeat) FROM workers WHERE name = 'embedded'",
        )
        .fetch_one(&state.db)
        .await
        .ok()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while last_beat().await.is_none() {
        assert!(Instant::now() < deadline, "the worker never registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = state.keys.signing_kid().unwrap();
    state.keys.rotate().await.unwrap();
    assert!(state.keys.retire(&old).await.unwrap());
    let retired_at = chrono::Utc::now();
    // Heartbeats every 2 s: two of them after the retirement.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut beats_after = 0;
    let mut seen = retired_at;
    while beats_after < 2 {
        assert!(
            !worker.is_finished(),
            "the worker stopped: {:?}",
            worker.await
        );
        assert!(
            Instant::now() < deadline,
            "no heartbeat after the key was retired"
        );
        if let Some(b) = last_beat().await.filter(|b| *b > seen) {
            seen = b;
            beats_after += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    server.stop().await;
}
