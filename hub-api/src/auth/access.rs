//! Authorization of repo access. A private repo the caller cannot read is
//! indistinguishable from a missing one (404 `RepoNotFound`).

use super::principal::{Principal, Scope};
use crate::db;
use crate::db::namespaces::Role;
use crate::db::repos::RepoRow;
use crate::error::ApiError;
use sqlx::PgExecutor;

/// What a caller may do with a repo, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Write,
    Admin,
}

/// The caller's role in a namespace: owner (admin) of their own, their
/// membership role in an organization, admin for site admins.
pub async fn namespace_role(
    db: impl PgExecutor<'_>,
    p: &Principal,
    namespace_id: i64,
) -> sqlx::Result<Option<Role>> {
    if p.is_admin || p.user_id == namespace_id {
        return Ok(Some(Role::Admin));
    }
    db::namespaces::member_role(db, namespace_id, p.user_id).await
}

/// The most a credential's scopes allow on repos: `write` covers repo
/// administration too (delete, settings), as on the Hugging Face Hub; the
/// caller's role in the namespace still limits it.
fn scope_cap(p: &Principal) -> Access {
    if p.has_scope(Scope::Admin) || p.has_scope(Scope::Write) {
        Access::Admin
    } else if p.has_scope(Scope::Read) {
        Access::Read
    } else {
        Access::None
    }
}

/// What `p` (or an anonymous caller) may do with `repo`.
pub async fn repo_access(
    db: impl PgExecutor<'_>,
    p: Option<&Principal>,
    repo: &RepoRow,
) -> sqlx::Result<Access> {
    let public = if repo.private {
        Access::None
    } else {
        Access::Read
    };
    let Some(p) = p else { return Ok(public) };
    if let super::Credential::RepoPull { repo_id } = p.credential {
        return Ok(if repo_id == repo.id {
            Access::Read
        } else {
            public
        });
    }
    if !p.may_touch_repo(&repo.namespace, &repo.full_id(), &repo.repo_type) {
        return Ok(public);
    }
    let role = match namespace_role(db, p, repo.namespace_id).await? {
        Some(Role::Admin) => Access::Admin,
        Some(Role::Write) => Access::Write,
        Some(Role::Read) => Access::Read,
        None => Access::None,
    };
    Ok(public.max(role.min(scope_cap(p))))
}

/// Checks `have` covers `need`: a caller who cannot read gets 404, one who can
/// read but not write gets 403.
pub fn require(have: Access, need: Access) -> Result<(), ApiError> {
    if have >= need {
        return Ok(());
    }
    if have == Access::None {
        return Err(ApiError::RepoNotFound);
    }
    Err(ApiError::Forbidden(match need {
        Access::Admin => "you need admin rights on this repository".into(),
        _ => "you do not have write access to this repository".into(),
    }))
}

/// Whether `p` may create repos in (or otherwise write to) a namespace.
pub async fn can_write_namespace(
    db: impl PgExecutor<'_>,
    p: &Principal,
    namespace_id: i64,
    namespace: &str,
) -> sqlx::Result<bool> {
    if !p.has_scope(Scope::Write) || !p.may_touch_namespace(namespace) {
        return Ok(false);
    }
    Ok(matches!(
        namespace_role(db, p, namespace_id).await?,
        Some(Role::Admin) | Some(Role::Write)
    ))
}

/// What a caller may do in a namespace (a user's own or an organization):
/// `None` for outsiders (they get 404), `Read` for members, `Write` for
/// members with the write role, `Admin` for org admins, the user themself and
/// site admins. Token scopes and restrictions cap it as for repos.
pub async fn namespace_access(
    db: impl PgExecutor<'_>,
    p: Option<&Principal>,
    ns: &db::namespaces::Namespace,
) -> sqlx::Result<Access> {
    let Some(p) = p else {
        return Ok(Access::None);
    };
    if !p.may_touch_namespace(&ns.name) {
        return Ok(Access::None);
    }
    let role = match namespace_role(db, p, ns.id).await? {
        Some(Role::Admin) => Access::Admin,
        Some(Role::Write) => Access::Write,
        Some(Role::Read) => Access::Read,
        None => Access::None,
    };
    Ok(role.min(scope_cap(p)))
}

/// Whom a repo listing is for (`db::repos::ListQuery::viewer`): the caller's
/// (user id, site admin), or `None` to list as an anonymous caller.
/// Restricted tokens and tokens without read scope list like anonymous
/// callers, so private repos never show to them. The API's listings and the
/// dashboard's pages both use this.
pub fn list_viewer(p: Option<&Principal>) -> Option<(i64, bool)> {
    p.filter(|p| !p.is_restricted() && p.has_scope(Scope::Read))
        .map(|p| (p.user_id, p.is_admin))
}

/// Checks `have` covers `need` for a namespace-level object: outsiders get
/// 404 (`what` not found), members without the right get 403.
pub fn require_in_namespace(
    have: Access,
    need: Access,
    what: &'static str,
) -> Result<(), ApiError> {
    if have >= need {
        return Ok(());
    }
    if have == Access::None {
        return Err(ApiError::NotFound(what));
    }
    Err(ApiError::Forbidden(match need {
        Access::Admin => format!("only admins of the organization can do this ({what})"),
        _ => format!("you need the write role for this ({what})"),
    }))
}

/// Whether the caller acts as a site administrator: a site admin's session,
/// or a site admin's token with the `admin` scope.
pub fn is_site_admin(p: &Principal) -> bool {
    p.is_admin && p.has_scope(Scope::Admin)
}

/// What a caller does with their own API tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// See the list (names, prefixes, scopes, restrictions; never secrets).
    List,
    /// Mint a new token.
    Create,
    /// Revoke one.
    Revoke,
}

/// The one rule for managing API tokens: a dashboard session, or an
/// unrestricted API token with the scope the action needs (list: read, write
/// or admin; revoke: write or admin; create: admin). A token restricted to
/// some namespaces or repos, a pull token and a worker token never see or
/// touch their owner's other credentials: 403 `forbidden`.
pub fn may_manage_tokens(p: &Principal, action: TokenAction) -> Result<(), ApiError> {
    use super::Credential;
    let scoped = |scopes: &[Scope]| scopes.iter().any(|s| p.has_scope(*s));
    let may = match &p.credential {
        Credential::Session { .. } => true,
        Credential::Token { .. } if p.is_restricted() => false,
        Credential::Token { .. } => match action {
            TokenAction::List => scoped(&[Scope::Read, Scope::Write, Scope::Admin]),
            TokenAction::Revoke => scoped(&[Scope::Write, Scope::Admin]),
            TokenAction::Create => scoped(&[Scope::Admin]),
        },
        Credential::RepoPull { .. } | Credential::Worker => false,
    };
    if may {
        return Ok(());
    }
    let what = match action {
        TokenAction::List => "listing tokens needs a dashboard session or an unrestricted token with the read, write or admin scope",
        TokenAction::Create => "creating tokens needs a dashboard session or an unrestricted token with the admin scope",
        TokenAction::Revoke => "revoking tokens needs a dashboard session or an unrestricted token with the write or admin scope",
    };
    Err(ApiError::Forbidden(what.into()))
}
