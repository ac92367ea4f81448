//! The gateway's short path through the middleware stack. A call to
//! `/endpoints/...` with a bearer credential (or none) is answered here, just
//! inside the access log: it is authenticated, rate-limited and forwarded
//! without passing the five middlewares and the router between (each
//! `from_fn` layer boxes a future and its `Next` per request; together they
//! were about 7% of the hub's CPU per proxied call in
//! `scripts/bench/gateway_overhead.sh`, docs/BENCHMARKS.md).
//!
//! Only what needs none of those layers takes it; the rest goes through the
//! whole stack to [`super::proxy`], unchanged:
//! - a cookie session (the CSRF rules, and the anonymous rule for safe methods),
//! - bad credentials (the 401) and an undecided caller (the database),
//! - any request while the database circuit breaker is open (the health
//!   gate's 503).
//!
//! What the skipped layers do for the calls taken here: the health gate's
//! disk reserve exempts `/endpoints/` (`health::writes_nothing`) and its
//! breaker is fed from the answer below; repo redirects and the repo-row cache
//! concern repo routes only.

use super::forward;
use crate::auth::authenticate::{self, Authenticated};
use crate::auth::Auth;
use crate::state::AppState;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

/// The middleware (`middleware::from_fn(gateway::front)`), just inside
/// `server::access_log`.
pub async fn front(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !req.path().starts_with("/endpoints/") {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    if state.health.db_down() {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let principal = match authenticate::decide(&state, req.request()).await {
        Authenticated::Caller {
            principal,
            by_cookie: false,
        } => principal,
        other => {
            // Decided once: the authentication middleware keeps this outcome.
            authenticate::record(req.request(), other);
            return next.call(req).await.map(|r| r.map_into_boxed_body());
        }
    };
    if let Err(refused) = crate::ratelimit::check(&state, req.request(), principal.as_ref()).await {
        let resp = refused.error_response();
        return Ok(req.into_response(resp));
    }
    let (http, payload) = req.into_parts();
    let resp = match forward(state.clone(), Auth(principal), &http, payload).await {
        Ok(r) => r,
        Err(e) => {
            // As the health gate would: what the answer says about the database.
            state.health.observe(&e);
            HttpResponse::from_error(e)
        }
    };
    Ok(ServiceResponse::new(http, resp))
}
