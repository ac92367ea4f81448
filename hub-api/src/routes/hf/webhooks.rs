//! Webhook management as `huggingface_hub` calls it (`create_webhook`,
//! `list_webhooks`, `get_webhook`, `update_webhook`, `enable_webhook`,
//! `disable_webhook`, `delete_webhook`) under `/api/settings/webhooks`.
//!
//! A webhook belongs to a user (the caller, by default) or an organization
//! (`owner`, a Paddock extension: its admins manage it). Only the owner, or
//! the organization's admins, see or change it (others get 404); that needs a
//! session or a token with the write scope. The secret is write-only.
//! Watched models and datasets must be readable by the caller; events of a
//! private repo reach only webhooks whose owner may read it (`webhooks`).

use crate::auth::access::{self, Action, Standing};
use crate::auth::{Auth, Credential, Principal, Scope};
use crate::db;
use crate::db::webhooks::{Watch, WebhookRow};
use crate::domain::{RepoId, RepoType};
use crate::error::{ApiError, ApiResult};
use crate::registry::repo_ref::param;
use crate::routes::body::JsonBody;
use crate::state::AppState;
use crate::webhooks::target::{self, TargetError};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Items one webhook may watch.
pub const MAX_WATCHED: usize = 100;
/// The longest secret.
pub const MAX_SECRET: usize = 256;
/// Webhooks one user or organization may own (each commit fans out to every
/// matching one, inside its transaction).
pub const MAX_PER_OWNER: i64 = 100;

/// A webhook body outside what it allows (400 `validation_failed`; a refused
/// target is 400 `webhook_target_refused`).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("url is required (webhooks that run jobs are not supported)")]
    UrlRequired,
    #[error("jobs are not supported: set url instead of jobSourceId / secrets")]
    Jobs,
    #[error("watched must list 1 to {MAX_WATCHED} items")]
    WatchedCount,
    #[error("watched type {0:?} is not one of user, org, model, dataset")]
    WatchedType(String),
    #[error("watched {kind} {name:?} does not exist or you cannot read it")]
    WatchedMissing { kind: String, name: String },
    #[error("domains must list 1 or more of repo, discussion, endpoint; {0:?} is not one")]
    Domain(String),
    #[error("domains must not be empty")]
    NoDomains,
    #[error("secret must be at most {MAX_SECRET} characters, without control characters")]
    Secret,
    #[error("{0} already owns {MAX_PER_OWNER} webhooks, the most allowed; delete one first")]
    TooMany(String),
}

