//! The caller's own API tokens: create (the secret is returned once), list
//! (prefix, scopes, times; never the secret or its hash), revoke. Who may do
//! which is one rule (`auth::access::decide` with `Action::ManageTokens`): a dashboard session
//! or an unrestricted token with the right scope (creating needs `admin`, so
//! a leaked read or write token cannot mint itself successors); a token
//! restricted to some repos or namespaces can do none of it.

use super::{list_dto, time, Page};
use crate::auth::access::{self, Action, Standing, TokenAction};
use crate::auth::{secrets, Auth, Scope};
use crate::db;
use crate::db::tokens::TokenRow;
use crate::error::{clip, ApiError, ApiResult};
use crate::routes::body::RequiredJson as JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenDto {
    pub id: i64,
    pub name: String,
    /// The first characters of the secret (`pdk_` and four more).
    pub prefix: String,
    pub scopes: Vec<String>,
    /// Namespaces the token is restricted to (null: not restricted by namespace).
    pub namespaces: Option<Vec<String>>,
    /// Repos (`type:ns/name`) the token is restricted to.
    pub repos: Option<Vec<String>>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
}

impl From<&TokenRow> for TokenDto {
    fn from(t: &TokenRow) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            prefix: t.display_prefix.clone(),
            scopes: t.scopes.clone(),
            namespaces: t.restrict_namespaces.clone(),
            repos: t.restrict_repos.clone(),
            created_at: time(t.created_at),
            last_used_at: t.last_used_at.map(time),
            expires_at: t.expires_at.map(time),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenDto {
    pub token: TokenDto,
    /// The secret: shown once, never again.
    pub secret: String,
}

list_dto!(TokenList, TokenDto);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// 1 to 100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$"
    )]
    pub name: String,
    /// read, write, inference, admin, worker (worker: site admins only).
    #[schema(min_items = 1, max_items = 5, value_type = Vec<ScopeName>)]
    pub scopes: Vec<String>,
    /// Restrict the token to these namespaces.
    #[schema(min_items = 1, max_items = 50)]
    pub namespaces: Option<Vec<RestrictNamespace>>,
    /// Restrict the token to these repos: `ns/name` (a model) or `dataset:ns/name`.
    #[schema(min_items = 1, max_items = 50)]
    pub repos: Option<Vec<RestrictRepo>>,
    /// Expire after this many days (1 to 3650).
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, deserialize_with = "super::opt_whole")]
    pub expires_in_days: Option<i64>,
}

/// A user or organization name in a token restriction.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(pattern = "^[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$")]
pub struct RestrictNamespace(pub String);

/// A repo in a token restriction: `ns/name` (a model), `model:ns/name` or `dataset:ns/name`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(
    pattern = "^((model|dataset):)?[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}/[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$"
)]
pub struct RestrictRepo(pub String);

const NAME: &str = "[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}";

/// A token scope (for the OpenAPI document).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ScopeName {
    Read,
    Write,
    Inference,
    Admin,
    Worker,
}

const MAX_TOKENS: i64 = 200;

