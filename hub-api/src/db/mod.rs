//! Database access: plain async functions grouped by aggregate, each taking an
//! executor so they work inside transactions. No repository traits, no mocks.

pub mod access_requests;
pub mod browse;
pub mod discussions;
pub mod endpoints;
pub mod git;
pub mod jobs;
pub mod lfs;
pub mod lfs_files;
pub mod likes;
pub mod namespaces;
pub mod redirects;
pub mod refs;
pub mod repos;
pub mod tokens;
pub mod webhooks;
pub mod xet;
pub mod xet_gc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects a pool (statement logging off: queries can carry token hashes).
pub async fn connect(url: &str, max: u32) -> anyhow::Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)?
        .application_name("paddock-hub")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await?;
    Ok(pool)
}

/// Applies pending migrations (idempotent; safe with several replicas: sqlx locks).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
