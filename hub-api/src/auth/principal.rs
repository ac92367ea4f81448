//! Who is calling: a [`Principal`] (or none, for anonymous requests), what an
//! API token resolves to, and the [`Auth`] extractor that hands handlers the
//! caller the authentication middleware (`auth::authenticate`) resolved.

use crate::db;
use crate::error::ApiError;
use crate::refresh_cache::Lookup;
use crate::state::AppState;
use actix_web::{dev::Payload, FromRequest, HttpRequest};
use chrono::Utc;
use std::future::Future;
use std::pin::Pin;

/// Token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Inference,
    Admin,
    Worker,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "inference" => Some(Scope::Inference),
            "admin" => Some(Scope::Admin),
            "worker" => Some(Scope::Worker),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Inference => "inference",
            Scope::Admin => "admin",
            Scope::Worker => "worker",
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API token.
    Token {
        id: i64,
        name: String,
        scopes: Vec<Scope>,
        restrict_namespaces: Option<Vec<String>>,
        restrict_repos: Option<Vec<String>>,
        expires_at: Option<chrono::DateTime<Utc>>,
    },
    /// A dashboard session (all of the user's rights), from the session cookie
    /// or a session JWT sent as a bearer token.
    Session {
        /// The CSRF token bound to the session.
        csrf: String,
        /// Expiry, seconds since the epoch.
        expires_at: i64,
        /// `users.session_version` the session was issued under, which
        /// credentials minted for the session record (a sign-out ends them).
        /// None for the stand-in the job runner makes for a job's creator.
        version: Option<i32>,
    },
    /// A hub-signed pull token: read access to one repo, nothing else, for
    /// the endpoint or fine-tuning job recorded in `grant` (decided again on
    /// every use, `service_tokens::principal`).
    RepoPull {
        repo_id: i64,
        grant: super::grants::Grant,
    },
    /// A hub-signed control-plane token of a worker the hub runs itself.
    Worker,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub fullname: String,
    pub is_admin: bool,
    pub credential: Credential,
}

impl Principal {
    pub fn has_scope(&self, s: Scope) -> bool {
        match &self.credential {
            Credential::Token { scopes, .. } => {
                scopes.contains(&s) || (s == Scope::Read && scopes.contains(&Scope::Write))
            }
            Credential::Session { .. } => s != Scope::Worker,
            Credential::RepoPull { .. } => false,
            Credential::Worker => s == Scope::Worker,
        }
    }

    /// Whether a token restriction lets this credential act on the repo `ns/name` of `kind`.
    pub fn may_touch_repo(&self, namespace: &str, full_id: &str, kind: &str) -> bool {
        let (restrict_namespaces, restrict_repos) = match &self.credential {
            Credential::Token {
                restrict_namespaces,
                restrict_repos,
                ..
            } => (restrict_namespaces, restrict_repos),
            Credential::Session { .. } => return true,
            Credential::RepoPull { .. } | Credential::Worker => return false,
        };
        if restrict_namespaces.is_none() && restrict_repos.is_none() {
            return true;
        }
        let ns_ok = restrict_namespaces
            .as_ref()
            .is_some_and(|l| l.iter().any(|n| n.eq_ignore_ascii_case(namespace)));
        let repo_ok = restrict_repos.as_ref().is_some_and(|l| {
            l.iter().any(|r| {
                let (k, id) = r.split_once(':').unwrap_or(("model", r.as_str()));
                k == kind && id.eq_ignore_ascii_case(full_id)
            })
        });
        ns_ok || repo_ok
    }

    /// Whether the credential is a token restricted to some namespaces or repos.
    pub fn is_restricted(&self) -> bool {
        matches!(
            &self.credential,
            Credential::Token { restrict_namespaces, restrict_repos, .. }
                if restrict_namespaces.is_some() || restrict_repos.is_some()
        )
    }

