//! `GET /api/whoami-v2`: who the token belongs to, as the HF clients read it.

use crate::auth::{Auth, Credential};
use crate::db;
use crate::error::ApiResult;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn whoami(state: web::Data<AppState>, auth: Auth) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    let orgs = db::namespaces::user_orgs(&state.db, p.user_id).await?;
    let user = db::namespaces::user_by_id(&state.db, p.user_id).await?;
    let (display, auth_type) = match &p.credential {
        Credential::Token { name, .. } => (name.clone(), "access_token"),
        Credential::Session { .. } => ("session".to_string(), "session"),
        Credential::RepoPull { .. } | Credential::Worker => ("service".to_string(), "service"),
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": p.user_id.to_string(),
        "type": "user",
        "name": p.name,
        "fullname": p.fullname,
        "email": user.and_then(|u| u.email),
        "emailVerified": false,
        "isPro": false,
        "canPay": false,
        "isAdmin": p.is_admin,
        "avatarUrl": format!("{}/avatars/{}", state.public_url, p.name),
        "orgs": orgs.iter().map(|(o, role)| json!({
            "id": o.id.to_string(),
            "type": "org",
            "name": o.name,
            "fullname": o.fullname,
            "roleInOrg": role.as_str(),
        })).collect::<Vec<_>>(),
        "auth": {
            "type": auth_type,
            "accessToken": {"displayName": display, "role": p.role_name()},
        },
    })))
}
