//! Organizations and their members. Outsiders see an organization's public
//! profile only; its members list is for members (others get 404); changes are
//! for org admins, and an organization always keeps at least one admin.

use super::{list_dto, namespace_param, time, ErrorDto, Page};
use crate::auth::access::{self, Action, Standing};
use crate::auth::Auth;
use crate::db;
use crate::db::namespaces::{Namespace, Role};
use crate::error::{ApiError, ApiResult};
use crate::routes::body::RequiredJson as JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgDto {
    pub name: String,
    pub fullname: String,
    pub created_at: String,
    /// The caller's role, when they are a member.
    pub role: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDto {
    pub user: String,
    pub fullname: String,
    /// admin, write or read.
    pub role: String,
    pub added_at: String,
}

list_dto!(MemberList, MemberDto);

/// Finds an organization by the `{org}` path segment.
pub async fn load_org(state: &AppState, req: &HttpRequest) -> ApiResult<Namespace> {
    let name = namespace_param(req, "org", "organization")?;
    db::namespaces::by_name(&state.db, &name)
        .await?
        .filter(|n| n.kind == "org")
        .ok_or(ApiError::NotFound("organization"))
}

fn org_dto(o: &Namespace, role: Option<Role>) -> OrgDto {
    OrgDto {
        name: o.name.clone(),
        fullname: o.fullname.clone(),
        created_at: time(o.created_at),
        role: role.map(|r| r.as_str().to_string()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgBody {
    #[schema(
        min_length = 1,
        max_length = 96,
        pattern = "^[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$"
    )]
    pub name: String,
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{0,200}$")]
    pub fullname: Option<String>,
}

/// Creates an organization; the caller becomes its admin.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "orgs", request_body = CreateOrgBody,
    responses((status = 201, description = "Created", body = OrgDto),
              (status = 409, description = "The name is taken", body = ErrorDto)))]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateOrgBody>,
) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    let standing = Standing::namespace(&body.name, None, "organization");
    access::decide(Some(p), &standing, Action::CreateOrg)?;
    let name = super::new_name(&body.name)?;
    let fullname = body.fullname.unwrap_or_else(|| name.to_string());
    if fullname.chars().count() > 200 || fullname.chars().any(char::is_control) {
        return Err(super::FieldError::Fullname.into());
    }
    let mut tx = state.db.begin().await?;
    let id = db::namespaces::insert_namespace(&mut *tx, name.as_str(), "org", &fullname)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("the name {name} is taken")))?;
    db::namespaces::set_member(&mut *tx, id, p.user_id, Role::Admin).await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        id,
        "org.created",
        &format!("org:{name}"),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    let org = db::namespaces::by_id(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    Ok(HttpResponse::Created().json(org_dto(&org, Some(Role::Admin))))
}

/// An organization's public profile (and the caller's role in it).
#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "orgs",
    params(("org" = String, Path, description = "Organization name")),
    responses((status = 200, description = "The organization", body = OrgDto)))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let org = load_org(&state, &req).await?;
    let role = match auth.principal() {
        Some(p) if p.may_touch_namespace(&org.name) => {
            db::namespaces::member_role(&state.db, org.id, p.user_id).await?
        }
        _ => None,
    };
    Ok(HttpResponse::Ok().json(org_dto(&org, role)))
}

/// Deletes an organization (org admins). It must hold no repositories.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", tag = "orgs",
    params(("org" = String, Path, description = "Organization name")),
    responses((status = 204, description = "Deleted"),
              (status = 409, description = "It still holds repositories", body = ErrorDto)))]
