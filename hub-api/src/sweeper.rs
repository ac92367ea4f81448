//! Background clean-up: staging objects and upload parts left by interrupted
//! uploads, and expired upload sessions. Only objects older than a grace
//! period are touched, so an upload in progress is never swept.

use crate::state::AppState;
use std::time::Duration;

/// How old an unfinished write must be before it is removed.
pub const GRACE: chrono::Duration = chrono::Duration::hours(6);

/// One sweep; returns how many objects and sessions were removed.
pub async fn sweep_once(
    state: &AppState,
    grace: chrono::Duration,
) -> anyhow::Result<(usize, usize)> {
    let cutoff = chrono::Utc::now() - grace;
    let mut objects = 0;
    for prefix in ["staging", "uploads"] {
        for path in state.storage.list_stale(prefix, cutoff).await? {
            state.storage.delete_path(&path).await?;
            objects += 1;
        }
    }
    let mut sessions = 0;
    for s in crate::db::lfs::expired_sessions(&state.db).await? {
        if let Some(n) = s.part_count {
            state.storage.delete_parts(s.id, n as u32).await;
        }
        crate::db::lfs::delete_session(&state.db, s.id).await?;
        sessions += 1;
    }
    Ok((objects, sessions))
}

/// Runs the sweeper every ten minutes.
pub fn spawn(state: AppState) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            match sweep_once(&state, GRACE).await {
                Ok((o, s)) if o + s > 0 => {
                    tracing::info!(objects = o, sessions = s, "sweeper removed leftovers")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeper failed"),
            }
        }
    });
}
