//! Repo lifecycle: create, delete, move, settings (`/api/repos/*`, `/api/{type}s/{repo}/settings`).

use crate::auth::access::{self, Access};
use crate::auth::{Auth, Scope};
use crate::db;
use crate::domain::{NamespaceName, RepoId, RepoName, RepoType};
use crate::error::{ApiError, ApiResult};
use crate::registry::{self, RepoRef};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default, rename = "type")]
    repo_type: Option<String>,
    #[serde(default)]
    private: Option<bool>,
    #[serde(default)]
    visibility: Option<String>,
    /// Site admins only: a single-segment repo id (`gpt2`).
    #[serde(default)]
    canonical: bool,
}

/// A repo setting with a value the hub does not know (400 `invalid_request`).
#[derive(Debug, thiserror::Error)]
pub enum RepoSettingsError {
    #[error("visibility {0:?} is not one of public, private")]
    Visibility(String),
    /// `other` is the JSON value sent.
    #[error("gated must be \"auto\", \"manual\" or false, not {0}")]
    Gated(String),
}

fn parse_visibility(private: Option<bool>, visibility: Option<&str>) -> ApiResult<Option<bool>> {
    match visibility {
        Some("public") => Ok(Some(false)),
        Some("private") | Some("protected") => Ok(Some(true)),
        Some(other) => Err(RepoSettingsError::Visibility(other.to_string()).into()),
        None => Ok(private),
    }
}

/// The URL `create_repo` returns (parsed by the client; must be on the endpoint host).
pub fn repo_url(state: &AppState, kind: RepoType, full_id: &str) -> String {
    format!("{}/{}{}", state.public_url, kind.url_prefix(), full_id)
}

pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    if !p.has_scope(Scope::Write) {
        return Err(ApiError::Forbidden(
            "creating a repository needs a token with the write scope".into(),
        ));
    }
    let kind = RepoType::parse(body.repo_type.as_deref().unwrap_or("model"))?;
    // The client sends "ns/name" split into organization + name; accept "ns/name" in name too.
    let (org, name) = match (body.organization.as_deref(), body.name.split_once('/')) {
        (Some(o), _) => (Some(o.to_string()), body.name.clone()),
        (None, Some((o, n))) => (Some(o.to_string()), n.to_string()),
        (None, None) => (None, body.name.clone()),
    };
    let name = RepoName::parse(&name)?;
    let namespace = if body.canonical {
        if !p.is_admin {
            return Err(ApiError::Forbidden(
                "only site administrators create single-segment repositories".into(),
            ));
        }
        RepoId::from_parts(None, name.as_str())?;
        crate::domain::names::ROOT_NAMESPACE.to_string()
    } else {
        match org {
            Some(o) => NamespaceName::parse(&o)?.to_string(),
            None => p.name.clone(),
        }
    };
    let ns = db::namespaces::by_name(&state.db, &namespace)
        .await?
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "namespace {namespace:?} does not exist or you cannot create repositories in it"
            ))
        })?;
    let standing = access::Standing::load_namespace(&state.db, Some(p), &ns, "namespace").await?;
    access::decide(Some(p), &standing, access::Action::CreateRepo)?;
    // Without a visibility, the namespace's default (private-by-default orgs).
    let private = match parse_visibility(body.private, body.visibility.as_deref())? {
        Some(p) => p,
        None => db::namespaces::private_by_default(&state.db, ns.id).await?,
    };
    let full_id = if body.canonical {
        name.to_string()
    } else {
        format!("{}/{}", ns.name, name)
    };
    let initial = registry::commit::InitialFiles::store(&state, ns.id).await?;
    let created = insert_with_initial_commit(
        &state,
        p,
        &ns,
        name.as_str(),
        kind,
        private,
        &full_id,
        &initial,
    )
    .await;
    let repo_id = match created {
        Ok(Some(id)) => id,
        Ok(None) => {
            initial.release(&state).await;
            let existing =
                db::repos::find(&state.db, kind.as_str(), &ns.name, name.as_str()).await?;
            let url = existing
                .map(|r| repo_url(&state, kind, &r.full_id()))
                .unwrap_or_else(|| repo_url(&state, kind, &full_id));
            return Ok(HttpResponse::Conflict()
                .insert_header(("X-Error-Message", "You already created this repository"))
                .json(json!({"error": "You already created this repository", "code": "conflict", "url": url})));
        }
        Err(e) => {
            initial.release(&state).await;
            return Err(e);
        }
    };
    tracing::info!(repo.id = repo_id, repo = %full_id, "repo created");
    Ok(HttpResponse::Ok().json(json!({
        "url": repo_url(&state, kind, &full_id),
        "name": full_id,
        "id": repo_id.to_string(),
    })))
}

