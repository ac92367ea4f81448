//! Authentication (who is calling) and authorization (what they may do).
//!
//! `Authorization: Bearer <token>` everywhere: long-lived API tokens (`pdk_…`,
//! stored hashed) or hub-signed JWTs (sessions, worker pull tokens). The
//! [`Auth`] extractor resolves the caller once per request; [`access::decide`] decides
//! what a caller may do (repos, namespaces, endpoints, tokens, the site).

pub mod access;
pub mod cache;
pub mod jwt;
pub mod principal;
pub mod secrets;
pub mod service_tokens;
pub mod session;

pub use access::Access;
pub use principal::{Auth, Credential, Principal, Scope};

/// The dashboard session behind a request's cookie, if any (CSRF-checked for
/// unsafe methods; see [`session`]).
pub async fn session_principal(
    state: &crate::state::AppState,
    req: &actix_web::HttpRequest,
) -> Result<Option<Principal>, crate::error::ApiError> {
    session::principal_from_cookie(state, req).await
}