pub async fn delete(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let org = load_org(&state, &req).await?;
    let standing =
        Standing::load_namespace(&state.db, auth.principal(), &org, "organization").await?;
    access::decide(auth.principal(), &standing, Action::AdminNamespace)?;
    let p = auth.require()?;
    let mut tx = state.db.begin().await?;
    if db::namespaces::repo_count(&mut *tx, org.id).await? > 0 {
        return Err(ApiError::Conflict(format!(
            "{} still holds repositories; delete or move them first",
            org.name
        )));
    }
    db::namespaces::delete_namespace(&mut *tx, org.id).await?;
    // The org's own log goes with it; the deletion is kept in the actor's log.
    crate::audit::record(
        &mut *tx,
        Some(p),
        p.user_id,
        "org.deleted",
        &format!("org:{}", org.name),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    // Gateway calls by members read roles from a cache: drop this org's at once
    // (on every replica).
    crate::signals::invalidate(&state, crate::signals::Invalidation::Roles(org.id)).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Members of an organization (members only).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/members", tag = "members",
    params(("org" = String, Path, description = "Organization name"), super::PageQuery),
    responses((status = 200, description = "A page of members", body = MemberList)))]
pub async fn members(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    page: Page,
) -> ApiResult<HttpResponse> {
    let org = load_org(&state, &req).await?;
    let standing =
        Standing::load_namespace(&state.db, auth.principal(), &org, "organization").await?;
    access::decide(auth.principal(), &standing, Action::ReadNamespace)?;
    let mut rows =
        db::namespaces::list_members(&state.db, org.id, page.cursor, page.fetch()).await?;
    let next_cursor = page.finish(&mut rows, |m| m.user_id);
    let items = rows
        .into_iter()
        .map(|m| MemberDto {
            user: m.name,
            fullname: m.fullname,
            role: m.role,
            added_at: time(m.created_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(MemberList { items, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// The user's name.
    #[schema(min_length = 1, max_length = 96)]
    pub user: String,
    /// admin, write or read.
    #[schema(pattern = "^(admin|write|read)$")]
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// admin, write or read.
    #[schema(pattern = "^(admin|write|read)$")]
    pub role: String,
}

fn parse_role(s: &str) -> ApiResult<Role> {
    Role::parse(s).ok_or_else(|| super::FieldError::Role(crate::error::clip(s, 40)).into())
}

async fn admin_ctx(state: &AppState, auth: &Auth, req: &HttpRequest) -> ApiResult<Namespace> {
    let org = load_org(state, req).await?;
    let standing =
        Standing::load_namespace(&state.db, auth.principal(), &org, "organization").await?;
    access::decide(auth.principal(), &standing, Action::AdminNamespace)?;
    Ok(org)
}

async fn load_user(state: &AppState, name: &str) -> ApiResult<db::namespaces::User> {
    let name = crate::domain::NamespaceName::parse(name).map_err(|_| ApiError::NotFound("user"))?;
    db::namespaces::user_by_name(&state.db, name.as_str())
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// Adds a user to an organization (org admins).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/members", tag = "members",
    params(("org" = String, Path, description = "Organization name")),
    request_body = AddMemberBody,
    responses((status = 201, description = "Added", body = MemberDto),
              (status = 409, description = "Already a member", body = ErrorDto)))]
pub async fn add_member(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    JsonBody(body): JsonBody<AddMemberBody>,
) -> ApiResult<HttpResponse> {
    let org = admin_ctx(&state, &auth, &req).await?;
    let role = parse_role(&body.role)?;
    let user = load_user(&state, &body.user).await?;
    let mut tx = state.db.begin().await?;
    if db::namespaces::member_role(&mut *tx, org.id, user.id)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "{} is already a member of {}; change the role with PATCH",
            user.name, org.name
        )));
    }
    db::namespaces::set_member(&mut *tx, org.id, user.id, role).await?;
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        org.id,
        "member.added",
        &format!("user:{}", user.name),
        json!({"role": role.as_str()}),
    )
    .await?;
    tx.commit().await?;
    // Gateway calls by members read roles from a cache: drop this org's at once
    // (on every replica).
    crate::signals::invalidate(&state, crate::signals::Invalidation::Roles(org.id)).await;
    Ok(HttpResponse::Created().json(MemberDto {
        user: user.name,
        fullname: user.fullname,
        role: role.as_str().into(),
        added_at: time(chrono::Utc::now()),
    }))
}

