//! The one app builder: the state, every middleware in production order, the
//! route table and the fallback. `server::serve` and every test (the test
//! kit's in-process app and its real-socket server) build the app here, so
//! tests run exactly the production stack; what differs between deployments
//! (rate limits, reserves, ...) is configuration in [`AppState`].

use crate::state::AppState;
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

/// The hub's app over `state`.
///
/// Middleware, outermost first (a request passes them in this order):
/// 1. `server::access_log`: one line per request (method, path, status,
///    duration; never the query string, headers or cookies).
/// 2. `gateway::front`: answers `/endpoints/...` calls with a bearer
///    credential (or none) itself, authenticated and rate-limited as below,
///    without the layers after it or the router; every other request passes.
/// 3. `health::gate`: fast 503 while the database circuit breaker is open,
///    507 for writes below the disk reserve; feeds the breaker from errors.
/// 4. `auth::authenticate`: resolves the caller once (token, session JWT,
///    service token, session cookie) into the request's extensions.
/// 5. `auth::csrf`: a cookie session's unsafe request without the session's
///    CSRF token or from another origin is recorded as rejected.
/// 6. `ratelimit`: the caller's token bucket (429 `rate_limited`).
/// 7. `registry::redirects`: a 404 `RepoNotFound` under a moved repo's old
///    name becomes a redirect to its new one.
/// 8. `repo_cache::middleware`: a request that may have written empties the
///    repo-row cache once its handler returns, before its response goes out.
///
/// Then the route table (`routes::configure`) and `routes::not_found`.
pub fn build_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // `wrap` puts each middleware outside the ones before it: listed inner first.
    App::new()
        .app_data(web::Data::new(state))
        .wrap(from_fn(crate::repo_cache::middleware))
        .wrap(from_fn(crate::registry::redirects::middleware))
        .wrap(from_fn(crate::ratelimit::middleware))
        .wrap(from_fn(crate::auth::csrf::middleware))
        .wrap(from_fn(crate::auth::authenticate::middleware))
        .wrap(from_fn(crate::health::gate))
        .wrap(from_fn(crate::gateway::front))
        .wrap(from_fn(crate::server::access_log))
        .configure(crate::routes::configure)
        .default_service(web::to(crate::routes::not_found))
}
