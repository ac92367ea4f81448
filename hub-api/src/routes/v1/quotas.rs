//! Storage quota, rate limit and daily token quota per namespace: members read
//! usage and limits; site admins set them.

use super::{namespace_param, ErrorDto};
use crate::auth::access::{self, is_site_admin, Action, Standing};
use crate::auth::Auth;
use crate::db;
use crate::db::namespaces::Namespace;
use crate::error::{ApiError, ApiResult};
use crate::quota::Settings;
use crate::routes::body::RequiredJson as JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaDto {
    pub namespace: String,
    /// Bytes used: distinct blobs referenced by the namespace's repos.
    pub storage_used_bytes: i64,
    /// The quota in bytes (null: unlimited).
    pub storage_limit_bytes: Option<i64>,
    /// Whether the storage limit is the namespace's own (else the default).
    pub storage_limit_is_default: bool,
    /// Requests per second per token / anonymous IP on this namespace (0: unlimited).
    pub rate_limit_per_second: i64,
    pub rate_limit_burst: i64,
    pub rate_limit_is_default: bool,
    /// Prompt + completion tokens the namespace's endpoints may serve per UTC day
    /// (null: unlimited). Past it, endpoint calls answer 429 `token_quota_exceeded`.
    pub daily_token_quota: Option<i64>,
    /// Prompt + completion tokens served since UTC midnight.
    pub tokens_used_today: i64,
    /// When today's count resets (the next UTC midnight).
    pub tokens_reset_at: String,
    /// CPU-seconds the namespace's fine-tuning jobs may use per UTC day (null:
    /// unlimited). Past it, new jobs answer 429 `job_quota_exceeded` and running
    /// ones are stopped.
    pub daily_job_cpu_seconds: Option<i64>,
    /// CPU-seconds its jobs used today (jobs that ended today, and running ones).
    pub job_cpu_seconds_today: f64,
}

async fn load_ns(state: &AppState, req: &HttpRequest) -> ApiResult<Namespace> {
    let name = namespace_param(req, "ns", "namespace")?;
    db::namespaces::by_name(&state.db, &name)
        .await?
        .ok_or(ApiError::NotFound("namespace"))
}

async fn dto(state: &AppState, ns: &Namespace) -> ApiResult<QuotaDto> {
    let s = crate::quota::settings(&state.db, ns.id).await?;
    let used = crate::quota::usage(&state.db, ns.id).await?;
    let d = state.tenancy.rate.defaults.token;
    // This process's own buffered usage first (read your writes).
    state.live.flush_usage(&state.db).await;
    let now = chrono::Utc::now();
    let tokens_used_today =
        db::endpoints::tokens_since(&state.db, ns.id, crate::token_quota::day_start(now)).await?;
    Ok(QuotaDto {
        namespace: ns.name.clone(),
        storage_used_bytes: used,
        storage_limit_bytes: s.storage_bytes.or(state.tenancy.default_storage_quota),
        storage_limit_is_default: s.storage_bytes.is_none(),
        rate_limit_per_second: s.rate_per_s.map(i64::from).unwrap_or(d.per_s as i64),
        rate_limit_burst: match (s.rate_per_s, s.rate_burst) {
            (Some(_), Some(b)) => b as i64,
            (Some(r), None) => (r.max(1) * 2) as i64,
            _ => d.burst as i64,
        },
        rate_limit_is_default: s.rate_per_s.is_none(),
        daily_token_quota: s.daily_tokens,
        tokens_used_today,
        tokens_reset_at: crate::registry::hf_date(crate::token_quota::next_reset(now)),
        daily_job_cpu_seconds: s.daily_job_cpu_seconds,
        job_cpu_seconds_today: crate::jobs::quota_today(state, ns.id).await?.0,
    })
}

