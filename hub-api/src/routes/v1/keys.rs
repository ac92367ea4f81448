//! Signing keys of hub JWTs (site admins): list, rotate (a new key signs from
//! now on; older keys keep verifying), retire (tokens it signed stop
//! verifying at once on this replica, within `jwt::RELOAD_EVERY` on others).
//! Never restarts anything; never shows a secret.

use super::{time, ErrorDto};
use crate::auth::access::is_site_admin;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyDto {
    pub kid: String,
    pub created_at: String,
    pub retired_at: Option<String>,
    /// Whether new tokens are signed with it.
    pub signing: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyList {
    pub items: Vec<SigningKeyDto>,
}

fn admin(auth: &Auth) -> ApiResult<&crate::auth::Principal> {
    let p = auth.require()?;
    if !is_site_admin(p) {
        return Err(ApiError::Forbidden(
            "only site administrators manage signing keys".into(),
        ));
    }
    Ok(p)
}

async fn list_dto(state: &AppState) -> ApiResult<SigningKeyList> {
    let signing = state.keys.signing_kid();
    let keys = state.keys.list().await.map_err(ApiError::internal)?;
    Ok(SigningKeyList {
        items: keys
            .into_iter()
            .map(|k| SigningKeyDto {
                signing: signing.as_deref() == Some(k.kid.as_str()),
                kid: k.kid,
                created_at: time(k.created_at),
                retired_at: k.retired_at.map(time),
            })
            .collect(),
    })
}

/// Every signing key, newest first.
#[utoipa::path(get, path = "/api/v1/admin/signing-keys", tag = "admin",
    responses((status = 200, description = "The keys", body = SigningKeyList)))]
pub async fn list(state: web::Data<AppState>, auth: Auth) -> ApiResult<HttpResponse> {
    admin(&auth)?;
    Ok(HttpResponse::Ok().json(list_dto(&state).await?))
}

/// Adds a new signing key; it signs from now on.
#[utoipa::path(post, path = "/api/v1/admin/signing-keys", tag = "admin",
    responses((status = 201, description = "The new key", body = SigningKeyDto)))]
pub async fn rotate(state: web::Data<AppState>, auth: Auth) -> ApiResult<HttpResponse> {
    let p = admin(&auth)?;
    let kid = state.keys.rotate().await.map_err(ApiError::internal)?;
    crate::audit::record(
        &state.db,
        Some(p),
        p.user_id,
        "signing_key.rotated",
        &format!("key:{kid}"),
        json!({}),
    )
    .await?;
    let key = list_dto(&state)
        .await?
        .items
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or(ApiError::NotFound("signing key"))?;
    Ok(HttpResponse::Created().json(key))
}

/// Retires a key: tokens it signed stop verifying (idempotent). The last
/// active key cannot be retired.
#[utoipa::path(delete, path = "/api/v1/admin/signing-keys/{kid}", tag = "admin",
    params(("kid" = String, Path, description = "Key id")),
    responses((status = 204, description = "Retired"),
              (status = 409, description = "It is the last active key", body = ErrorDto)))]
pub async fn retire(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let p = admin(&auth)?;
    let kid = path.into_inner();
    let keys = state.keys.list().await.map_err(ApiError::internal)?;
    let Some(key) = keys.iter().find(|k| k.kid == kid) else {
        return Err(ApiError::NotFound("signing key"));
    };
    if key.retired_at.is_some() {
        // Already retired: nothing to do.
        return Ok(HttpResponse::NoContent().finish());
    }
    let active: Vec<_> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
    if active.len() <= 1 {
        return Err(ApiError::Conflict(
            "this is the last active signing key; rotate first".into(),
        ));
    }
    state.keys.retire(&kid).await.map_err(ApiError::internal)?;
    crate::audit::record(
        &state.db,
        Some(p),
        p.user_id,
        "signing_key.retired",
        &format!("key:{kid}"),
        json!({}),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
