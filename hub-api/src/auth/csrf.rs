//! The CSRF middleware. A dashboard session cookie is ambient (the browser
//! sends it on its own), so a cookie-authenticated request with an unsafe
//! method must carry the session's CSRF token in `X-CSRF-Token` (double
//! submit: the token is also in the readable `paddock_csrf` cookie and in
//! `GET /api/v1/auth/session`) or, for an HTML form post, in its `csrf_token`
//! field, and its `Origin` (or, without one, its `Referer`) must be the hub's
//! own origin. Bearer-authenticated requests are not subject to CSRF
//! (browsers never add an `Authorization` header on their own).
//!
//! Runs after the authentication middleware: a request that fails the check
//! has its recorded caller replaced by [`Authenticated::CsrfRejected`], which
//! the handler's `Auth` extractor answers with 403 `csrf_rejected` (routes
//! that take no credentials, such as sign-in, are not refused).

use super::authenticate::{self, Authenticated};
use super::principal::Credential;
use super::secrets::constant_time_eq;
use super::session::{COOKIE, CSRF_HEADER};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};

/// The middleware (`middleware::from_fn(auth::csrf::middleware)`).
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let decided = authenticate::recorded(req.request());
    if let (Some(state), Some(decided)) = (req.app_data::<web::Data<AppState>>().cloned(), decided)
    {
        // An undecided request is checked by the extractor's second attempt,
        // which needs the form field too.
        if matches!(
            decided,
            Authenticated::Caller {
                by_cookie: true,
                ..
            } | Authenticated::Undecided
        ) {
            capture_form_csrf(&mut req).await;
        }
        if rejects(&state, req.request(), &decided) {
            tracing::info!(http.path = req.path(), "cross-site request rejected");
            authenticate::record(req.request(), Authenticated::CsrfRejected);
        }
    }
    next.call(req).await.map(|r| r.map_into_boxed_body())
}

/// Whether the CSRF rules reject a request of an authenticated caller: a
/// cookie session's unsafe request from another origin or without the
/// session's token.
pub fn rejects(state: &AppState, req: &HttpRequest, decided: &Authenticated) -> bool {
    let Authenticated::Caller {
        principal: Some(p),
        by_cookie: true,
    } = decided
    else {
        return false;
    };
    let Credential::Session { csrf, .. } = &p.credential else {
        return false;
    };
    if is_safe(req.method()) {
        return false;
    }
    if check_origin(state, req).is_err() {
        return true;
    }
    let form = req.extensions().get::<FormCsrf>().map(|f| f.0.clone());
    let sent = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(form)
        .unwrap_or_default();
    !check_csrf_token(csrf, &sent)
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a submitted CSRF token (header or form field `csrf_token`) matches the session's.
pub fn check_csrf_token(expected: &str, sent: &str) -> bool {
    !expected.is_empty() && constant_time_eq(expected.as_bytes(), sent.as_bytes())
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    match u.origin() {
        o @ url::Origin::Tuple(..) => Some(o.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

/// Requires `Origin` (or, without one, `Referer`) to be the hub's own origin.
pub fn check_origin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let own = origin_of(&state.public_url).ok_or(ApiError::CsrfRejected)?;
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = match header("origin") {
        Some(o) if o != "null" => origin_of(&o),
        Some(_) => None,
        None => header("referer").and_then(|r| origin_of(&r)),
    };
    match seen {
        Some(o) if o == own => Ok(()),
        _ => Err(ApiError::CsrfRejected),
    }
}

/// The `csrf_token` field of a form-encoded body (HTML form posts).
#[derive(Debug, Clone)]
struct FormCsrf(String);

/// Largest form body searched for a `csrf_token` field.
const FORM_CSRF_MAX: usize = 64 * 1024;

/// For a cookie-authenticated, form-encoded, state-changing request without
/// the CSRF header: reads the (small) body, remembers its `csrf_token` field
/// for the CSRF check, and puts the body back for the handler.
async fn capture_form_csrf(req: &mut ServiceRequest) {
    use futures::StreamExt;
    let form = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form
        || is_safe(req.method())
        || req.headers().contains_key(CSRF_HEADER)
        || req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION)
        || req.cookie(COOKIE).is_none()
    {
        return;
    }
    let mut payload = req.take_payload();
    let mut buf = actix_web::web::BytesMut::new();
    // A chunk that did not fit (or an error): handed on untouched.
    let mut pending = None;
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(c) if buf.len() + c.len() <= FORM_CSRF_MAX => buf.extend_from_slice(&c),
            other => {
                pending = Some(other);
                break;
            }
        }
    }
    let bytes = buf.freeze();
    if pending.is_none() {
        if let Some((_, v)) = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf_token") {
            req.extensions_mut().insert(FormCsrf(v.into_owned()));
        }
    }
    // The handler reads the same body: what was read, then the rest.
    let head = futures::stream::iter(std::iter::once(Ok(bytes)).chain(pending));
    let body: actix_http::BoxedPayloadStream = Box::pin(head.chain(payload));
    req.set_payload(actix_web::dev::Payload::from(body));
}