impl WebhookError {
    /// The stable code (`crate::error`).
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Target(TargetError::Refused { .. })
            | WebhookError::Target(TargetError::Unresolvable(_)) => "webhook_target_refused",
            _ => "validation_failed",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct WatchedItem {
    #[serde(rename = "type")]
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    watched: Option<Vec<WatchedItem>>,
    #[serde(default)]
    domains: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    /// The organization that owns a new webhook (default: the caller).
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    job_source_id: Option<Value>,
    #[serde(default)]
    secrets: Option<Value>,
}

/// The HF client's webhook object (never the secret).
async fn dto(state: &AppState, w: &WebhookRow) -> ApiResult<Value> {
    let watched = db::webhooks::watches(&state.db, w.id).await?;
    Ok(json!({
        "id": w.id.to_string(),
        "url": w.url,
        "watched": watched.iter().map(|x| json!({"type": x.kind, "name": x.name})).collect::<Vec<_>>(),
        "domains": w.domains,
        "disabled": w.disabled,
        "owner": w.owner,
        "hasSecret": w.has_secret,
        "createdAt": crate::routes::v1::time(w.created_at),
        "updatedAt": crate::routes::v1::time(w.updated_at),
    }))
}

/// The webhook of the `{id}` path segment, if the caller may manage it
/// (else 404 `not_found`, like a missing one; 403 for a member of the owning
/// organization who is not its admin).
pub async fn load_managed(
    state: &AppState,
    auth: &Auth,
    req: &HttpRequest,
) -> ApiResult<(WebhookRow, Principal)> {
    let p = auth.principal();
    let id = param(req, "id")
        .and_then(|s| Uuid::parse_str(&s).ok())
        .ok_or(ApiError::NotFound("webhook"))?;
    let w = db::webhooks::get(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    let standing = Standing::load_in(&state.db, p, w.owner_id, &w.owner, "webhook").await?;
    access::decide(p, &standing, Action::AdminNamespace)?;
    Ok((w, auth.require()?.clone()))
}

fn domains(list: &[String]) -> Result<Vec<String>, WebhookError> {
    if list.is_empty() {
        return Err(WebhookError::NoDomains);
    }
    let mut out: Vec<String> = Vec::new();
    for d in list {
        if !crate::webhooks::DOMAINS.contains(&d.as_str()) {
            return Err(WebhookError::Domain(crate::error::clip(d, 40)));
        }
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    Ok(out)
}

fn secret(s: &str) -> Result<Option<&str>, WebhookError> {
    if s.chars().count() > MAX_SECRET || s.chars().any(char::is_control) {
        return Err(WebhookError::Secret);
    }
    Ok(Some(s).filter(|s| !s.is_empty()))
}

/// Resolves watched items; a model or dataset must be readable by `p`.
async fn watches(state: &AppState, p: &Principal, items: &[WatchedItem]) -> ApiResult<Vec<Watch>> {
    if items.is_empty() || items.len() > MAX_WATCHED {
        return Err(WebhookError::WatchedCount.into());
    }
    let mut out = Vec::new();
    for it in items {
        let missing = || WebhookError::WatchedMissing {
            kind: it.kind.clone(),
            name: crate::error::clip(&it.name, 200),
        };
        match it.kind.as_str() {
            "user" | "org" => {
                let kind = if it.kind == "user" { "user" } else { "org" };
                let ns = db::namespaces::by_name(&state.db, &it.name)
                    .await?
                    .filter(|n| n.kind == kind)
                    .ok_or_else(missing)?;
                out.push(Watch::Namespace { kind, id: ns.id });
            }
            "model" | "dataset" => {
                let kind = RepoType::parse(&it.kind)?;
                let id = RepoId::parse(&it.name).map_err(|_| missing())?;
                let repo = db::repos::find(
                    &state.db,
                    kind.as_str(),
                    id.namespace_key(),
                    id.name.as_str(),
                )
                .await?
                .ok_or_else(missing)?;
                let standing = Standing::load_repo(&state.db, Some(p), &repo).await?;
                if !standing.allows(Some(p), Action::ReadRepo) {
                    return Err(missing().into());
                }
                out.push(Watch::Repo {
                    kind: if kind == RepoType::Dataset {
                        "dataset"
                    } else {
                        "model"
                    },
                    id: repo.id,
                });
            }
            other => return Err(WebhookError::WatchedType(crate::error::clip(other, 40)).into()),
        }
    }
    Ok(out)
}

/// Whether `p` may list its webhooks: a credential of the whole account (a
/// session, an unrestricted token with the read scope), else 403.
pub fn may_list(p: &Principal) -> ApiResult<()> {
    let account = matches!(
        p.credential,
        Credential::Session { .. } | Credential::Token { .. }
    );
    if !account || p.is_restricted() || !p.has_scope(Scope::Read) {
        return Err(ApiError::Forbidden(
            "listing webhooks needs a session or an unrestricted token with the read scope".into(),
        ));
    }
    Ok(())
}

/// `GET /api/settings/webhooks`: the caller's webhooks and those of the
/// organizations they administer.
pub async fn list(state: web::Data<AppState>, auth: Auth) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    may_list(p)?;
    let rows = db::webhooks::list_for(&state.db, p.user_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for w in &rows {
        out.push(dto(&state, w).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `POST /api/settings/webhooks`: `{url, watched, domains, secret?, owner?}`.
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<WebhookBody>,
) -> ApiResult<HttpResponse> {
    let owner = match (&body.owner, auth.principal()) {
        (Some(name), _) => db::namespaces::by_name(&state.db, name)
            .await?
            .ok_or(ApiError::NotFound("organization"))?,
        (None, Some(p)) => db::namespaces::by_id(&state.db, p.user_id)
            .await?
            .ok_or(ApiError::NotFound("user"))?,
        (None, None) => return Err(ApiError::Unauthorized(access::AUTH_REQUIRED.into())),
    };
    let standing =
        Standing::load_namespace(&state.db, auth.principal(), &owner, "organization").await?;
    access::decide(auth.principal(), &standing, Action::AdminNamespace)?;
    let p = auth.require()?;
    if body.job_source_id.is_some() || body.secrets.is_some() {
        return Err(WebhookError::Jobs.into());
    }
    let url = body.url.as_deref().ok_or(WebhookError::UrlRequired)?;
    let url = target::check_url(url, state.tenancy.webhooks.allow_private)
        .await
        .map_err(WebhookError::from)?;
    let domains = domains(
        body.domains
            .as_deref()
            .unwrap_or(&["repo".to_string(), "discussion".to_string()]),
    )?;
    let secret = match &body.secret {
        Some(s) => secret(s)?,
        None => None,
    };
    let watches = watches(&state, p, body.watched.as_deref().unwrap_or(&[])).await?;
    let mut tx = state.db.begin().await?;
    // Counted under the owner's row lock, so concurrent creations cannot pass the cap.
    if db::webhooks::count_locked(&mut tx, owner.id).await? >= MAX_PER_OWNER {
        return Err(WebhookError::TooMany(owner.name.clone()).into());
    }
    let id = db::webhooks::insert(
        &mut tx,
        &db::webhooks::NewWebhook {
            owner_id: owner.id,
            created_by: p.user_id,
            url: url.as_str(),
            secret,
            domains: &domains,
        },
    )
    .await?;
    db::webhooks::set_watches(&mut tx, id, &watches).await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        owner.id,
        "webhook.created",
        &format!("webhook:{id}"),
        json!({"domains": domains}),
    )
    .await?;
    tx.commit().await?;
    let w = db::webhooks::get(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(HttpResponse::Ok().json(json!({"webhook": dto(&state, &w).await?})))
}

/// `GET /api/settings/webhooks/{id}`.
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (w, _) = load_managed(&state, &auth, &req).await?;
    Ok(HttpResponse::Ok().json(json!({"webhook": dto(&state, &w).await?})))
}

/// `POST /api/settings/webhooks/{id}`: changes the fields sent. `watched`
/// replaces the list unless empty (the client always sends it, empty when
/// not given); `secret: ""` removes the secret.
pub async fn update(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    JsonBody(body): JsonBody<WebhookBody>,
) -> ApiResult<HttpResponse> {
    let (w, p) = load_managed(&state, &auth, &req).await?;
    if body.job_source_id.is_some() || body.secrets.is_some() {
        return Err(WebhookError::Jobs.into());
    }
    let url = match body.url.as_deref() {
        Some(u) => Some(
            target::check_url(u, state.tenancy.webhooks.allow_private)
                .await
                .map_err(WebhookError::from)?,
        ),
        None => None,
    };
    let domains = body.domains.as_deref().map(domains).transpose()?;
    let secret = body.secret.as_deref().map(secret).transpose()?;
    let watches = match body.watched.as_deref() {
        Some(items) if !items.is_empty() => Some(watches(&state, &p, items).await?),
        _ => None,
    };
    let mut tx = state.db.begin().await?;
    db::webhooks::update(
        &mut *tx,
        w.id,
        url.as_ref().map(url::Url::as_str),
        domains.as_deref(),
        secret,
        None,
    )
    .await?;
    if let Some(watches) = &watches {
        db::webhooks::set_watches(&mut tx, w.id, watches).await?;
    }
    crate::audit::record(
        &mut *tx,
        Some(&p),
        w.owner_id,
        "webhook.updated",
        &format!("webhook:{}", w.id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    let w = db::webhooks::get(&state.db, w.id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(HttpResponse::Ok().json(json!({"webhook": dto(&state, &w).await?})))
}

async fn set_disabled(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    disabled: bool,
) -> ApiResult<HttpResponse> {
    let (w, _) = load_managed(&state, &auth, &req).await?;
    db::webhooks::update(&state.db, w.id, None, None, None, Some(disabled)).await?;
    let w = db::webhooks::get(&state.db, w.id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(HttpResponse::Ok().json(json!({"webhook": dto(&state, &w).await?})))
}

/// `POST /api/settings/webhooks/{id}/enable`.
pub async fn enable(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    set_disabled(state, auth, req, false).await
}

/// `POST /api/settings/webhooks/{id}/disable`: no new deliveries; queued
/// ones end `failed` ("the webhook is disabled").
pub async fn disable(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    set_disabled(state, auth, req, true).await
}

/// `DELETE /api/settings/webhooks/{id}` (with its deliveries).
pub async fn delete(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (w, p) = load_managed(&state, &auth, &req).await?;
    let mut tx = state.db.begin().await?;
    db::webhooks::delete(&mut *tx, w.id).await?;
    crate::audit::record(
        &mut *tx,
        Some(&p),
        w.owner_id,
        "webhook.deleted",
        &format!("webhook:{}", w.id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
