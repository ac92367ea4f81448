//! Inference: the endpoint management API, the worker control plane and usage.

pub mod endpoints;
pub mod usage;
pub mod workers;

use crate::auth::access::namespace_role;
use crate::auth::{Auth, Principal, Scope};
use crate::db;
use crate::db::namespaces::{Namespace, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Finds a namespace the caller belongs to (outsiders get 404) and checks the
/// role and scope an action needs.
pub async fn member_namespace<'a>(
    state: &AppState,
    auth: &'a Auth,
    name: &str,
    need: Role,
) -> ApiResult<(Namespace, &'a Principal)> {
    let p = auth.require()?;
    let ns = db::namespaces::by_name(&state.db, name)
        .await?
        .ok_or(ApiError::NotFound("namespace"))?;
    let role = namespace_role(&state.db, p, ns.id).await?;
    let Some(role) = role.filter(|_| p.may_touch_namespace(&ns.name)) else {
        return Err(ApiError::NotFound("namespace"));
    };
    if role < need {
        return Err(ApiError::Forbidden(format!(
            "this needs the {} role in {}",
            need.as_str(),
            ns.name
        )));
    }
    let scope = if need >= Role::Write {
        Scope::Write
    } else {
        Scope::Read
    };
    let allowed = p.has_scope(scope) || (scope == Scope::Read && p.has_scope(Scope::Inference));
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "this needs a token with the {} scope",
            scope.as_str()
        )));
    }
    Ok((ns, p))
}