/// The repo row, its first commit and the audit record, in one transaction on
/// one connection; `None` when the name is taken (the transaction is rolled
/// back before the caller looks up the winner with another connection).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_with_initial_commit(
    state: &AppState,
    p: &crate::auth::Principal,
    ns: &db::namespaces::Namespace,
    name: &str,
    kind: RepoType,
    private: bool,
    full_id: &str,
    initial: &registry::commit::InitialFiles,
) -> ApiResult<Option<i64>> {
    let mut tx = state.db.begin().await?;
    let Some(repo_id) = db::repos::insert(&mut *tx, ns.id, name, kind.as_str(), private).await?
    else {
        tx.rollback().await?;
        return Ok(None);
    };
    // The name was a moved repo's old one: it leads to the new repo now.
    db::redirects::forget(&mut *tx, ns.id, kind.as_str(), name).await?;
    crate::quota::check_namespace_can_grow(state, &mut tx, ns.id, 0).await?;
    crate::webhooks::enqueue(&mut tx, crate::webhooks::Event::RepoCreated { repo_id }).await?;
    registry::commit::initial_commit(state, &mut tx, repo_id, p, kind == RepoType::Model, initial)
        .await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        ns.id,
        "repo.created",
        &format!("{}:{}", kind.as_str(), full_id),
        json!({"private": private}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(repo_id))
}

#[derive(Debug, Deserialize)]
pub struct DeleteBody {
    name: String,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default, rename = "type")]
    repo_type: Option<String>,
}

