//! `GET /api/v1/usage?namespace=&from=&to=`: metered endpoint requests,
//! aggregated per endpoint and day, for members of the namespace.

use super::member_namespace;
use crate::auth::access::Action;
use crate::auth::Auth;
use crate::db;
use crate::error::{ApiResult, QueryError};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The user or organization whose usage to read (members only).
    namespace: String,
    /// Start (inclusive): a date or an RFC 3339 time. Default: 30 days before `to`.
    #[param(format = Date)]
    from: Option<String>,
    /// End (exclusive): a date or an RFC 3339 time. Default: now.
    #[param(format = Date)]
    to: Option<String>,
}

/// Accepts a date (`2026-11-28`) or an RFC 3339 time.
fn parse_time(s: &str, field: &'static str) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(QueryError::Time(field).into())
}

/// Metered endpoint requests of a namespace, per endpoint and day.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "`{namespace, from, to, items}`", body = serde_json::Value)))]
pub async fn usage(
    state: web::Data<AppState>,
    auth: Auth,
    q: web::Query<UsageQuery>,
) -> ApiResult<HttpResponse> {
    let (ns, _) = member_namespace(&state, &auth, &q.namespace, Action::ReadUsage).await?;
    // This process's own buffered records first (read your writes).
    state.live.flush_usage(&state.db).await;
    // An empty parameter counts as absent.
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let to = match given(&q.to) {
        Some(t) => parse_time(&t, "to")?,
        None => Utc::now() + chrono::Duration::seconds(1),
    };
    let from = match given(&q.from) {
        Some(f) => parse_time(&f, "from")?,
        None => to - chrono::Duration::days(30),
    };
    // An empty or reversed range holds no requests.
    let rows = if from < to {
        db::endpoints::usage(&state.db, ns.id, from, to).await?
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(json!({
        "namespace": ns.name,
        "from": crate::registry::hf_date(from),
        "to": crate::registry::hf_date(to),
        "items": rows,
    })))
}