    /// Whether a token restriction lets this credential act in a namespace at all.
    pub fn may_touch_namespace(&self, namespace: &str) -> bool {
        match &self.credential {
            Credential::Token {
                restrict_namespaces,
                restrict_repos,
                ..
            } => {
                if restrict_namespaces.is_none() && restrict_repos.is_none() {
                    return true;
                }
                restrict_namespaces
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|n| n.eq_ignore_ascii_case(namespace)))
            }
            Credential::Session { .. } => true,
            Credential::RepoPull { .. } | Credential::Worker => false,
        }
    }

    /// The token's role as `whoami-v2` reports it (the Hub's values: `read`,
    /// `write`, `fineGrained`). Restricted tokens and tokens without read or
    /// write scope are `fineGrained`; sessions are `write`.
    pub fn role_name(&self) -> &'static str {
        if let Credential::Token {
            restrict_namespaces,
            restrict_repos,
            ..
        } = &self.credential
        {
            if restrict_namespaces.is_some() || restrict_repos.is_some() {
                return "fineGrained";
            }
        }
        if self.has_scope(Scope::Admin) || self.has_scope(Scope::Write) {
            "write"
        } else if self.has_scope(Scope::Read) {
            "read"
        } else {
            "fineGrained"
        }
    }
}

/// The caller of a request, if authenticated, as the authentication
/// middleware resolved it (see `auth::authenticate`). Extracting it never
/// fails for anonymous requests; bad credentials are a 401.
#[derive(Debug, Clone)]
pub struct Auth(pub Option<Principal>);

impl Auth {
    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_ref()
    }
    /// The caller, or 401.
    pub fn require(&self) -> Result<&Principal, ApiError> {
        self.0.as_ref().ok_or_else(|| {
            ApiError::Unauthorized(
                "authentication required: send Authorization: Bearer <token>".into(),
            )
        })
    }
}

/// Message the HF client recognises for a bad token.
pub const INVALID_CREDENTIALS: &str = "Invalid credentials in Authorization header";

/// Resolves an API token secret to a principal (or 401). A known token is
/// answered from the token cache (`auth::cache`) without a database round
/// trip; a cached entry due for a reload is reloaded in the background.
pub async fn principal_from_token(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::Unauthorized(INVALID_CREDENTIALS.into());
    if !secret.starts_with(super::secrets::TOKEN_PREFIX) || secret.len() > 200 {
        return Err(invalid());
    }
    let hash = super::secrets::hash(secret);
    let cache = &state.tenancy.token_cache;
    let epoch = match cache.lookup(&hash) {
        Lookup::Fresh(p) => return Ok(p),
        Lookup::Stale { value, epoch } => {
            let (cache, db) = (cache.clone(), state.db.clone());
            tokio::spawn(async move {
                match load_token(&db, &hash).await {
                    Ok(p) => cache.put(hash, Some(p), epoch),
                    Err(ApiError::Unauthorized(_)) => cache.put(hash, None, epoch),
                    Err(e) => {
                        tracing::debug!(error = %e, "reloading a token failed");
                        cache.reload_failed(&hash);
                    }
                }
            });
            return Ok(value);
        }
        Lookup::Miss { epoch } => epoch,
    };
    let p = load_token(&state.db, &hash).await?;
    cache.put(hash, Some(p.clone()), epoch);
    Ok(p)
}

/// Reads a token and its user by the secret's hash: the principal, or 401
/// (unknown, revoked, expired), or the database's error.
async fn load_token(db: &sqlx::PgPool, hash: &[u8]) -> Result<Principal, ApiError> {
    let invalid = || ApiError::Unauthorized(INVALID_CREDENTIALS.into());
    let tok = db::tokens::by_hash(db, hash).await?.ok_or_else(invalid)?;
    if tok.revoked_at.is_some() {
        return Err(ApiError::Unauthorized("this token has been revoked".into()));
    }
    if tok.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(ApiError::Unauthorized("this token has expired".into()));
    }
    let user = db::namespaces::user_by_id(db, tok.user_id)
        .await?
        .ok_or_else(invalid)?;
    if tok
        .last_used_at
        .is_none_or(|t| Utc::now() - t > chrono::Duration::minutes(1))
    {
        let db = db.clone();
        let id = tok.id;
        tokio::spawn(async move {
            let _ = db::tokens::touch(&db, id).await;
        });
    }
    Ok(Principal {
        user_id: user.id,
        name: user.name,
        fullname: user.fullname,
        is_admin: user.is_admin,
        credential: Credential::Token {
            id: tok.id,
            name: tok.name,
            scopes: tok.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            restrict_namespaces: tok.restrict_namespaces,
            restrict_repos: tok.restrict_repos,
            expires_at: tok.expires_at,
        },
    })
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { super::authenticate::caller(&req).await.map(Auth) })
    }
}