fn body_repo_id(name: &str, organization: Option<&str>) -> ApiResult<RepoId> {
    match (organization, name.split_once('/')) {
        (Some(o), _) => RepoId::from_parts(Some(o), name),
        (None, Some(_)) => RepoId::parse(name),
        (None, None) => RepoId::from_parts(None, name),
    }
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<DeleteBody>,
) -> ApiResult<HttpResponse> {
    auth.require()?;
    let kind = RepoType::parse(body.repo_type.as_deref().unwrap_or("model"))?;
    let mut id = body_repo_id(&body.name, body.organization.as_deref())
        .map_err(|_| ApiError::RepoNotFound)?;
    if id.namespace.is_none() {
        // HF semantics: a bare name means the caller's namespace; fall back to a canonical repo.
        let p = auth.require()?;
        let own = RepoId::from_parts(Some(&p.name), id.name.as_str())?;
        if db::repos::find(
            &state.db,
            kind.as_str(),
            own.namespace_key(),
            own.name.as_str(),
        )
        .await?
        .is_some()
        {
            id = own;
        }
    }
    let ctx = registry::load_repo(&state, &auth, kind, &id, Access::Admin).await?;
    let mut tx = state.db.begin().await?;
    // Before the row goes: the event names the repo, and watchers are found through it.
    crate::webhooks::enqueue(
        &mut tx,
        crate::webhooks::Event::RepoDeleted {
            repo_id: ctx.repo.id,
        },
    )
    .await?;
    db::repos::delete(&mut *tx, ctx.repo.id).await?;
    crate::audit::record(
        &mut *tx,
        auth.principal(),
        ctx.repo.namespace_id,
        "repo.deleted",
        &format!("{}:{}", kind.as_str(), ctx.repo.full_id()),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveBody {
    from_repo: String,
    to_repo: String,
    #[serde(default, rename = "type")]
    repo_type: Option<String>,
}

pub async fn move_repo(
    state: web::Data<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<MoveBody>,
) -> ApiResult<HttpResponse> {
    let p = auth.require()?;
    let kind = RepoType::parse(body.repo_type.as_deref().unwrap_or("model"))?;
    let from = RepoId::parse(&body.from_repo).map_err(|_| ApiError::RepoNotFound)?;
    let to = RepoId::parse(&body.to_repo)?;
    let Some(to_ns_name) = &to.namespace else {
        return Err(ApiError::InvalidRepoName(
            "the destination must be namespace/name".into(),
        ));
    };
    let ctx = registry::load_repo(&state, &auth, kind, &from, Access::Admin).await?;
    let to_ns = db::namespaces::by_name(&state.db, to_ns_name.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "namespace {to_ns_name} does not exist or you cannot write to it"
            ))
        })?;
    let standing =
        access::Standing::load_namespace(&state.db, Some(p), &to_ns, "namespace").await?;
    access::decide(Some(p), &standing, access::Action::CreateRepo)?;
    let mut tx = state.db.begin().await?;
    // The move changes both namespaces' usage: under their quota locks (in
    // id order), so no quota check in either runs on a usage from before it.
    let locks: std::collections::BTreeSet<i64> = [ctx.repo.namespace_id, to_ns.id].into();
    for ns in locks {
        crate::quota::lock_namespace(&mut tx, ns).await?;
    }
    let r = sqlx::query(
        "UPDATE repos SET namespace_id = $2, name = $3, last_modified = now() WHERE id = $1",
    )
    .bind(ctx.repo.id)
    .bind(to_ns.id)
    .bind(to.name.as_str())
    .execute(&mut *tx)
    .await;
    match r {
        Err(e) if db::namespaces::is_unique_violation(&e) => {
            return Err(ApiError::Conflict(format!(
                "A {} repository called {} already exists",
                kind.as_str(),
                body.to_repo
            )))
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    // The old name redirects to the repo (registry::redirects); the new one
    // is a repo's again if it was an old name.
    db::redirects::forget(&mut *tx, to_ns.id, kind.as_str(), to.name.as_str()).await?;
    if to_ns.id != ctx.repo.namespace_id || !ctx.repo.name.eq_ignore_ascii_case(to.name.as_str()) {
        db::redirects::record(
            &mut *tx,
            ctx.repo.namespace_id,
            kind.as_str(),
            &ctx.repo.name,
            ctx.repo.id,
        )
        .await?;
    }
    crate::webhooks::enqueue(
        &mut tx,
        crate::webhooks::Event::RepoMoved {
            repo_id: ctx.repo.id,
            from: ctx.repo.full_id(),
        },
    )
    .await?;
    let target = format!("{}:{}", kind.as_str(), body.to_repo);
    crate::audit::record(
        &mut *tx,
        Some(p),
        ctx.repo.namespace_id,
        "repo.moved",
        &target,
        json!({"from": ctx.repo.full_id()}),
    )
    .await?;
    if to_ns.id != ctx.repo.namespace_id {
        crate::audit::record(
            &mut *tx,
            Some(p),
            to_ns.id,
            "repo.moved",
            &target,
            json!({"from": ctx.repo.full_id()}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({"url": repo_url(&state, kind, &to.to_string())})))
}

#[derive(Debug, Deserialize)]
pub struct SettingsBody {
    #[serde(default)]
    private: Option<bool>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    gated: Option<serde_json::Value>,
}

pub async fn settings(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<SettingsBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Admin).await?;
    let private = parse_visibility(body.private, body.visibility.as_deref())?;
    let gated: Option<Option<&str>> = match &body.gated {
        None => None,
        Some(serde_json::Value::Bool(false)) | Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(s)) if s == "auto" || s == "manual" => {
            Some(Some(s.as_str()))
        }
        Some(other) => return Err(RepoSettingsError::Gated(other.to_string()).into()),
    };
    let mut tx = state.db.begin().await?;
    let target = format!("{}:{}", ctx.repo.repo_type, ctx.repo.full_id());
    let mut changed = serde_json::Map::new();
    if let Some(private) = private {
        if private != ctx.repo.private {
            changed.insert("private".into(), json!(private));
            sqlx::query("UPDATE repos SET private = $2 WHERE id = $1")
                .bind(ctx.repo.id)
                .bind(private)
                .execute(&mut *tx)
                .await?;
            crate::audit::record(
                &mut *tx,
                auth.principal(),
                ctx.repo.namespace_id,
                "repo.visibility_changed",
                &target,
                json!({"private": private}),
            )
            .await?;
        }
    }
    if let Some(gated) = gated {
        changed.insert("gated".into(), gated.map_or(json!(false), |g| json!(g)));
        sqlx::query("UPDATE repos SET gated = $2 WHERE id = $1")
            .bind(ctx.repo.id)
            .bind(gated)
            .execute(&mut *tx)
            .await?;
        crate::audit::record(
            &mut *tx,
            auth.principal(),
            ctx.repo.namespace_id,
            "repo.gating_changed",
            &target,
            json!({"gated": gated}),
        )
        .await?;
    }
    if !changed.is_empty() {
        crate::webhooks::enqueue(
            &mut tx,
            crate::webhooks::Event::ConfigChanged {
                repo_id: ctx.repo.id,
                config: serde_json::Value::Object(changed),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
