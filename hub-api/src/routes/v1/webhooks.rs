//! A webhook's delivery log and redelivery (`/api/v1/webhooks/{id}/...`).
//! The webhooks themselves are managed with the HF-compatible routes
//! (`routes::hf::webhooks`); the same people (the owner, an owning
//! organization's admins) see these, others get 404.

use super::{time, ErrorDto, Page};
use crate::auth::Auth;
use crate::db;
use crate::db::webhooks::{AttemptRow, DeliveryRow};
use crate::error::{ApiError, ApiResult};
use crate::registry::repo_ref::param;
use crate::routes::hf::webhooks::load_managed;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    /// 1 for the first attempt.
    pub attempt: i32,
    pub started_at: String,
    /// The receiver's HTTP status (absent when no response came).
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    /// At most 1 KiB of the response body.
    pub response: Option<String>,
    /// Why the attempt failed without a 2xx: connection error, timeout,
    /// refused target, redirect.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDto {
    pub id: String,
    /// The payload's `event.id`: the same on every attempt and redelivery.
    pub event_id: String,
    /// `repo`, `repo.content`, `repo.config`, `discussion`, `discussion.comment`, `endpoint`.
    pub scope: String,
    pub action: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<String>,
    /// The delivery this one redelivers.
    pub redelivery_of: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub attempt_log: Vec<AttemptDto>,
    /// The stored event (without `webhook` and `repo.url`, added when sent);
    /// only on the single-delivery route.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryDto>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    pub next_cursor: Option<String>,
}

fn dto(d: DeliveryRow, attempts: &[AttemptRow], payload: bool) -> DeliveryDto {
    DeliveryDto {
        id: d.id.to_string(),
        event_id: d.event_id.to_string(),
        scope: d.scope,
        action: d.action,
        next_attempt_at: (d.state == "pending").then(|| time(d.next_attempt_at)),
        state: d.state,
        attempts: d.attempts,
        redelivery_of: d.redelivery_of.map(|u| u.to_string()),
        created_at: time(d.created_at),
        finished_at: d.finished_at.map(time),
        attempt_log: attempts
            .iter()
            .filter(|a| a.delivery_id == d.id)
            .map(|a| AttemptDto {
                attempt: a.attempt,
                started_at: time(a.started_at),
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                response: a.response.clone(),
                error: a.error.clone(),
            })
            .collect(),
        payload: payload.then_some(d.payload.0),
    }
}

fn delivery_param(req: &HttpRequest) -> ApiResult<Uuid> {
    param(req, "delivery")
        .and_then(|s| Uuid::parse_str(&s).ok())
        .ok_or(ApiError::NotFound("delivery"))
}

/// A webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), super::PageQuery),
    responses((status = 200, description = "Deliveries, newest first", body = DeliveryList),
              (status = 404, description = "No such webhook, or not yours", body = ErrorDto)))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    page: Page,
) -> ApiResult<HttpResponse> {
    let (w, _) = load_managed(&state, &auth, &req).await?;
    let mut rows = db::webhooks::deliveries(&state.db, w.id, page.cursor, page.fetch()).await?;
    let next_cursor = page.finish(&mut rows, |d| d.seq);
    let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
    let attempts = db::webhooks::attempts(&state.db, &ids).await?;
    let items = rows.into_iter().map(|d| dto(d, &attempts, false)).collect();
    Ok(HttpResponse::Ok().json(DeliveryList { items, next_cursor }))
}

/// One delivery, with its attempts and the stored event.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries/{delivery}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"),
           ("delivery" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery", body = DeliveryDto),
              (status = 404, description = "No such delivery, or not yours", body = ErrorDto)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (w, _) = load_managed(&state, &auth, &req).await?;
    let id = delivery_param(&req)?;
    let d = db::webhooks::delivery(&state.db, w.id, id)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    let attempts = db::webhooks::attempts(&state.db, &[d.id]).await?;
    Ok(HttpResponse::Ok().json(dto(d, &attempts, true)))
}

/// Sends a delivery's event again, as a new delivery (same `event.id`).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"),
           ("delivery" = String, Path, description = "Delivery id")),
    responses((status = 202, description = "Queued: the new delivery", body = DeliveryDto),
              (status = 404, description = "No such delivery, or not yours", body = ErrorDto)))]
pub async fn redeliver(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (w, p) = load_managed(&state, &auth, &req).await?;
    let of = delivery_param(&req)?;
    let mut tx = state.db.begin().await?;
    let id = db::webhooks::redeliver(&mut tx, w.id, of)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    crate::audit::record(
        &mut *tx,
        Some(&p),
        w.owner_id,
        "webhook.redelivered",
        &format!("webhook:{}", w.id),
        serde_json::json!({"delivery": of.to_string()}),
    )
    .await?;
    tx.commit().await?;
    let d = db::webhooks::delivery(&state.db, w.id, id)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    Ok(HttpResponse::Accepted().json(dto(d, &[], true)))
}
