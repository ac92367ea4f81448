//! The audit log, newest first: an organization's for its admins, and the
//! caller's own (token events, organizations they deleted).

use super::{list_dto, time, Page};
use crate::auth::access::{self, Action, Standing, TokenAction};
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryDto {
    pub id: i64,
    /// Who did it (null: the command line or the system).
    pub actor: Option<String>,
    /// What happened, e.g. `member.added`, `token.revoked`, `quota.changed`.
    pub action: String,
    /// What it happened to, e.g. `user:alice`, `model:acme/m`, `token:12`.
    pub target: String,
    /// Details (ids, names and settings; never secrets).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub at: String,
}

list_dto!(AuditList, AuditEntryDto);

async fn page_of(state: &AppState, ns_id: i64, page: Page) -> ApiResult<AuditList> {
    let mut rows = crate::audit::list(&state.db, ns_id, page.cursor, page.fetch()).await?;
    let next_cursor = page.finish(&mut rows, |e| e.id);
    Ok(AuditList {
        items: rows
            .into_iter()
            .map(|e| AuditEntryDto {
                id: e.id,
                actor: e.actor_name,
                action: e.action,
                target: e.target,
                details: e.details.0,
                at: time(e.at),
            })
            .collect(),
        next_cursor,
    })
}

/// An organization's audit log (org admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit", tag = "audit",
    params(("org" = String, Path, description = "Organization name"), super::PageQuery),
    responses((status = 200, description = "A page of entries, newest first", body = AuditList)))]
pub async fn org(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    page: Page,
) -> ApiResult<HttpResponse> {
    let org = super::orgs::load_org(&state, &req).await?;
    let standing =
        Standing::load_namespace(&state.db, auth.principal(), &org, "organization").await?;
    access::decide(auth.principal(), &standing, Action::AdminNamespace)?;
    Ok(HttpResponse::Ok().json(page_of(&state, org.id, page).await?))
}

/// The caller's own audit log.
#[utoipa::path(get, path = "/api/v1/users/me/audit", tag = "audit", params(super::PageQuery),
    responses((status = 200, description = "A page of entries, newest first", body = AuditList)))]
pub async fn me(state: web::Data<AppState>, auth: Auth, page: Page) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    // The log lists the account's token events (names, scopes, restrictions):
    // the same rule as listing tokens, so a restricted token sees none of it.
    access::decide(
        Some(p),
        &Standing::none(),
        Action::ManageTokens(TokenAction::List),
    )?;
    Ok(HttpResponse::Ok().json(page_of(&state, p.user_id, page).await?))
}