/// A token spec the hub cannot issue (400 `validation_failed`).
#[derive(Debug, thiserror::Error)]
pub enum TokenSpecError {
    #[error("name must have 1 to 100 printable characters")]
    Name,
    #[error("scopes must list 1 to 5 scopes")]
    ScopeCount,
    #[error("scope {0:?} is not one of read, write, inference, admin, worker")]
    Scope(String),
    /// `namespaces` or `repos`.
    #[error("{0} must list 1 to 50 entries (omit it for no restriction)")]
    List(&'static str),
    #[error("{0:?} is not a namespace name")]
    Namespace(String),
    #[error("{0:?} is not a repo id like ns/name or dataset:ns/name")]
    Repo(String),
    #[error("expires_in_days must be 1 to 3650")]
    Expiry,
}

fn check_list<T>(v: &Option<Vec<T>>, what: &'static str) -> ApiResult<()> {
    if let Some(l) = v {
        if l.is_empty() || l.len() > 50 {
            return Err(TokenSpecError::List(what).into());
        }
    }
    Ok(())
}

/// Creates a token for the caller.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateTokenBody,
    responses((status = 201, description = "Created; the secret is shown once", body = CreatedTokenDto)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateTokenBody>,
) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    access::decide(
        Some(p),
        &Standing::none(),
        Action::ManageTokens(TokenAction::Create),
    )?;
    let name = body.name.as_str();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(TokenSpecError::Name.into());
    }
    if body.scopes.is_empty() || body.scopes.len() > 5 {
        return Err(TokenSpecError::ScopeCount.into());
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in &body.scopes {
        let scope = Scope::parse(s).ok_or_else(|| TokenSpecError::Scope(clip(s, 40)))?;
        if scope == Scope::Worker && !access::is_site_admin(p) {
            return Err(ApiError::Forbidden(
                "only site administrators can create worker tokens".into(),
            ));
        }
        if !scopes.iter().any(|x| x == scope.as_str()) {
            scopes.push(scope.as_str().to_string());
        }
    }
    check_list(&body.namespaces, "namespaces")?;
    check_list(&body.repos, "repos")?;
    // Restriction entries only need the shape of a name: they are matched
    // (case-insensitively) against real namespaces and repos at use.
    let ns_re = regex::Regex::new(&format!("^{NAME}$")).map_err(ApiError::internal)?;
    let repo_re = regex::Regex::new(&format!("^((model|dataset):)?{NAME}/{NAME}$"))
        .map_err(ApiError::internal)?;
    let namespaces = body
        .namespaces
        .as_ref()
        .map(|l| {
            l.iter()
                .map(|n| {
                    if ns_re.is_match(&n.0) {
                        Ok(n.0.clone())
                    } else {
                        Err(TokenSpecError::Namespace(clip(&n.0, 100)).into())
                    }
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?;
    let repos = body
        .repos
        .as_ref()
        .map(|l| {
            l.iter()
                .map(|r| {
                    if !repo_re.is_match(&r.0) {
                        return Err(TokenSpecError::Repo(clip(&r.0, 200)).into());
                    }
                    Ok(match r.0.split_once(':') {
                        Some(_) => r.0.clone(),
                        None => format!("model:{}", r.0),
                    })
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?;
    let expires_at = match body.expires_in_days {
        Some(d) if !(1..=3650).contains(&d) => return Err(TokenSpecError::Expiry.into()),
        Some(d) => Some(chrono::Utc::now() + chrono::Duration::days(d)),
        None => None,
    };
    if db::tokens::count_live(&state.db, p.user_id).await? >= MAX_TOKENS {
        return Err(ApiError::Conflict(format!(
            "you have {MAX_TOKENS} live tokens; revoke some first"
        )));
    }
    let secret = secrets::new_secret();
    let hash = secrets::hash(&secret);
    let mut tx = state.db.begin().await?;
    let row = db::tokens::insert(
        &mut *tx,
        &db::tokens::NewToken {
            user_id: p.user_id,
            name,
            secret_hash: &hash,
            display_prefix: &secrets::display_prefix(&secret),
            scopes: &scopes,
            restrict_namespaces: namespaces.as_deref(),
            restrict_repos: repos.as_deref(),
            expires_at,
        },
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        p.user_id,
        "token.created",
        &format!("token:{}", row.id),
        json!({"name": row.name, "scopes": row.scopes, "namespaces": row.restrict_namespaces,
               "repos": row.restrict_repos, "expires_at": row.expires_at.map(time)}),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(CreatedTokenDto {
        token: TokenDto::from(&row),
        secret,
    }))
}

/// The caller's live tokens.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(super::PageQuery),
    responses((status = 200, description = "A page of tokens", body = TokenList)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, page: Page) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    access::decide(
        Some(p),
        &Standing::none(),
        Action::ManageTokens(TokenAction::List),
    )?;
    let mut rows =
        db::tokens::list_for_user(&state.db, p.user_id, page.cursor, page.fetch()).await?;
    let next_cursor = page.finish(&mut rows, |t| t.id);
    Ok(HttpResponse::Ok().json(TokenList {
        items: rows.iter().map(TokenDto::from).collect(),
        next_cursor,
    }))
}

/// Revokes one of the caller's tokens (others' tokens are 404).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    access::decide(
        Some(p),
        &Standing::none(),
        Action::ManageTokens(TokenAction::Revoke),
    )?;
    let id: i64 = path
        .into_inner()
        .parse()
        .map_err(|_| ApiError::NotFound("token"))?;
    let mut tx = state.db.begin().await?;
    if !db::tokens::revoke(&mut *tx, p.user_id, id).await? {
        return Err(ApiError::NotFound("token"));
    }
    crate::audit::record(
        &mut *tx,
        Some(p),
        p.user_id,
        "token.revoked",
        &format!("token:{id}"),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    // After the commit, so no concurrent request (here or on another replica)
    // can cache it again.
    crate::signals::invalidate(&state, crate::signals::Invalidation::Token(id)).await;
    Ok(HttpResponse::NoContent().finish())
}
