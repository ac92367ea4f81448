//! `GET /healthz` (the process is up) and `GET /readyz` (database and storage answer).

use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db = sqlx::query("SELECT 1").execute(&state.db).await;
    let storage = state.storage.ping().await;
    let ok = db.is_ok() && storage.is_ok();
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "database": if db.is_ok() { "ok" } else { "unreachable" },
        "storage": if storage.is_ok() { "ok" } else { "unreachable" },
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}
