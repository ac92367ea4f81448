//! Dashboard sign-in: `POST /api/v1/auth/login`, `POST /api/v1/auth/logout`,
//! `GET /api/v1/auth/session`. See `auth::session` for the cookie and CSRF rules.

use super::users::UserDto;
use super::ErrorDto;
use crate::auth::{session, Auth, Credential};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::routes::body::RequiredJson as JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(min_length = 1, max_length = 96)]
    pub username: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDto {
    pub user: UserDto,
    /// Send back in `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
    /// When the session ends (RFC 3339).
    pub expires_at: String,
}

const BAD_LOGIN: &str = "invalid username or password";

/// Verifies a password with argon2id off the executor. Without a stored hash
/// it hashes the password anyway, so an unknown user and a wrong password
/// take the same time.
async fn verify_password(hash: Option<String>, password: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{
            rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
        };
        let argon = argon2::Argon2::default();
        match hash.as_deref().map(PasswordHash::new) {
            Some(Ok(h)) => argon.verify_password(password.as_bytes(), &h).is_ok(),
            _ => {
                let salt = SaltString::generate(&mut OsRng);
                let _ = argon.hash_password(password.as_bytes(), &salt);
                false
            }
        }
    })
    .await
    .map_err(ApiError::internal)
}

fn expires(exp: i64) -> String {
    super::time(chrono::DateTime::from_timestamp(exp, 0).unwrap_or_default())
}

/// Signs in with a password; sets the session and CSRF cookies.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, description = "Signed in", body = SessionDto),
              (status = 401, description = "Wrong username or password", body = ErrorDto)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<HttpResponse> {
    // Login CSRF: a browser posting from another origin cannot sign anyone in.
    if req.headers().contains_key("origin") || req.headers().contains_key("referer") {
        session::check_origin(&state, &req)?;
    }
    let limiter = &state.tenancy.rate;
    let ip = crate::ratelimit::request_ip(&req, limiter.defaults.trust_forwarded_for);
    if let Err(d) = limiter.take(&format!("login:{ip}"), crate::ratelimit::LOGIN_RATE) {
        return Err(ApiError::RateLimited {
            retry_after_s: d.retry_after_s,
            limit: d.limit,
        });
    }
    if body.username.is_empty() || body.username.len() > 96 || body.password.len() > 1024 {
        return Err(ApiError::Unauthorized(BAD_LOGIN.into()));
    }
    // A name that cannot exist is never looked up (and NUL bytes never reach SQL).
    let user = match crate::domain::NamespaceName::parse(&body.username) {
        Ok(name) => db::namespaces::user_by_name(&state.db, name.as_str()).await?,
        Err(_) => None,
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    if !verify_password(hash, body.password).await? {
        tracing::info!("sign-in refused");
        return Err(ApiError::Unauthorized(BAD_LOGIN.into()));
    }
    let user = user.ok_or_else(|| ApiError::Unauthorized(BAD_LOGIN.into()))?;
    let (jwt, claims) = session::issue(&state, &user).await?;
    let orgs = db::namespaces::user_orgs(&state.db, user.id).await?;
    tracing::info!(user.id = user.id, "signed in");
    Ok(HttpResponse::Ok()
        .cookie(session::cookie(&state, &req, jwt))
        .cookie(session::csrf_cookie(&state, &req, claims.csrf.clone()))
        .json(SessionDto {
            user: UserDto::from_user(&user, &orgs),
            csrf_token: claims.csrf,
            expires_at: expires(claims.exp),
        }))
}

/// Ends every session of the caller (server-side) and clears the cookies.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out")))]
pub async fn logout(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    if let Some(p) = auth.principal() {
        if matches!(p.credential, Credential::Session { .. }) {
            db::namespaces::bump_session_version(&state.db, p.user_id).await?;
            crate::signals::invalidate(&state, crate::signals::Invalidation::SignOut(p.user_id))
                .await;
            tracing::info!(user.id = p.user_id, "signed out");
        }
    }
    let [a, b] = session::clear_cookies(&state, &req);
    Ok(HttpResponse::NoContent().cookie(a).cookie(b).finish())
}

/// The current session: the user and the CSRF token.
#[utoipa::path(get, path = "/api/v1/auth/session", tag = "auth",
    responses((status = 200, description = "The session", body = SessionDto)))]
pub async fn current(state: web::Data<AppState>, auth: Auth) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    let Credential::Session {
        csrf, expires_at, ..
    } = &p.credential
    else {
        return Err(ApiError::Unauthorized(
            "no dashboard session: sign in with POST /api/v1/auth/login".into(),
        ));
    };
    let user = db::namespaces::user_by_id(&state.db, p.user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let orgs = db::namespaces::user_orgs(&state.db, p.user_id).await?;
    Ok(HttpResponse::Ok().json(SessionDto {
        user: UserDto::from_user(&user, &orgs),
        csrf_token: csrf.clone(),
        expires_at: expires(*expires_at),
    }))
}
