//! Authorization: the one place that decides what a caller may do.
//!
//! [`decide`] takes the caller (a [`Principal`] or nobody), their
//! [`Standing`] toward the object (the namespace, their role in it, and the
//! repo when the object is one) and an [`Action`], and answers the level the
//! caller holds ([`Access`]) or why not ([`Denied`]: 401, 404 "looks
//! missing", or 403 with a reason). Every route, the gateway and the
//! dashboard ask it; only loading the standing touches the database, so the
//! rule itself is a pure function with a table test (`decide_table` below).
//!
//! The answers follow `docs/API.md` and `docs/API-v1.md`: an object of another
//! tenant the caller may not see (a private repo, another namespace's
//! endpoints, an organization they are not in) is a 404 exactly like a
//! missing one; 403 is for objects the caller can see but may not change.

use super::principal::{Principal, Scope};
use crate::db;
use crate::db::namespaces::Role;
use crate::db::repos::RepoRow;
use crate::error::ApiError;
use sqlx::PgExecutor;

/// What a caller may do with a repo or namespace, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Write,
    Admin,
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

/// Everything the hub distinguishes when it authorizes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read a repo's metadata and files (HF reads, git/LFS downloads, repo pages).
    ReadRepo,
    /// Push to a repo: commits, branches, tags, LFS uploads.
    WriteRepo,
    /// Administer a repo: settings, delete, move, its access requests.
    AdminRepo,
    /// Ask for access to a gated repo the caller can see: a change made in
    /// the caller's name, so it needs a credential that may change things (a
    /// session or a token with the write scope) whose restriction covers the
    /// repo. (Reading one's own request needs only the restriction.)
    RequestRepoAccess,
    /// Like or unlike a repo the caller can see: a change made in the
    /// caller's name, decided as [`Action::RequestRepoAccess`].
    LikeRepo,
    /// Create a repo in the namespace (or move one into it).
    CreateRepo,
    /// Create an organization named like the standing's namespace.
    CreateOrg,
    /// See a namespace's members and quota, its organization pages.
    ReadNamespace,
    /// Manage an organization: members, roles, its audit log, deleting it.
    AdminNamespace,
    /// Remove oneself from an organization.
    LeaveNamespace,
    /// See a namespace's inference endpoints.
    ReadEndpoints,
    /// Create, change, pause, resume or delete a namespace's endpoints.
    ManageEndpoints,
    /// Read a namespace's metered endpoint usage.
    ReadUsage,
    /// Call an endpoint through the gateway (`protected`: not `public`).
    CallEndpoint { protected: bool },
    /// List, mint or revoke one's own API tokens.
    ManageTokens(TokenAction),
    /// The site-admin API (users, quotas, signing keys, worker tokens).
    AdministerSite,
}

/// What an object the caller may not see answers: 404 with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// `repo_not_found` (the HF clients' `RepoNotFound`).
    Repo,
    /// `not_found`, naming the object (`namespace`, `organization`, `endpoint`).
    Object(&'static str),
}

/// Why [`decide`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401 `unauthorized`: the action needs credentials.
    Unauthenticated(&'static str),
    /// 404: the caller may not see the object; answered like a missing one.
    Hidden(Hidden),
    /// 403 `forbidden`: the caller sees the object but may not do this.
    Forbidden(String),
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Unauthenticated(why) => ApiError::Unauthorized(why.into()),
            Denied::Hidden(Hidden::Repo) => ApiError::RepoNotFound,
            Denied::Hidden(Hidden::Object(what)) => ApiError::NotFound(what),
            Denied::Forbidden(why) => ApiError::Forbidden(why),
        }
    }
}

/// The 401 message of actions that need any credential.
pub const AUTH_REQUIRED: &str = "authentication required: send Authorization: Bearer <token>";

/// The caller's standing toward one object: the namespace (or the repo in it)
/// and the caller's role there. Built by the loaders below (one query at most);
/// [`Standing::missing`] stands for an object that does not exist, which is
/// refused like one the caller may not see.
#[derive(Debug, Clone, Copy)]
pub struct Standing<'a> {
    /// The namespace's name (`None`: it does not exist, or the action has no object).
    namespace: Option<&'a str>,
    /// The caller's role in the namespace: site admins and the user themself are admins.
    role: Option<Role>,
    repo: Option<&'a RepoRow>,
    /// What a hidden object is called in a 404.
    noun: &'static str,
}

