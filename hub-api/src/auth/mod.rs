//! Authentication (who is calling) and authorization (what they may do).
//!
//! `Authorization: Bearer <token>` everywhere: long-lived API tokens (`pdk_…`,
//! stored hashed) or hub-signed JWTs (sessions, worker pull tokens). The
//! [`authenticate`] middleware resolves the caller once per request, the
//! [`csrf`] middleware checks cookie sessions' unsafe requests, the [`Auth`]
//! extractor hands the result to handlers; [`access::decide`] decides what a
//! caller may do (repos, namespaces, endpoints, tokens, the site).

pub mod access;
pub mod authenticate;
pub mod cache;
pub mod csrf;
pub mod grants;
pub mod jwt;
pub mod principal;
pub mod secrets;
pub mod service_tokens;
pub mod session;

pub use access::Access;
pub use principal::{Auth, Credential, Principal, Scope};
