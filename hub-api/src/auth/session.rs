//! Dashboard sessions: a short-lived hub-signed JWT (HS256 pinned, `iss`,
//! `aud`, `exp` checked, `kid` for rotation) carried in an HttpOnly,
//! SameSite=Lax cookie (Secure when the public URL is https or the request
//! came over https, see [`secure`]), or sent as a
//! bearer token. Logout bumps `users.session_version`, which every session
//! JWT carries, so all of the user's sessions end server-side at once.
//!
//! A cookie session is ambient (the browser sends it on its own), so its
//! state-changing requests are checked by the CSRF middleware (`auth::csrf`).

use super::jwt::{expires_in, ISSUER};
use super::principal::{Credential, Principal};
use crate::db;
use crate::db::namespaces::User;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::HttpRequest;
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

/// Whether the cookies are `Secure`: the public URL is https, the request came
/// over TLS, or, behind a trusted proxy (`--trust-forwarded-for`), the proxy
/// says it did (the first `X-Forwarded-Proto` is `https`). A cookie set over
/// https is then only ever sent back over https, whatever the public URL says.
fn secure(state: &AppState, req: &HttpRequest) -> bool {
    let forwarded_https = || {
        req.headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    };
    state.public_url.starts_with("https://")
        || req.app_config().secure()
        || (state.tenancy.rate.defaults.trust_forwarded_for && forwarded_https())
}

/// The session cookie for a JWT.
pub fn cookie(state: &AppState, req: &HttpRequest, jwt: String) -> Cookie<'static> {
    Cookie::build(COOKIE, jwt)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(state, req))
        .max_age(CookieDuration::seconds(state.tenancy.session_ttl_s))
        .finish()
}

/// The readable CSRF cookie.
pub fn csrf_cookie(state: &AppState, req: &HttpRequest, csrf: String) -> Cookie<'static> {
    Cookie::build(CSRF_COOKIE, csrf)
        .path("/")
        .http_only(false)
        .same_site(SameSite::Lax)
        .secure(secure(state, req))
        .max_age(CookieDuration::seconds(state.tenancy.session_ttl_s))
        .finish()
}

/// Cookies that delete both.
pub fn clear_cookies(state: &AppState, req: &HttpRequest) -> [Cookie<'static>; 2] {
    let mut a = cookie(state, req, String::new());
    a.make_removal();
    let mut b = csrf_cookie(state, req, String::new());
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
            version: Some(claims.sv),
        },
    }
}

/// A session JWT sent as a bearer token (no CSRF check: not ambient).
pub async fn principal_from_jwt(state: &AppState, jwt: &str) -> Result<Principal, ApiError> {
    let (claims, user) = verify(state, jwt).await?;
    Ok(principal(user, claims))
}

/// The session of the request's cookie, if any. Its unsafe requests still
/// have to pass the CSRF middleware (`auth::csrf`).
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
    Ok(Some(principal(user, claims)))
}

pub use super::csrf::check_origin;
