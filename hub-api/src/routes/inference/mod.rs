//! Inference: the endpoint management API, the worker control plane and usage.

pub mod endpoints;
pub mod job_runner;
pub mod usage;
pub mod workers;

use crate::auth::access::{self, Action, Standing};
use crate::auth::{Auth, Principal};
use crate::db;
use crate::db::namespaces::Namespace;
use crate::error::ApiResult;
use crate::state::AppState;

/// Finds a namespace and decides `action` (reading or managing its endpoints,
/// reading its usage) there: anonymous callers get 401, outsiders (and
/// callers of a missing namespace) 404, members without the role or scope 403.
pub async fn member_namespace<'a>(
    state: &AppState,
    auth: &'a Auth,
    name: &str,
    action: Action,
) -> ApiResult<(Namespace, &'a Principal)> {
    let p = auth.principal();
    let ns = db::namespaces::by_name(&state.db, name).await?;
    let standing = match &ns {
        Some(ns) => Standing::load_namespace(&state.db, p, ns, "namespace").await?,
        None => Standing::missing("namespace"),
    };
    access::decide(p, &standing, action)?;
    match (ns, p) {
        (Some(ns), Some(p)) => Ok((ns, p)),
        // `decide` refuses a missing namespace and anonymous callers.
        _ => Err(crate::error::ApiError::NotFound("namespace")),
    }
}
