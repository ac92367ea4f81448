//! Users: `GET /api/v1/users/me`; site admins list and create users.

use super::{list_dto, ErrorDto, Page};
use crate::auth::access::is_site_admin;
use crate::auth::Auth;
use crate::db;
use crate::db::namespaces::{Namespace, Role, User};
use crate::error::{ApiError, ApiResult};
use crate::routes::body::RequiredJson as JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An organization the user belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipDto {
    pub name: String,
    /// admin, write or read.
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDto {
    pub id: i64,
    pub name: String,
    pub fullname: String,
    pub email: Option<String>,
    pub is_admin: bool,
    pub orgs: Vec<MembershipDto>,
}

impl UserDto {
    pub fn from_user(u: &User, orgs: &[(Namespace, Role)]) -> Self {
        Self {
            id: u.id,
            name: u.name.clone(),
            fullname: u.fullname.clone(),
            email: u.email.clone(),
            is_admin: u.is_admin,
            orgs: orgs
                .iter()
                .map(|(o, r)| MembershipDto {
                    name: o.name.clone(),
                    role: r.as_str().into(),
                })
                .collect(),
        }
    }
}

list_dto!(UserList, UserDto);

/// The caller.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    responses((status = 200, description = "The caller", body = UserDto)))]
pub async fn me(state: web::Data<AppState>, auth: Auth) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    let user = db::namespaces::user_by_id(&state.db, p.user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let orgs = db::namespaces::user_orgs(&state.db, p.user_id).await?;
    Ok(HttpResponse::Ok().json(UserDto::from_user(&user, &orgs)))
}

fn require_site_admin(auth: &Auth) -> ApiResult<()> {
    let p = auth.require()?;
    if !is_site_admin(p) {
        return Err(ApiError::Forbidden(
            "only site administrators can do this (with a session or an admin-scoped token)".into(),
        ));
    }
    Ok(())
}

/// Every user (site admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(super::PageQuery),
    responses((status = 200, description = "A page of users", body = UserList)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, page: Page) -> ApiResult<HttpResponse> {
    require_site_admin(&auth)?;
    let mut rows = db::namespaces::list_users(&state.db, page.cursor, page.fetch()).await?;
    let next_cursor = page.finish(&mut rows, |u| u.id);
    let items = rows.iter().map(|u| UserDto::from_user(u, &[])).collect();
    Ok(HttpResponse::Ok().json(UserList { items, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    /// Letters, digits, `-`, `_`, `.`; 1-96 characters.
    #[schema(
        min_length = 1,
        max_length = 96,
        pattern = "^[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$"
    )]
    pub name: String,
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s\\x00-\\x1f\\x7f]+@[^@\\s\\x00-\\x1f\\x7f]+$"
    )]
    pub email: Option<String>,
    /// At least 8 characters; without one the user cannot sign in to the dashboard.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
}

/// Creates a user (site admins).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserBody,
    responses((status = 201, description = "Created", body = UserDto),
              (status = 409, description = "The name is taken", body = ErrorDto)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> ApiResult<HttpResponse> {
    require_site_admin(&auth)?;
    let name = super::new_name(&body.name)?;
    if let Some(e) = &body.email {
        let re = regex::Regex::new(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")
            .map_err(ApiError::internal)?;
        if e.chars().count() > 254 || !re.is_match(e) {
            return Err(super::FieldError::Email.into());
        }
    }
    let hash = match body.password {
        Some(pw) if pw.chars().count() < 8 || pw.len() > 1024 => {
            return Err(super::FieldError::Password.into())
        }
        Some(pw) => Some(
            crate::admin::hash_password(pw)
                .await
                .map_err(ApiError::internal)?,
        ),
        None => None,
    };
    let mut tx = state.db.begin().await?;
    let id = db::namespaces::create_user(
        &mut tx,
        name.as_str(),
        body.email.as_deref(),
        hash.as_deref(),
        body.is_admin,
    )
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("the name {name} is taken")))?;
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        id,
        "user.created",
        &format!("user:{name}"),
        serde_json::json!({"is_admin": body.is_admin}),
    )
    .await?;
    tx.commit().await?;
    let user = db::namespaces::user_by_id(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(HttpResponse::Created().json(UserDto::from_user(&user, &[])))
}
