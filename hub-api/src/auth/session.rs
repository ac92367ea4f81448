//! Dashboard sessions: a short-lived hub-signed JWT (HS256 pinned, `iss`,
//! `aud`, `exp` checked, `kid` for rotation) carried in an HttpOnly,
//! SameSite=Lax cookie (Secure when the public URL is https), or sent as a
//! bearer token. Logout bumps `users.session_version`, which every session
//! JWT carries, so all of the user's sessions end server-side at once.
//!
//! CSRF: a cookie-authenticated request with an unsafe method must carry the
//! session's CSRF token in `X-CSRF-Token` (double submit: the token is also in
//! the readable `paddock_csrf` cookie and in `GET /api/v1/auth/session`), and
//! its `Origin` (or, without one, its `Referer`) must be the hub's own origin.
//! Bearer-authenticated requests are not subject to CSRF (browsers never add
//! an `Authorization` header on their own).

use super::jwt::{expires_in, ISSUER};
use super::principal::{Credential, Principal};
use super::secrets::constant_time_eq;
use crate::db;
use crate::db::namespaces::User;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::ServiceRequest;
use actix_web::http::Method;
use actix_web::{HttpMessage, HttpRequest};
use serde::{Deserialize, Serialize};

/// The session cookie (HttpOnly).
pub const COOKIE: &str = "paddock_session";
/// The readable CSRF cookie (double submit).
pub const CSRF_COOKIE: &str = "paddock_csrf";
/// The CSRF header.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The audience of session JWTs.
pub const AUDIENCE: &str = "paddock-session";

/// What a session JWT says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub aud: String,
    /// The user's namespace id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    /// `users.session_version` when the session was issued.
    pub sv: i32,
    /// The CSRF token bound to this session.
    pub csrf: String,
}

const SESSION_EXPIRED: &str = "the session is invalid or has expired; sign in again";

/// Issues a session for a user: the JWT and its claims.
pub async fn issue(state: &AppState, user: &User) -> Result<(String, SessionClaims), ApiError> {
    let csrf = hex::encode(rand::random::<[u8; 24]>());
    let claims = SessionClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.id.to_string(),
        exp: expires_in(state.tenancy.session_ttl_s),
        iat: chrono::Utc::now().timestamp(),
        sv: user.session_version,
        csrf,
    };
    let jwt = state.keys.sign(&claims).await.map_err(ApiError::internal)?;
    Ok((jwt, claims))
}

fn secure(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

/// The session cookie for a JWT.
pub fn cookie(state: &AppState, jwt: String) -> Cookie<'static> {
    Cookie::build(COOKIE, jwt)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(state))
        .max_age(CookieDuration::seconds(state.tenancy.session_ttl_s))
        .finish()
}

/// The readable CSRF cookie.
pub fn csrf_cookie(state: &AppState, csrf: String) -> Cookie<'static> {
    Cookie::build(CSRF_COOKIE, csrf)
        .path("/")
        .http_only(false)
        .same_site(SameSite::Lax)
        .secure(secure(state))
        .max_age(CookieDuration::seconds(state.tenancy.session_ttl_s))
        .finish()
}

/// Cookies that delete both.
pub fn clear_cookies(state: &AppState) -> [Cookie<'static>; 2] {
    let mut a = cookie(state, String::new());
    a.make_removal();
    let mut b = csrf_cookie(state, String::new());
    b.make_removal();
    [a, b]
}

/// Verifies a session JWT and loads its user: the signature, claims and the
/// user's current session version.
async fn verify(state: &AppState, jwt: &str) -> Result<(SessionClaims, User), ApiError> {
    let expired = || ApiError::Unauthorized(SESSION_EXPIRED.into());
    if jwt.len() > 4096 {
        return Err(expired());
    }
    let claims: SessionClaims = state.keys.verify(jwt, AUDIENCE).await.map_err(|e| {
        tracing::debug!(error = %e, "session token rejected");
        expired()
    })?;
    let id: i64 = claims.sub.parse().map_err(|_| expired())?;
    let user = db::namespaces::user_by_id(&state.db, id)
        .await?
        .ok_or_else(expired)?;
    if user.session_version != claims.sv {
        return Err(expired());
    }
    Ok((claims, user))
}

fn principal(user: User, claims: SessionClaims) -> Principal {
    Principal {
        user_id: user.id,
        name: user.name,
        fullname: user.fullname,
        is_admin: user.is_admin,
        credential: Credential::Session {
            csrf: claims.csrf,
            expires_at: claims.exp,
        },
    }
}

/// A session JWT sent as a bearer token (no CSRF check: not ambient).
pub async fn principal_from_jwt(state: &AppState, jwt: &str) -> Result<Principal, ApiError> {
    let (claims, user) = verify(state, jwt).await?;
    Ok(principal(user, claims))
}

/// The session of the request's cookie, if any, with the CSRF check for
/// unsafe methods.
pub async fn principal_from_cookie(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<Principal>, ApiError> {
    let Some(c) = req.cookie(COOKIE) else {
        return Ok(None);
    };
    if c.value().is_empty() {
        return Ok(None);
    }
    let (claims, user) = verify(state, c.value()).await?;
    if !is_safe(req.method()) {
        check_origin(state, req)?;
        let form = req.extensions().get::<FormCsrf>().map(|f| f.0.clone());
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or(form)
            .unwrap_or_default();
        if !check_csrf_token(&claims.csrf, &sent) {
            return Err(ApiError::CsrfRejected);
        }
    }
    Ok(Some(principal(user, claims)))
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
/// for the CSRF check, and puts the body back for the handler. Run by the
/// request middleware before authentication.
pub async fn capture_form_csrf(req: &mut ServiceRequest) {
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
