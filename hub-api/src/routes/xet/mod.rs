//! Xet storage (issue 12): the hub's token routes and the CAS under
//! [`CAS_PREFIX`] (`shared/reference/xet-protocol.md` §2, §7). The formats and
//! validation are `hub_xet`'s; these handlers authorize, read capped bodies,
//! call it off the async executor, store and index.
//!
//! The CAS does not use the hub's credentials: every API route takes the
//! short-lived access token the token routes sign ([`CasToken`]: repo,
//! namespace, read or write, and the grant it was minted for), and the xorb
//! data links carry their own signed, expiring claims (no token: the client
//! sends none to them). Both record on whose behalf they were minted (an
//! `auth::grants::Grant`) and are decided again on every use
//! (`gating::recheck`, answered from a per-process cache): access withdrawn
//! ends them within the bound of `auth::grants`, not at their expiry.

pub mod download;
pub mod token;
pub mod upload;

use crate::auth::grants::Grant;
use crate::auth::jwt::{expires_in, ISSUER};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use hub_xet::hash::HashParseError;
use hub_xet::reconstruct::ReconstructError;
use hub_xet::shard::ShardError;
use hub_xet::xorb::XorbError;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// Where the CAS lives under the hub's public URL (`casUrl`).
pub const CAS_PREFIX: &str = "/cas";
/// Audience of the CAS access tokens.
const CAS_AUDIENCE: &str = "paddock-xet-cas";

/// Bad Xet input (400 `invalid_xet_data`, or 413 for bodies over the limit).
#[derive(Debug, thiserror::Error)]
pub enum XetError {
    #[error("{0}")]
    Hash(#[from] HashParseError),
    #[error("unknown prefix {0:?}: only \"default\" is served")]
    Prefix(String),
    #[error("invalid xorb: {0}")]
    Xorb(XorbError),
    #[error("invalid shard: {0}")]
    Shard(ShardError),
    #[error("{0}")]
    Range(ReconstructError),
}

impl From<XorbError> for ApiError {
    fn from(e: XorbError) -> Self {
        match e {
            XorbError::BodyTooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            e => XetError::Xorb(e).into(),
        }
    }
}

impl From<ShardError> for ApiError {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            // The stored bytes do not read back: a storage fault, not the client's.
            ShardError::UnreadableXorb { .. } => ApiError::internal(e),
            e => XetError::Shard(e).into(),
        }
    }
}

impl From<HashParseError> for ApiError {
    fn from(e: HashParseError) -> Self {
        XetError::Hash(e).into()
    }
}

/// Read or write: what a CAS token lets its holder do (write implies read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

/// The claims of a CAS access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CasClaims {
    iss: String,
    aud: String,
    pub exp: i64,
    pub scope: Scope,
    /// The repo (`repos.id`) the token was issued for.
    pub repo: i64,
    /// Its namespace: the tenant whose dedup index the token may query.
    pub ns: i64,
    /// On whose behalf it was minted: decided again on every use. A token
    /// signed before grants were recorded counts as anonymous (it still reads
    /// a public, ungated repo, nothing else).
    #[serde(default)]
    pub grant: Grant,
}

impl CasClaims {
    /// What the token needs of its repo: read (with the gate) or write.
    pub fn need(&self) -> crate::auth::Access {
        match self.scope {
            Scope::Read => crate::auth::Access::Read,
            Scope::Write => crate::auth::Access::Write,
        }
    }
}

/// Signs a CAS access token valid for `ttl_s` seconds.
pub async fn sign_cas_token(
    state: &AppState,
    scope: Scope,
    repo: i64,
    ns: i64,
    grant: Grant,
    ttl_s: i64,
) -> ApiResult<(String, i64)> {
    let exp = expires_in(ttl_s);
    let claims = CasClaims {
        iss: ISSUER.into(),
        aud: CAS_AUDIENCE.into(),
        exp,
        scope,
        repo,
        ns,
        grant,
    };
    let token = state.keys.sign(&claims).await.map_err(ApiError::internal)?;
    Ok((token, exp))
}

/// The verified CAS token of a request: `Authorization: Bearer <accessToken>`
/// (missing, invalid or expired: 401; the client never refreshes on 401, so
/// a token is honoured until its `exp`, with the hub's clock-skew leeway),
/// whose grant still holds: the decision it was minted from is made again
/// (`gating::recheck`) and refuses as it would now (404 `repo_not_found`,
/// 403 `gated_repo` or `forbidden`, 401 when the API token it was minted for
/// was revoked).
#[derive(Debug, Clone)]
pub struct CasToken(pub CasClaims);

impl CasToken {
    /// 403 unless the token may write.
    pub fn need_write(&self) -> ApiResult<()> {
        if self.0.scope == Scope::Write {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this Xet token is read-only: uploads need a token from xet-write-token".into(),
            ))
        }
    }
}

impl FromRequest for CasToken {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            // Verified already by the rate limiter, which buckets CAS calls by it.
            let verified = req.extensions().get::<CasToken>().cloned();
            let cas = match verified {
                Some(t) => t,
                None => CasToken(token_of(&req, state).await?),
            };
            crate::gating::recheck(state, cas.0.grant, cas.0.repo, cas.0.need()).await?;
            Ok(cas)
        })
    }
}

/// The claims of the request's `Authorization: Bearer <accessToken>` (401
/// when missing, invalid or expired).
async fn token_of(req: &HttpRequest, state: &AppState) -> ApiResult<CasClaims> {
    let unauthorized = |m: &str| ApiError::Unauthorized(m.to_string());
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .ok_or_else(|| {
            unauthorized("a Xet access token is required: Authorization: Bearer <accessToken>")
        })?;
    verify_cas_token(state, &token)
        .await
        .ok_or_else(|| unauthorized("the Xet access token is invalid or has expired"))
}

/// The claims of a valid, unexpired CAS access token (None: not one).
pub async fn verify_cas_token(state: &AppState, token: &str) -> Option<CasClaims> {
    state.keys.verify(token, CAS_AUDIENCE).await.ok()
}

/// Checks a CAS path's prefix segment (`default`; `default-merkledb` too
/// where the spec documents it).
pub fn check_prefix(prefix: &str, also_merkledb: bool) -> Result<(), XetError> {
    if prefix == "default" || (also_merkledb && prefix == "default-merkledb") {
        Ok(())
    } else {
        Err(XetError::Prefix(crate::error::clip(prefix, 64)))
    }
}
