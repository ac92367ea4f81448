//! Short-lived hub-signed credentials for services: a worker's pull token
//! (read access to exactly one repo, for its weights, minted only from the
//! read-and-gate decision `gating::endpoint_download`) and the in-process
//! worker's control-plane token. Both are JWTs from the [`KeyRing`].
//!
//! [`KeyRing`]: super::jwt::KeyRing

use super::jwt::{expires_in, ISSUER};
use super::principal::{Credential, Principal};
use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};

pub const PULL_AUDIENCE: &str = "paddock-pull";
pub const WORKER_AUDIENCE: &str = "paddock-worker";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    exp: i64,
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repo: Option<i64>,
}

/// A token that reads one repo (for a worker pulling an endpoint's weights).
/// It needs the read-and-gate decision for the endpoint
/// (`gating::endpoint_download`): a pull token passes the repo's gate.
pub async fn pull_token(
    state: &AppState,
    weights: &crate::gating::Download,
    ttl_s: i64,
) -> Result<String, ApiError> {
    let repo_id = weights.repo().id;
    let c = Claims {
        iss: ISSUER.into(),
        aud: PULL_AUDIENCE.into(),
        exp: expires_in(ttl_s),
        sub: format!("repo:{repo_id}"),
        repo: Some(repo_id),
    };
    state.keys.sign(&c).await.map_err(ApiError::internal)
}

/// A control-plane token for a worker the hub runs itself.
pub async fn worker_token(state: &AppState, ttl_s: i64) -> Result<String, ApiError> {
    let c = Claims {
        iss: ISSUER.into(),
        aud: WORKER_AUDIENCE.into(),
        exp: expires_in(ttl_s),
        sub: "worker:embedded".into(),
        repo: None,
    };
    state.keys.sign(&c).await.map_err(ApiError::internal)
}

/// Resolves a hub-signed service JWT to a principal (or 401).
pub async fn principal(state: &AppState, jwt: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::Unauthorized(super::principal::INVALID_CREDENTIALS.into());
    if let Ok(c) = state.keys.verify::<Claims>(jwt, PULL_AUDIENCE).await {
        let repo_id = c.repo.ok_or_else(invalid)?;
        return Ok(Principal {
            user_id: 0,
            name: "pull".into(),
            fullname: String::new(),
            is_admin: false,
            credential: Credential::RepoPull { repo_id },
        });
    }
    if state
        .keys
        .verify::<Claims>(jwt, WORKER_AUDIENCE)
        .await
        .is_ok()
    {
        return Ok(Principal {
            user_id: 0,
            name: "worker".into(),
            fullname: String::new(),
            is_admin: false,
            credential: Credential::Worker,
        });
    }
    Err(invalid())
}