impl<'a> Standing<'a> {
    /// No object: actions on the caller's own account or on the site.
    pub fn none() -> Self {
        Self {
            namespace: None,
            role: None,
            repo: None,
            noun: "namespace",
        }
    }

    /// A namespace that does not exist (answered like one the caller may not see).
    pub fn missing(noun: &'static str) -> Self {
        Self {
            noun,
            ..Self::none()
        }
    }

    /// A namespace where the caller's role is already known (`role` as
    /// [`namespace_role`] reports it).
    pub fn namespace(name: &'a str, role: Option<Role>, noun: &'static str) -> Self {
        Self {
            namespace: Some(name),
            role,
            repo: None,
            noun,
        }
    }

    /// A repo where the caller's role in its namespace is already known.
    pub fn repo(repo: &'a RepoRow, role: Option<Role>) -> Self {
        Self {
            namespace: Some(&repo.namespace),
            role,
            repo: Some(repo),
            noun: "repository",
        }
    }

    /// Loads the caller's standing in a namespace.
    pub async fn load_namespace(
        db: impl PgExecutor<'_>,
        p: Option<&Principal>,
        ns: &'a db::namespaces::Namespace,
        noun: &'static str,
    ) -> sqlx::Result<Self> {
        Self::load_in(db, p, ns.id, &ns.name, noun).await
    }

    /// Loads the caller's standing in the namespace `id` named `name`.
    pub async fn load_in(
        db: impl PgExecutor<'_>,
        p: Option<&Principal>,
        id: i64,
        name: &'a str,
        noun: &'static str,
    ) -> sqlx::Result<Self> {
        let role = load_role(db, p, id).await?;
        Ok(Self::namespace(name, role, noun))
    }

    /// The caller's standing in the namespace `id` named `name`, with the role
    /// from the per-process role cache (`auth::cache::RoleCache`): no database
    /// round trip for a caller seen in the last TTL. For hot paths (the
    /// gateway); a membership change made on another replica is seen within
    /// the TTL.
    pub async fn cached_in(
        state: &crate::state::AppState,
        p: Option<&Principal>,
        id: i64,
        name: &'a str,
        noun: &'static str,
    ) -> sqlx::Result<Self> {
        let role = match p {
            Some(p)
                if !matches!(
                    p.credential,
                    super::Credential::RepoPull { .. } | super::Credential::Worker
                ) =>
            {
                if p.is_admin || p.user_id == id {
                    Some(Role::Admin)
                } else {
                    state
                        .tenancy
                        .roles
                        .member_role(&state.db, p.user_id, id)
                        .await?
                }
            }
            _ => None,
        };
        Ok(Self::namespace(name, role, noun))
    }

    /// Loads the caller's standing toward a repo.
    pub async fn load_repo(
        db: impl PgExecutor<'_>,
        p: Option<&Principal>,
        repo: &'a RepoRow,
    ) -> sqlx::Result<Self> {
        let role = match p {
            Some(p) if p.may_touch_repo(&repo.namespace, &repo.full_id(), &repo.repo_type) => {
                load_role(db, Some(p), repo.namespace_id).await?
            }
            _ => None,
        };
        Ok(Self::repo(repo, role))
    }

    /// The caller's role in the namespace (for display; decisions go through [`decide`]).
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// Whether `p` may do `action` here.
    pub fn allows(&self, p: Option<&Principal>, action: Action) -> bool {
        decide(p, self, action).is_ok()
    }
}

