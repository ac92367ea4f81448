//! `GET /healthz` (the process is up) and `GET /readyz` (the database answers
//! and accepts writes, storage answers, the disks are above the reserve).
//! `/readyz` is bounded: each check has its own short timeout, never the
//! pool's acquire timeout, and the breaker's verdict answers at once.

use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::time::Duration;

/// Bound of each readiness check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let health = &state.health;
    let db_check = async {
        if health.db_down() {
            return "unreachable";
        }
        match tokio::time::timeout(
            READY_CHECK_TIMEOUT,
            sqlx::query("SELECT 1").execute(&state.db),
        )
        .await
        {
            Ok(Ok(_)) => match health.recent_resource_error() {
                Some(_) => "out_of_resources",
                None => "ok",
            },
            Ok(Err(_)) => {
                health.wake_probe();
                "unreachable"
            }
            Err(_) => {
                health.wake_probe();
                "timeout"
            }
        }
    };
    let storage_check = async {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, state.storage.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(_)) => "unreachable",
            Err(_) => "timeout",
        }
    };
    let (db, storage) = futures::join!(db_check, storage_check);
    let disk = if health.reserve.shortage(0).is_some() {
        "below_reserve"
    } else {
        "ok"
    };
    let ok = db == "ok" && storage == "ok" && disk == "ok";
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "database": db,
        "storage": storage,
        "disk": disk,
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}
