//! Short-lived hub-signed credentials for services: a worker's pull token
//! (read access to exactly one repo, for an endpoint's weights or a
//! fine-tuning job's repos, minted only from the read-and-gate decisions
//! `gating::endpoint_download` / `gating::job_download`) and the in-process
//! worker's control-plane token. Both are JWTs from the [`KeyRing`].
//!
//! A pull token records the endpoint or job (claim) it was minted for (its
//! [`Grant`]) and is decided again every time it is presented
//! (`gating::recheck`): once the endpoint is deleted, the job ended, or the
//! creator may no longer download the repo, it is refused (401) within the
//! bound of `auth::grants`, not at its expiry.
//!
//! [`KeyRing`]: super::jwt::KeyRing

use super::grants::{Grant, Refusal};
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
    /// The endpoint or job (claim) a pull token was minted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<Grant>,
}

/// A token that reads one repo (for a worker pulling an endpoint's weights or
/// a job's repos). It needs the read-and-gate decision for the endpoint or
/// job (`gating::endpoint_download`, `gating::job_download`), whose grant it
/// records: a pull token passes the repo's gate while that decision holds.
pub async fn pull_token(
    state: &AppState,
    weights: &crate::gating::Download,
    ttl_s: i64,
) -> Result<String, ApiError> {
    let grant = weights.grant();
    if !grant.is_pull() {
        return Err(ApiError::internal(anyhow::anyhow!(
            "a pull token is minted from an endpoint's or a job's decision, not {grant:?}"
        )));
    }
    let repo_id = weights.repo().id;
    let c = Claims {
        iss: ISSUER.into(),
        aud: PULL_AUDIENCE.into(),
        exp: expires_in(ttl_s),
        sub: format!("repo:{repo_id}"),
        repo: Some(repo_id),
        grant: Some(grant),
    };
    state.keys.sign(&c).await.map_err(ApiError::internal)
}

/// The 401 message of a pull token whose grant no longer holds.
fn pull_withdrawn(r: Refusal) -> ApiError {
    let why = match r {
        Refusal::Withdrawn(why) => why,
        _ => "its endpoint's or job's creator may no longer download the repository".into(),
    };
    ApiError::Unauthorized(format!("this pull token was withdrawn: {why}"))
}

/// A control-plane token for a worker the hub runs itself.
pub async fn worker_token(state: &AppState, ttl_s: i64) -> Result<String, ApiError> {
    let c = Claims {
        iss: ISSUER.into(),
        aud: WORKER_AUDIENCE.into(),
        exp: expires_in(ttl_s),
        sub: "worker:embedded".into(),
        repo: None,
        grant: None,
    };
    state.keys.sign(&c).await.map_err(ApiError::internal)
}

/// Resolves a hub-signed service JWT to a principal (or 401). A pull token's
/// grant is decided again here (`gating::recheck`, cached): one whose
/// endpoint or job is gone, or whose creator lost the repo, is a 401. (A
/// pull token without a grant, minted before grants were recorded, is not
/// honoured: workers get a fresh one with their next assignments poll.)
pub async fn principal(state: &AppState, jwt: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::Unauthorized(super::principal::INVALID_CREDENTIALS.into());
    if let Ok(c) = state.keys.verify::<Claims>(jwt, PULL_AUDIENCE).await {
        let (Some(repo_id), Some(grant)) = (c.repo, c.grant.filter(Grant::is_pull)) else {
            return Err(invalid());
        };
        if let Err(e) = crate::gating::recheck(state, grant, repo_id, super::Access::Read).await {
            return Err(match Refusal::of(&e) {
                Some(r) => pull_withdrawn(r),
                None => e,
            });
        }
        return Ok(Principal {
            user_id: 0,
            name: "pull".into(),
            fullname: String::new(),
            is_admin: false,
            credential: Credential::RepoPull { repo_id, grant },
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