/// The role of a caller who can hold one (not pull or worker tokens).
async fn load_role(
    db: impl PgExecutor<'_>,
    p: Option<&Principal>,
    namespace_id: i64,
) -> sqlx::Result<Option<Role>> {
    match p {
        Some(p)
            if !matches!(
                p.credential,
                super::Credential::RepoPull { .. } | super::Credential::Worker
            ) =>
        {
            namespace_role(db, p, namespace_id).await
        }
        _ => Ok(None),
    }
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

/// The rule. See [`Action`] for what each action covers; the table test
/// `decide_table` spells out every caller kind × role × action.
pub fn decide(p: Option<&Principal>, s: &Standing, action: Action) -> Result<Access, Denied> {
    use Action::*;
    let hidden = Denied::Hidden(if s.repo.is_some() {
        Hidden::Repo
    } else {
        Hidden::Object(s.noun)
    });
    match action {
        ReadRepo | WriteRepo | AdminRepo => {
            let need = match action {
                ReadRepo => Access::Read,
                WriteRepo => Access::Write,
                _ => Access::Admin,
            };
            let Some(repo) = s.repo else {
                return Err(Denied::Hidden(Hidden::Repo));
            };
            let have = repo_level(p, s.role, repo);
            require(have, need)?;
            Ok(have)
        }
        RequestRepoAccess | LikeRepo => {
            // Asked after `ReadRepo` succeeded: only the credential is left.
            let p = p.ok_or(Denied::Unauthenticated(AUTH_REQUIRED))?;
            let Some(repo) = s.repo else {
                return Err(Denied::Hidden(Hidden::Repo));
            };
            if !p.may_touch_repo(&repo.namespace, &repo.full_id(), &repo.repo_type) {
                return Err(Denied::Forbidden(
                    "this token is restricted to other repositories".into(),
                ));
            }
            // It changes state in the caller's name: a read-only token may not.
            if !p.has_scope(Scope::Write) {
                return Err(Denied::Forbidden(
                    if action == LikeRepo {
                        "liking a repository needs a token with the write scope"
                    } else {
                        "asking for access needs a token with the write scope"
                    }
                    .into(),
                ));
            }
            Ok(Access::Read)
        }
        CreateRepo => {
            let p = p.ok_or(Denied::Unauthenticated(AUTH_REQUIRED))?;
            let ns = s.namespace.ok_or(hidden)?;
            if p.has_scope(Scope::Write)
                && p.may_touch_namespace(ns)
                && s.role.is_some_and(|r| r >= Role::Write)
            {
                return Ok(Access::Write);
            }
            Err(Denied::Forbidden(format!(
                "you cannot create repositories in {ns:?}"
            )))
        }
        CreateOrg => {
            let p = p.ok_or(Denied::Unauthenticated(AUTH_REQUIRED))?;
            let name = s.namespace.unwrap_or_default();
            if p.has_scope(Scope::Write) && p.may_touch_namespace(name) {
                return Ok(Access::Admin);
            }
            Err(Denied::Forbidden(
                "creating an organization needs a session or a token with the write scope".into(),
            ))
        }
        ReadNamespace | AdminNamespace | LeaveNamespace => {
            let ns = s.namespace.ok_or(hidden.clone())?;
            let have = namespace_level(p, s.role, ns);
            let need = match action {
                ReadNamespace => Access::Read,
                // Leaving needs a credential that may change things (write
                // scope); without it, only an admin may remove the member.
                LeaveNamespace if p.is_some_and(|p| p.has_scope(Scope::Write)) => Access::Read,
                _ => Access::Admin,
            };
            if have >= need {
                return Ok(have);
            }
            if have == Access::None {
                return Err(hidden);
            }
            Err(Denied::Forbidden(format!(
                "only admins of the organization can do this ({})",
                s.noun
            )))
        }
        ReadEndpoints | ReadUsage | ManageEndpoints | CallEndpoint { .. } => {
            if action == (CallEndpoint { protected: false }) {
                return Ok(Access::Read);
            }
            let Some(p) = p else {
                return Err(Denied::Unauthenticated(match action {
                    CallEndpoint { .. } => {
                        "this endpoint is protected: send a token with the inference scope"
                    }
                    _ => AUTH_REQUIRED,
                }));
            };
            let ns = s.namespace.ok_or(hidden.clone())?;
            let Some(role) = s.role.filter(|_| p.may_touch_namespace(ns)) else {
                return Err(hidden);
            };
            let level = role_level(Some(role));
            if let CallEndpoint { .. } = action {
                if !(p.has_scope(Scope::Inference) || p.has_scope(Scope::Write)) {
                    return Err(Denied::Forbidden(
                        "calling an endpoint needs a token with the inference or write scope"
                            .into(),
                    ));
                }
                return Ok(level);
            }
            let need = if action == ManageEndpoints {
                Role::Write
            } else {
                Role::Read
            };
            if role < need {
                return Err(Denied::Forbidden(format!(
                    "this needs the {} role in {ns}",
                    need.as_str()
                )));
            }
            let (scope, scoped) = if need >= Role::Write {
                (Scope::Write, p.has_scope(Scope::Write))
            } else {
                // Reading endpoints and usage is part of calling them.
                (
                    Scope::Read,
                    p.has_scope(Scope::Read) || p.has_scope(Scope::Inference),
                )
            };
            if !scoped {
                return Err(Denied::Forbidden(format!(
                    "this needs a token with the {} scope",
                    scope.as_str()
                )));
            }
            Ok(level)
        }
        ManageTokens(what) => {
            let p = p.ok_or(Denied::Unauthenticated(AUTH_REQUIRED))?;
            may_manage_tokens(p, what).map(|_| Access::Admin)
        }
        AdministerSite => {
            let p = p.ok_or(Denied::Unauthenticated(AUTH_REQUIRED))?;
            if p.is_admin && p.has_scope(Scope::Admin) {
                return Ok(Access::Admin);
            }
            Err(Denied::Forbidden(
                "only site administrators can do this (with a session or an admin-scoped token)"
                    .into(),
            ))
        }
    }
}

/// Whether `p` may do a site-admin action.
pub fn is_site_admin(p: &Principal) -> bool {
    decide(Some(p), &Standing::none(), Action::AdministerSite).is_ok()
}

fn role_level(role: Option<Role>) -> Access {
    match role {
        Some(Role::Admin) => Access::Admin,
        Some(Role::Write) => Access::Write,
        Some(Role::Read) => Access::Read,
        None => Access::None,
    }
}

/// The most a credential's scopes allow on repos and namespaces: `write`
/// covers repo administration too (delete, settings), as on the Hugging Face
/// Hub, and `admin` (which may mint a `write` token anyway) covers as much;
/// the caller's role in the namespace still limits it.
fn scope_cap(p: &Principal) -> Access {
    if p.has_scope(Scope::Admin) || p.has_scope(Scope::Write) {
        Access::Admin
    } else if p.has_scope(Scope::Read) {
        Access::Read
    } else {
        Access::None
    }
}

/// What `p` (or an anonymous caller) may do with `repo`, given their role in
/// its namespace: public repos are readable by all; a pull token reads its one
/// repo; a credential restricted elsewhere acts as an anonymous caller.
fn repo_level(p: Option<&Principal>, role: Option<Role>, repo: &RepoRow) -> Access {
    let public = if repo.private {
        Access::None
    } else {
        Access::Read
    };
    let Some(p) = p else { return public };
    if let super::Credential::RepoPull { repo_id, .. } = p.credential {
        return if repo_id == repo.id {
            Access::Read
        } else {
            public
        };
    }
    if !p.may_touch_repo(&repo.namespace, &repo.full_id(), &repo.repo_type) {
        return public;
    }
    public.max(role_level(role).min(scope_cap(p)))
}

/// What a caller may do in a namespace (a user's own or an organization):
/// `None` for outsiders and anonymous callers (they get 404), `Read` for
/// members, `Write` for the write role, `Admin` for org admins, the user
/// themself and site admins; token scopes and restrictions cap it as for repos.
fn namespace_level(p: Option<&Principal>, role: Option<Role>, ns: &str) -> Access {
    match p {
        Some(p) if p.may_touch_namespace(ns) => role_level(role).min(scope_cap(p)),
        _ => Access::None,
    }
}

/// Checks a level already granted covers `need`: a caller who cannot read
/// gets 404, one who can read but not write gets 403.
pub fn require(have: Access, need: Access) -> Result<(), Denied> {
    if have >= need {
        return Ok(());
    }
    if have == Access::None {
        return Err(Denied::Hidden(Hidden::Repo));
    }
    Err(Denied::Forbidden(match need {
        Access::Admin => "you need admin rights on this repository".into(),
        _ => "you do not have write access to this repository".into(),
    }))
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

/// A user account's own rights, without any token's limits (what a
/// dashboard session of theirs may do): for decisions made again later for a
/// user recorded earlier, such as a signed download link's reader.
pub fn account(user: &db::namespaces::User) -> Principal {
    Principal {
        user_id: user.id,
        name: user.name.clone(),
        fullname: user.fullname.clone(),
        is_admin: user.is_admin,
        credential: super::Credential::Session {
            csrf: String::new(),
            expires_at: 0,
            version: None,
        },
    }
}

/// The rule for managing API tokens: a dashboard session, or an
/// unrestricted API token with the scope the action needs (list: read, write
/// or admin; revoke: write or admin; create: admin). A token restricted to
/// some namespaces or repos, a pull token and a worker token never see or
/// touch their owner's other credentials: 403 `forbidden`.
fn may_manage_tokens(p: &Principal, action: TokenAction) -> Result<(), Denied> {
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
    Err(Denied::Forbidden(what.into()))
}

#[cfg(test)]
mod decide_table;
