//! What the hub knows about its dependencies' health, and what it does with it:
//!
//! * a **database probe** (its own connection, never the pool, with a 1 s
//!   bound) that runs every second, every 250 ms while the database is down,
//!   and at once when a request saw the database fail;
//! * a **circuit breaker**: while the probe says the database is down, every
//!   request that needs it is answered 503 `database_unavailable` at once
//!   instead of waiting for the pool's acquire timeout;
//! * the **disk reserve** (`diskspace`): below it, requests that write are
//!   answered 507 `insufficient_storage` before they reach the database or the
//!   object store;
//! * recent "out of resources" answers of the database (SQLSTATE class 53,
//!   e.g. 53100 disk full), which make `/readyz` say not ready.
//!
//! `/readyz` reads all of it and answers within about half a second.

use crate::diskspace::Reserve;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::ResponseError;
use sqlx::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound of one database probe (connect, then `SELECT 1`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probe period while the database answers.
const PROBE_EVERY_UP: Duration = Duration::from_secs(1);
/// Probe period while it does not.
const PROBE_EVERY_DOWN: Duration = Duration::from_millis(250);
/// How long a SQLSTATE class 53 answer keeps `/readyz` at "not ready".
pub const RESOURCE_ERROR_WINDOW: Duration = Duration::from_secs(30);

/// Health of the database and the disks, shared by every request of a process.
pub struct Health {
    /// The free-space reserve checked before writes.
    pub reserve: Reserve,
    db_down: AtomicBool,
    db_down_since: Mutex<Option<Instant>>,
    last_resource_error: Mutex<Option<(Instant, String)>>,
    wake: tokio::sync::Notify,
}

impl Default for Health {
    /// No reserve; the database is presumed up until a probe says otherwise.
    fn default() -> Self {
        Self::new(Reserve::none())
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("reserve", &self.reserve)
            .field("db_down", &self.db_down())
            .finish()
    }
}

impl Health {
    pub fn new(reserve: Reserve) -> Self {
        Self {
            reserve,
            db_down: AtomicBool::new(false),
            db_down_since: Mutex::new(None),
            last_resource_error: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Runs the probe now (a check saw the database fail).
    pub fn wake_probe(&self) {
        self.wake.notify_one();
    }

    /// Whether the last probe could not reach the database (the breaker is open).
    pub fn db_down(&self) -> bool {
        self.db_down.load(Ordering::Acquire)
    }

    /// Records a probe's verdict (and logs the transitions).
    pub fn set_db_down(&self, down: bool, why: Option<&str>) {
        let was = self.db_down.swap(down, Ordering::AcqRel);
        let mut since = self.db_down_since.lock().expect("lock");
        match (was, down) {
            (false, true) => {
                *since = Some(Instant::now());
                tracing::warn!(
                    error = why.unwrap_or(""),
                    "database unreachable: answering 503 until it is back"
                );
            }
            (true, false) => {
                let ms = since.take().map(|t| t.elapsed().as_millis()).unwrap_or(0);
                tracing::info!(outage_ms = ms as u64, "database reachable again");
            }
            _ => {}
        }
    }

    /// Learns from an error a request answered with: a database failure wakes
    /// the probe; an "insufficient resources" answer (SQLSTATE class 53) is
    /// remembered for `/readyz`.
    pub fn observe(&self, e: &ApiError) {
        let ApiError::DatabaseUnavailable(cause) = e else {
            return;
        };
        self.wake.notify_one();
        let code = cause
            .chain()
            .filter_map(|c| c.downcast_ref::<sqlx::Error>())
            .find_map(|e| match e {
                sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
                _ => None,
            });
        if let Some(code) = code.filter(|c| c.starts_with("53")) {
            *self.last_resource_error.lock().expect("lock") = Some((Instant::now(), code));
        }
    }

    /// The SQLSTATE of a class 53 answer seen within [`RESOURCE_ERROR_WINDOW`].
    pub fn recent_resource_error(&self) -> Option<String> {
        let g = self.last_resource_error.lock().expect("lock");
        g.as_ref()
            .filter(|(t, _)| t.elapsed() < RESOURCE_ERROR_WINDOW)
            .map(|(_, c)| c.clone())
    }

    /// One probe: the kept connection (or a new one) answers `SELECT 1` within
    /// [`PROBE_TIMEOUT`].
    async fn probe(
        &self,
        pool: &sqlx::PgPool,
        conn: &mut Option<sqlx::PgConnection>,
    ) -> Result<(), String> {
        let attempt = async {
            if conn.is_none() {
                let opts = pool.connect_options();
                *conn = Some(
                    sqlx::PgConnection::connect_with(&opts)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let c = conn.as_mut().expect("connected above");
            sqlx::query("SELECT 1")
                .execute(c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let r = match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        if r.is_err() {
            // A broken connection is not reused.
            *conn = None;
        }
        r
    }
}

/// Runs the database probe for as long as the process lives.
pub fn spawn_probe(state: AppState) {
    actix_web::rt::spawn(async move {
        let mut conn = None;
        loop {
            let r = state.health.probe(&state.db, &mut conn).await;
            state
                .health
                .set_db_down(r.is_err(), r.as_ref().err().map(String::as_str));
            let every = if r.is_err() {
                PROBE_EVERY_DOWN
            } else {
                PROBE_EVERY_UP
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = state.health.wake.notified() => {}
            }
        }
    });
}

/// Paths that never need the database or write (always served).
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/favicon.ico") || path.starts_with("/static/")
}

/// POSTs that write nothing lasting, or must keep working when the disk is
/// low: sign-in, the worker control plane, inference, downloads through the
/// LFS batch API and git fetches, read-only queries.
fn writes_nothing(path: &str) -> bool {
    path.starts_with("/api/v1/auth/")
        || path.ends_with("/git-upload-pack")
        || path.starts_with("/api/v1/workers/")
        || path.starts_with("/endpoints/")
        || path.ends_with("/info/lfs/objects/batch")
        || path.contains("/paths-info/")
        || path == "/api/validate-yaml"
}

/// The middleware: the circuit breaker and the disk reserve in front of every
/// route, and what the answers teach [`Health`].
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse, actix_web::Error> {
    let Some(state) = req.app_data::<actix_web::web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let health = &state.health;
    let path = req.path();
    if !exempt(path) {
        let refusal = if health.db_down() {
            Some(ApiError::DatabaseUnavailable(anyhow::anyhow!(
                "circuit breaker open: the database probe fails"
            )))
        } else if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
            && !writes_nothing(path)
        {
            health.reserve.shortage(0).map(|s| {
                tracing::warn!(shortage = %s, "write refused: disk space reserve");
                ApiError::InsufficientStorage(
                    "free disk space is below the hub's reserve; writes are refused until \
                     space is freed"
                        .into(),
                )
            })
        } else {
            None
        };
        if let Some(e) = refusal {
            let resp = e.error_response();
            return Ok(req.into_response(resp));
        }
    }
    let res = next.call(req).await;
    let err = match &res {
        Ok(r) => r.response().error(),
        Err(e) => Some(e),
    };
    if let Some(api) = err.and_then(|e| e.as_error::<ApiError>()) {
        health.observe(api);
    }
    res.map(|r| r.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_state_transitions() {
        let h = Health::default();
        assert!(!h.db_down());
        h.set_db_down(true, Some("refused"));
        assert!(h.db_down());
        h.set_db_down(false, None);
        assert!(!h.db_down());
    }

    #[test]
    fn read_only_posts_and_health_are_exempt() {
        assert!(exempt("/readyz"));
        assert!(exempt("/static/abc/app.css"));
        assert!(!exempt("/api/models/a/b/commit/main"));
        assert!(writes_nothing("/a/b.git/info/lfs/objects/batch"));
        assert!(writes_nothing("/a/b.git/git-upload-pack"));
        assert!(writes_nothing("/api/v1/workers/x/heartbeat"));
        assert!(!writes_nothing("/api/models/a/b/commit/main"));
        assert!(!writes_nothing("/api/models/a/b/branch/dev"));
    }
}