/// Changes a member's role (org admins). The last admin cannot be demoted.
#[utoipa::path(patch, path = "/api/v1/orgs/{org}/members/{user}", tag = "members",
    params(("org" = String, Path, description = "Organization name"),
           ("user" = String, Path, description = "User name")),
    request_body = RoleBody,
    responses((status = 200, description = "Changed", body = MemberDto),
              (status = 409, description = "It would leave the organization without an admin", body = ErrorDto)))]
pub async fn set_role(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    JsonBody(body): JsonBody<RoleBody>,
) -> ApiResult<HttpResponse> {
    let org = admin_ctx(&state, &auth, &req).await?;
    let role = parse_role(&body.role)?;
    let user = load_user(
        &state,
        &crate::registry::repo_ref::param(&req, "user").unwrap_or_default(),
    )
    .await?;
    let mut tx = state.db.begin().await?;
    let admins = db::namespaces::lock_and_count_admins(&mut tx, org.id).await?;
    let old = db::namespaces::member_role(&mut *tx, org.id, user.id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    if old == Role::Admin && role != Role::Admin && admins <= 1 {
        return Err(ApiError::LastAdmin(format!(
            "{} is the last admin of {}",
            user.name, org.name
        )));
    }
    db::namespaces::set_member(&mut *tx, org.id, user.id, role).await?;
    if old != role {
        crate::audit::record(
            &mut *tx,
            auth.principal(),
            org.id,
            "member.role_changed",
            &format!("user:{}", user.name),
            json!({"from": old.as_str(), "to": role.as_str()}),
        )
        .await?;
    }
    tx.commit().await?;
    // Gateway calls by members read roles from a cache: drop this org's at once
    // (on every replica).
    crate::signals::invalidate(&state, crate::signals::Invalidation::Roles(org.id)).await;
    Ok(HttpResponse::Ok().json(MemberDto {
        user: user.name,
        fullname: user.fullname,
        role: role.as_str().into(),
        added_at: time(chrono::Utc::now()),
    }))
}

/// Removes a member (org admins; any member may remove themself). The last
/// admin cannot be removed.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/members/{user}", tag = "members",
    params(("org" = String, Path, description = "Organization name"),
           ("user" = String, Path, description = "User name")),
    responses((status = 204, description = "Removed"),
              (status = 409, description = "It would leave the organization without an admin", body = ErrorDto)))]
pub async fn remove_member(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let org = load_org(&state, &req).await?;
    let user = load_user(
        &state,
        &crate::registry::repo_ref::param(&req, "user").unwrap_or_default(),
    )
    .await?;
    let standing =
        Standing::load_namespace(&state.db, auth.principal(), &org, "organization").await?;
    let action = if auth.principal().is_some_and(|p| p.user_id == user.id) {
        Action::LeaveNamespace
    } else {
        Action::AdminNamespace
    };
    access::decide(auth.principal(), &standing, action)?;
    let mut tx = state.db.begin().await?;
    let admins = db::namespaces::lock_and_count_admins(&mut tx, org.id).await?;
    let old = db::namespaces::member_role(&mut *tx, org.id, user.id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    if old == Role::Admin && admins <= 1 {
        return Err(ApiError::LastAdmin(format!(
            "{} is the last admin of {}",
            user.name, org.name
        )));
    }
    db::namespaces::remove_member(&mut *tx, org.id, user.id).await?;
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        org.id,
        "member.removed",
        &format!("user:{}", user.name),
        json!({"role": old.as_str()}),
    )
    .await?;
    tx.commit().await?;
    // Gateway calls by members read roles from a cache: drop this org's at once
    // (on every replica).
    crate::signals::invalidate(&state, crate::signals::Invalidation::Roles(org.id)).await;
    Ok(HttpResponse::NoContent().finish())
}
