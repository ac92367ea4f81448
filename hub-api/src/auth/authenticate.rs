//! The authentication middleware: resolves who is calling, once per request,
//! and records the outcome ([`Authenticated`]) in the request's extensions.
//! The CSRF middleware, the rate limiter and the [`Auth`](super::Auth)
//! extractor read it from there; none of them looks at credentials again.
//!
//! It refuses nothing itself. A bad credential is answered 401 by the
//! handler's `Auth` extractor, so a route that takes no credentials (sign-in,
//! signed LFS links) behaves as if none were sent, exactly as before the
//! stack had its own authentication step.

use super::principal::{principal_from_token, Principal, INVALID_CREDENTIALS};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};

/// What authenticating a request decided.
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// The caller (`None`: anonymous). `by_cookie`: the credential is the
    /// ambient session cookie, so the CSRF rules apply to it.
    Caller {
        principal: Option<Principal>,
        by_cookie: bool,
    },
    /// Credentials were sent and are not valid (a 401 with this message).
    Unauthorized(String),
    /// A cookie session whose unsafe request failed the CSRF check (set by
    /// the CSRF middleware in place of the caller).
    CsrfRejected,
    /// Not decided: looking the credential up failed (the database is
    /// unreachable). The extractor tries once more and answers that error.
    Undecided,
}

impl Authenticated {
    /// The caller, when one was authenticated.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Authenticated::Caller { principal, .. } => principal.as_ref(),
            _ => None,
        }
    }
}

/// The outcome recorded for a request by the middleware, if it ran.
pub fn recorded(req: &HttpRequest) -> Option<Authenticated> {
    req.extensions().get::<Authenticated>().cloned()
}

/// Replaces the recorded outcome (the CSRF middleware's verdict).
pub fn record(req: &HttpRequest, outcome: Authenticated) {
    req.extensions_mut().insert(outcome);
}

/// The middleware (`middleware::from_fn(auth::authenticate::middleware)`).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The gateway's short path (`gateway::front`) may have decided already.
    if req.extensions().contains::<Authenticated>() {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    // The probes answer whatever is sent, and must not wait on the database;
    // the Xet CAS takes its own access tokens (`routes::xet::CasToken`).
    let outcome = if matches!(req.path(), "/healthz" | "/readyz") || req.path().starts_with("/cas/")
    {
        Authenticated::Caller {
            principal: None,
            by_cookie: false,
        }
    } else {
        match req.app_data::<web::Data<AppState>>().cloned() {
            Some(state) => decide(&state, req.request()).await,
            None => Authenticated::Undecided,
        }
    };
    record(req.request(), outcome);
    next.call(req).await.map(|r| r.map_into_boxed_body())
}

/// Authenticates a request: a bearer API token or session JWT (else a service
/// token), else the session cookie, else nobody. Bad credentials are never
/// treated as anonymous.
async fn resolve(state: &AppState, req: &HttpRequest) -> Result<Option<Principal>, ApiError> {
    match bearer(req)? {
        Some(secret) if secret.starts_with(super::secrets::TOKEN_PREFIX) => {
            principal_from_token(state, &secret).await.map(Some)
        }
        // A session JWT, else a service token (worker pull or control plane).
        Some(jwt) => match super::session::principal_from_jwt(state, &jwt).await {
            Ok(p) => Ok(Some(p)),
            Err(_) => super::service_tokens::principal(state, &jwt)
                .await
                .map(Some),
        },
        None => super::session::principal_from_cookie(state, req).await,
    }
}

/// The recorded form of a resolution; other errors (the database) are given back.
fn outcome(
    req: &HttpRequest,
    resolved: Result<Option<Principal>, ApiError>,
) -> Result<Authenticated, ApiError> {
    match resolved {
        Ok(principal) => Ok(Authenticated::Caller {
            by_cookie: principal.is_some()
                && !req
                    .headers()
                    .contains_key(actix_web::http::header::AUTHORIZATION),
            principal,
        }),
        Err(ApiError::Unauthorized(m)) => Ok(Authenticated::Unauthorized(m)),
        Err(e) => Err(e),
    }
}

/// Authenticates `req` (a bearer token, JWT or service token, else the
/// session cookie); a lookup that failed is `Undecided`.
pub async fn decide(state: &AppState, req: &HttpRequest) -> Authenticated {
    outcome(req, resolve(state, req).await).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "authentication undecided");
        Authenticated::Undecided
    })
}

fn bearer(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let h = h
        .to_str()
        .map_err(|_| ApiError::Unauthorized(INVALID_CREDENTIALS.into()))?;
    let (scheme, token) = h
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized(INVALID_CREDENTIALS.into()))?;
    if scheme.eq_ignore_ascii_case("basic") {
        return basic_password(token.trim()).map(Some);
    }
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(INVALID_CREDENTIALS.into()));
    }
    Ok(Some(token.trim().to_string()))
}