/// Usage and limits of a namespace (its members and site admins).
#[utoipa::path(get, path = "/api/v1/namespaces/{ns}/quota", tag = "quotas",
    params(("ns" = String, Path, description = "User or organization name")),
    responses((status = 200, description = "Usage and limits", body = QuotaDto)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let ns = load_ns(&state, &req).await?;
    let standing = Standing::load_namespace(&state.db, auth.principal(), &ns, "namespace").await?;
    access::decide(auth.principal(), &standing, Action::ReadNamespace)?;
    Ok(HttpResponse::Ok().json(dto(&state, &ns).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    /// Storage quota in bytes (null: the default).
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "super::opt_whole")]
    pub storage_bytes: Option<i64>,
    /// Requests per second (0: unlimited; null: the default).
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "super::opt_whole")]
    pub rate_per_second: Option<i64>,
    /// Burst (null: twice the rate).
    #[schema(minimum = 1, maximum = 1000000)]
    #[serde(default, deserialize_with = "super::opt_whole")]
    pub rate_burst: Option<i64>,
    /// Prompt + completion tokens per UTC day through the namespace's endpoints
    /// (null: unlimited).
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "super::opt_whole")]
    pub daily_token_quota: Option<i64>,
    /// CPU-seconds of fine-tuning jobs per UTC day (null: unlimited).
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "super::opt_whole")]
    pub daily_job_cpu_seconds: Option<i64>,
}

/// Sets a namespace's storage quota, rate limit and daily token quota (site admins).
/// Every field is replaced: one left out goes back to its default.
#[utoipa::path(put, path = "/api/v1/namespaces/{ns}/quota", tag = "quotas",
    params(("ns" = String, Path, description = "User or organization name")),
    request_body = QuotaBody,
    responses((status = 200, description = "The new limits", body = QuotaDto),
              (status = 403, description = "Not a site admin", body = ErrorDto)))]
pub async fn put(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    JsonBody(body): JsonBody<QuotaBody>,
) -> ApiResult<HttpResponse> {
    let ns = load_ns(&state, &req).await?;
    let p = auth.require()?;
    if !is_site_admin(p) {
        let standing = Standing::load_namespace(&state.db, Some(p), &ns, "namespace").await?;
        access::decide(Some(p), &standing, Action::ReadNamespace)?;
        return Err(ApiError::Forbidden(
            "only site administrators set quotas and rate limits".into(),
        ));
    }
    if body.storage_bytes.is_some_and(|b| b < 0)
        || body
            .rate_per_second
            .is_some_and(|r| !(0..=1_000_000).contains(&r))
        || body
            .rate_burst
            .is_some_and(|b| !(1..=1_000_000).contains(&b))
    {
        return Err(super::FieldError::QuotaLimits.into());
    }
    if body.daily_token_quota.is_some_and(|t| t < 0) {
        return Err(super::FieldError::DailyTokenQuota.into());
    }
    if body.daily_job_cpu_seconds.is_some_and(|t| t < 0) {
        return Err(super::FieldError::DailyJobCpuSeconds.into());
    }
    let old = crate::quota::settings(&state.db, ns.id).await?;
    let new = Settings {
        storage_bytes: body.storage_bytes,
        rate_per_s: body.rate_per_second.map(|r| r as i32),
        rate_burst: body.rate_burst.map(|b| b as i32),
        daily_tokens: body.daily_token_quota,
        daily_job_cpu_seconds: body.daily_job_cpu_seconds,
    };
    let mut tx = state.db.begin().await?;
    crate::quota::set(&mut *tx, ns.id, &new).await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        ns.id,
        "quota.changed",
        &format!("namespace:{}", ns.name),
        json!({
            "storage_bytes": {"from": old.storage_bytes, "to": new.storage_bytes},
            "rate_per_second": {"from": old.rate_per_s, "to": new.rate_per_s},
            "rate_burst": {"from": old.rate_burst, "to": new.rate_burst},
            "daily_token_quota": {"from": old.daily_tokens, "to": new.daily_tokens},
            "daily_job_cpu_seconds": {"from": old.daily_job_cpu_seconds, "to": new.daily_job_cpu_seconds},
        }),
    )
    .await?;
    tx.commit().await?;
    crate::signals::invalidate(&state, crate::signals::Invalidation::Quota(ns.id)).await;
    Ok(HttpResponse::Ok().json(dto(&state, &ns).await?))
}
