//! Webhook pages: `/settings/webhooks` (the viewer's webhooks and those of
//! organizations they administer) and `/settings/webhooks/{id}` (a webhook's
//! deliveries with their attempts; the Redeliver button is sent by `app.js`
//! to `POST /api/v1/webhooks/{id}/deliveries/{delivery}/redeliver`). The same
//! rules as the API: `routes::hf::webhooks::{may_list, load_managed}`.

use super::{page, text, to_login, viewer, Layout, PageResult};
use crate::db;
use crate::routes::hf::webhooks::{load_managed, may_list};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// A webhook row (never the secret).
pub struct HookItem {
    pub id: String,
    pub url: String,
    pub owner: String,
    pub watched: String,
    pub domains: String,
    pub disabled: bool,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
pub struct HooksPage {
    pub l: Layout,
    pub hooks: Vec<HookItem>,
}

async fn item(state: &AppState, w: &db::webhooks::WebhookRow) -> PageResult<HookItem> {
    let watched = db::webhooks::watches(&state.db, w.id).await?;
    Ok(HookItem {
        id: w.id.to_string(),
        url: w.url.clone(),
        owner: w.owner.clone(),
        watched: watched
            .iter()
            .map(|x| format!("{} {}", x.kind, x.name))
            .collect::<Vec<_>>()
            .join(", "),
        domains: w.domains.join(", "),
        disabled: w.disabled,
    })
}

/// `GET /settings/webhooks`.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    may_list(p)?;
    let mut hooks = Vec::new();
    for w in db::webhooks::list_for(&state.db, p.user_id).await? {
        hooks.push(item(&state, &w).await?);
    }
    page(&HooksPage {
        l: Layout::new(&state, &req, Some(p)),
        hooks,
    })
}

/// One attempt of a delivery.
pub struct AttemptItem {
    pub attempt: i32,
    pub when: String,
    pub when_iso: String,
    pub status: String,
    pub latency_ms: i32,
    pub response: String,
    pub error: String,
}

/// A delivery row.
pub struct DeliveryItem {
    pub id: String,
    pub event_id: String,
    pub event: String,
    pub state: String,
    pub when: String,
    pub when_iso: String,
    pub redelivery: bool,
    pub attempts: Vec<AttemptItem>,
}

#[derive(Template)]
#[template(path = "webhook.html")]
pub struct HookPage {
    pub l: Layout,
    pub hook: HookItem,
    pub deliveries: Vec<DeliveryItem>,
}

/// `GET /settings/webhooks/{id}`: the latest 100 deliveries.
pub async fn webhook(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    if auth.principal().is_none() {
        return Ok(to_login(&req));
    }
    let (w, p) = load_managed(&state, &auth, &req).await?;
    let rows = db::webhooks::deliveries(&state.db, w.id, None, 100).await?;
    let ids: Vec<uuid::Uuid> = rows.iter().map(|d| d.id).collect();
    let attempts = db::webhooks::attempts(&state.db, &ids).await?;
    let deliveries = rows
        .into_iter()
        .map(|d| DeliveryItem {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            event: format!("{} {}", d.scope, d.action),
            state: d.state.clone(),
            when: text::ago(d.created_at),
            when_iso: text::iso(d.created_at),
            redelivery: d.redelivery_of.is_some(),
            attempts: attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| AttemptItem {
                    attempt: a.attempt,
                    when: text::ago(a.started_at),
                    when_iso: text::iso(a.started_at),
                    status: a
                        .status_code
                        .map_or_else(|| "none".to_string(), |s| s.to_string()),
                    latency_ms: a.latency_ms,
                    response: a.response.clone().unwrap_or_default(),
                    error: a.error.clone().unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    page(&HookPage {
        l: Layout::new(&state, &req, Some(&p)),
        hook: item(&state, &w).await?,
        deliveries,
    })
}