/// HTTP Basic credentials, as git and git-lfs send them: any user name, the
/// token as the password (which is then authenticated like a bearer token).
fn basic_password(encoded: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let invalid = || ApiError::Unauthorized(INVALID_CREDENTIALS.into());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let (_, password) = text.split_once(':').ok_or_else(invalid)?;
    if password.is_empty() {
        return Err(invalid());
    }
    Ok(password.to_string())
}

/// The caller of a request as the middleware recorded it (anonymous: `None`;
/// bad credentials: 401; a failed CSRF check: 403). An undecided outcome is
/// tried once more here, so its error (database unavailable, ...) is the
/// answer. Without the middleware this is an internal error: every app is
/// built by `app::build_app`, which installs it.
pub async fn caller(req: &HttpRequest) -> Result<Option<Principal>, ApiError> {
    let decided = match recorded(req) {
        Some(Authenticated::Undecided) => {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("app state missing")))?
                .clone();
            // As the middlewares would have: authenticate, then the CSRF check.
            let mut decided = outcome(req, resolve(&state, req).await)?;
            if super::csrf::rejects(&state, req, &decided) {
                decided = Authenticated::CsrfRejected;
            }
            record(req, decided.clone());
            decided
        }
        Some(decided) => decided,
        None => {
            return Err(ApiError::internal(anyhow::anyhow!(
                "the authentication middleware is not installed (build the app with app::build_app)"
            )))
        }
    };
    match decided {
        Authenticated::Caller { principal, .. } => Ok(principal),
        Authenticated::Unauthorized(m) => Err(ApiError::Unauthorized(m)),
        Authenticated::CsrfRejected => Err(ApiError::CsrfRejected),
        Authenticated::Undecided => Err(ApiError::internal(anyhow::anyhow!(
            "authentication undecided"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;
    use actix_web::test::TestRequest;
    use actix_web::FromRequest;

    fn someone() -> Principal {
        Principal {
            user_id: 7,
            name: "nobody-in-any-database".into(),
            fullname: String::new(),
            is_admin: false,
            credential: Credential::Worker,
        }
    }

    /// The extractor answers what the middleware recorded, without looking
    /// at credentials (the request carries a token no database knows, and
    /// there is no state to look it up in).
    #[actix_web::test]
    async fn extractor_reads_the_recorded_caller() {
        let req = TestRequest::get()
            .insert_header(("Authorization", "Bearer pdk_not_a_real_token"))
            .to_http_request();
        record(
            &req,
            Authenticated::Caller {
                principal: Some(someone()),
                by_cookie: false,
            },
        );
        let auth = crate::auth::Auth::extract(&req).await.unwrap();
        assert_eq!(auth.require().unwrap().name, "nobody-in-any-database");

        record(&req, Authenticated::Unauthorized("nope".into()));
        let err = crate::auth::Auth::extract(&req).await.unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(m) if m == "nope"));

        record(&req, Authenticated::CsrfRejected);
        let err = crate::auth::Auth::extract(&req).await.unwrap_err();
        assert!(matches!(err, ApiError::CsrfRejected));
    }

    /// Without the middleware the extractor does not authenticate on its own
    /// (an app not built by `build_app` fails loudly instead of quietly
    /// authenticating twice or not at all).
    #[actix_web::test]
    async fn extractor_without_middleware_is_an_internal_error() {
        let req = TestRequest::get().to_http_request();
        let err = crate::auth::Auth::extract(&req).await.unwrap_err();
        assert!(matches!(err, ApiError::Internal(_)), "{err:?}");
    }

    #[test]
    fn bearer_parsing() {
        let req = |h: &str| {
            TestRequest::get()
                .insert_header(("Authorization", h))
                .to_http_request()
        };
        assert_eq!(bearer(&req("Bearer abc")).unwrap().as_deref(), Some("abc"));
        assert_eq!(
            bearer(&req("bearer  abc ")).unwrap().as_deref(),
            Some("abc")
        );
        assert!(bearer(&req("Basic abc")).is_err());
        // git's Basic credentials: any user, the token as password.
        assert_eq!(
            bearer(&req("Basic dXNlcjpwZGtfc2VjcmV0"))
                .unwrap()
                .as_deref(),
            Some("pdk_secret")
        );
        // No password, or no colon.
        assert!(bearer(&req("Basic dXNlcjo=")).is_err());
        assert!(bearer(&req("Basic dXNlcg==")).is_err());
        assert!(bearer(&req("Bearer ")).is_err());
        assert!(bearer(&TestRequest::get().to_http_request())
            .unwrap()
            .is_none());
    }
}
