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
    let mut access_token = json!({"role": p.role_name()});
    let auth_type = match &p.credential {
        Credential::Token {
            name,
            scopes,
            restrict_namespaces,
            restrict_repos,
            expires_at,
            ..
        } => {
            access_token["displayName"] = json!(name);
            if let Some(e) = expires_at {
                access_token["expiration"] = json!(crate::registry::hf_date(*e));
            }
            if p.role_name() == "fineGrained" {
                // The Hub's shape: global permissions and per-entity scopes.
                let perms: Vec<&str> = scopes
                    .iter()
                    .flat_map(|s| match s {
                        crate::auth::Scope::Read => vec!["repo.content.read"],
                        crate::auth::Scope::Write | crate::auth::Scope::Admin => {
                            vec!["repo.content.read", "repo.write"]
                        }
                        crate::auth::Scope::Inference => vec!["inference.endpoints.infer.write"],
                        crate::auth::Scope::Worker => vec![],
                    })
                    .collect();
                let mut scoped = Vec::new();
                for n in restrict_namespaces.iter().flatten() {
                    scoped
                        .push(json!({"entity": {"type": "org", "name": n}, "permissions": perms}));
                }
                for r in restrict_repos.iter().flatten() {
                    let (kind, id) = r.split_once(':').unwrap_or(("model", r.as_str()));
                    scoped
                        .push(json!({"entity": {"type": kind, "name": id}, "permissions": perms}));
                }
                let global: Vec<&str> = if scoped.is_empty() {
                    perms.clone()
                } else {
                    vec![]
                };
                access_token["fineGrained"] =
                    json!({"global": global, "scoped": scoped, "canReadGatedRepos": true});
            }
            "access_token"
        }
        Credential::Session { .. } => {
            access_token["displayName"] = json!("session");
            "session"
        }
        Credential::RepoPull { .. } | Credential::Worker => {
            access_token["displayName"] = json!("service");
            "service"
        }
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
            "accessToken": access_token,
        },
    })))
}
