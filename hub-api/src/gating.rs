//! Gated repos, as on the Hugging Face Hub: metadata stays visible, file
//! downloads need an accepted access request (members of the repo's namespace
//! and callers with write access always pass). Refusals carry
//! `X-Error-Code: GatedRepo` so `huggingface_hub` raises `GatedRepoError`.
//!
//! This module also owns the one read-and-gate decision every byte route
//! makes: [`load_repo_for_download`] (or [`authorize`] for a repo already
//! loaded) checks visibility and the gate and returns a [`Download`], the
//! only way to stream a file ([`Download::stream`]), read one into memory
//! ([`Download::read_small`]), sign an LFS download link
//! ([`Download::lfs_link`]) or mint a worker pull token
//! (`auth::service_tokens::pull_token`). Only this module can make a
//! `Download`, so a byte route cannot skip the decision; a unit test below
//! keeps raw storage reads out of every other module that serves requests.
//!
//! A credential minted from a `Download` (a signed LFS link, a Xet CAS token
//! and its data links, a worker pull token) records on whose behalf the
//! decision was made ([`Download::grant`], an `auth::grants::Grant`) and is
//! decided again each time it is used ([`recheck`]): access withdrawn (a
//! member removed, a repo made private, a request rejected, a token revoked,
//! an endpoint deleted, a job ended) ends it, within the bound documented in
//! `auth::grants`, not at its expiry.
//!
//! What stays visible on a gated repo (metadata, as on the HF Hub): repo info,
//! the tree and paths-info listings (names, sizes, oids), card data, and the
//! rendered model card (README.md) on the dashboard's repo page. Everything
//! that returns a file's contents or a link to them is gated: `/resolve`
//! (README.md included), the LFS batch `download` operation and its links,
//! the dashboard's file view and raw links, and endpoints (pull tokens).

use crate::auth::access::{self, Access, Action, Standing};
use crate::auth::grants::{Decided, Grant, Refusal};
use crate::auth::jwt::{expires_in, ISSUER};
use crate::auth::{Auth, Credential, Principal, Scope};
use crate::db::repos::RepoRow;
use crate::domain::{RepoId, RepoType, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::refresh_cache::Lookup;
use crate::registry::{self, RepoCtx};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Proof that a caller may read a repo's file contents: the repo is visible to
/// them and its gate, if any, lets them through. Made only by this module.
#[derive(Debug, Clone)]
pub struct Download {
    ctx: RepoCtx,
    grant: Grant,
}

impl Download {
    /// The repo and the caller's access to it.
    pub fn ctx(&self) -> &RepoCtx {
        &self.ctx
    }

    /// The repo.
    pub fn repo(&self) -> &RepoRow {
        &self.ctx.repo
    }

    /// On whose behalf the bytes are read: what a credential minted from this
    /// decision records, so the decision is made again when it is used
    /// ([`recheck`]).
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// Streams a file of this repo (or a byte range of it). The caller found
    /// `sha` in one of the repo's commits.
    pub async fn stream(
        &self,
        state: &AppState,
        sha: &Sha256,
        range: Option<Range<u64>>,
    ) -> ApiResult<
        futures::stream::BoxStream<'static, Result<bytes::Bytes, crate::storage::StorageError>>,
    > {
        Ok(state.storage.read_blob(sha, range).await?)
    }

    /// Reads a bounded byte range of a file of this repo into memory (the
    /// caller bounds the range).
    pub async fn read_range(
        &self,
        state: &AppState,
        sha: &Sha256,
        range: Range<u64>,
    ) -> ApiResult<bytes::Bytes> {
        Ok(state.storage.read_range(sha, range).await?)
    }

    /// Reads a small file of this repo into memory (`None` over
    /// `registry::files::MAX_INTERPRETED`).
    pub async fn read_small(
        &self,
        state: &AppState,
        sha256: &str,
        size: i64,
    ) -> ApiResult<Option<bytes::Bytes>> {
        registry::files::read_small(state, sha256, size).await
    }

    /// A signed link to an LFS object of this repo (`GET /lfs/objects/{sha}`),
    /// valid [`LINK_TTL_S`]. The link records the grant, and using it makes
    /// the decision again ([`open_lfs_link`]): a link stops working when the
    /// reader loses access (a rejected request, a removed member, a revoked
    /// token).
    pub async fn lfs_link(&self, state: &AppState, sha: &Sha256) -> ApiResult<String> {
        let claims = LinkClaims {
            iss: ISSUER.into(),
            aud: LINK_AUDIENCE.into(),
            exp: expires_in(LINK_TTL_S),
            repo: self.ctx.repo.id,
            oid: sha.to_string(),
            reader: self.grant,
        };
        let token = state.keys.sign(&claims).await.map_err(ApiError::internal)?;
        Ok(format!(
            "{}/lfs/objects/{sha}?token={token}",
            state.public_url
        ))
    }
}

/// How long LFS download links stay valid.
pub const LINK_TTL_S: i64 = 3600;
const LINK_AUDIENCE: &str = "paddock-lfs-get";

#[derive(Debug, Serialize, Deserialize)]
struct LinkClaims {
    iss: String,
    aud: String,
    exp: i64,
    repo: i64,
    oid: String,
    /// On whose behalf (the JSON of the reader recorded before grants reads
    /// as the same grant).
    reader: Grant,
}

/// Finds a repo and decides whether the caller may read its files: a repo the
/// caller cannot see is `RepoNotFound` (404), a gate they have not passed is
/// `GatedRepo` (403).
pub async fn load_repo_for_download(
    state: &AppState,
    auth: &Auth,
    kind: RepoType,
    id: &RepoId,
) -> ApiResult<Download> {
    let ctx = registry::load_repo(state, auth, kind, id, Access::Read).await?;
    authorize(state, auth, ctx).await
}

/// The gate alone, for a caller who builds on a repo's files without
/// writing to it (a pull request's commits, their preupload): someone who
/// may not read a gated repo's files does not commit on top of them, nor
/// learn its `.gitignore`/`.gitattributes` through what preupload answers.
pub async fn require_gate(state: &AppState, auth: &Auth, ctx: &RepoCtx) -> ApiResult<()> {
    authorize(state, auth, ctx.clone()).await.map(|_| ())
}

/// [`load_repo_for_download`] with the repo row from the per-process repo
/// cache (`repo_cache`): `/resolve`'s hot path.
pub async fn load_repo_for_resolve(
    state: &AppState,
    auth: &Auth,
    kind: RepoType,
    id: &RepoId,
) -> ApiResult<Download> {
    let ctx = registry::load_repo_cached(state, auth, kind, id, Access::Read).await?;
    authorize(state, auth, ctx).await
}

/// The user whose access grants a credential may use for `repo`'s gate:
/// sessions, and tokens with the read scope whose restriction covers the
/// repo. Other credentials (restricted elsewhere, no read scope) act as
/// anonymous callers, as they do for private repos.
fn gate_user(p: &Principal, repo: &RepoRow) -> Option<i64> {
    match &p.credential {
        Credential::Session { .. } => Some(p.user_id),
        Credential::Token { .. }
            if p.has_scope(Scope::Read)
                && p.may_touch_repo(&repo.namespace, &repo.full_id(), &repo.repo_type) =>
        {
            Some(p.user_id)
        }
        _ => None,
    }
}

/// The grant of a user's own credential (a session, or the API token it
/// is), for credentials minted from a decision made for it; None for pull and
/// worker credentials.
pub fn user_grant(p: &Principal) -> Option<Grant> {
    match &p.credential {
        Credential::Session { version, .. } => Some(Grant::session(p.user_id, *version)),
        Credential::Token { id, .. } => Some(Grant::token(p.user_id, *id)),
        Credential::RepoPull { .. } | Credential::Worker => None,
    }
}

fn gated(repo: &RepoRow) -> ApiError {
    ApiError::GatedRepo(format!("{} {}", repo.kind().as_str(), repo.full_id()))
}

/// The decision for a repo the caller can already see (`ctx` from
/// `registry::load_repo`).
pub async fn authorize(state: &AppState, auth: &Auth, ctx: RepoCtx) -> ApiResult<Download> {
    access::require(ctx.access, Access::Read)?;
    let p = auth.principal();
    if let Some(Principal {
        credential: Credential::RepoPull { repo_id, grant },
        ..
    }) = p
    {
        // A worker pulling an endpoint's weights or a job's repos: the token
        // was minted from a `Download` for this repo, and its grant was
        // decided again when it was presented (`service_tokens::principal`).
        if *repo_id == ctx.repo.id {
            return Ok(Download { ctx, grant: *grant });
        }
    }
    let user = p.and_then(|p| gate_user(p, &ctx.repo));
    let grant = match (user, p.and_then(user_grant)) {
        (Some(_), Some(g)) => g,
        _ => Grant::Anonymous,
    };
    if ctx.repo.gated.is_none() || ctx.access >= Access::Write {
        return Ok(Download { ctx, grant });
    }
    match user {
        Some(uid) if user_passes_gate(state, &ctx.repo, uid).await? => Ok(Download { ctx, grant }),
        _ => Err(gated(&ctx.repo)),
    }
}

/// Whether a user's account passes a gated repo's gate: the namespace's own
/// user, a member of its organization (any role), or an accepted access
/// request. (Write access, site admins included, passes before this.)
async fn user_passes_gate(state: &AppState, repo: &RepoRow, uid: i64) -> ApiResult<bool> {
    if uid == repo.namespace_id {
        return Ok(true);
    }
    if crate::db::namespaces::member_role(&state.db, repo.namespace_id, uid)
        .await?
        .is_some()
    {
        return Ok(true);
    }
    let status: Option<(String,)> =
        sqlx::query_as("SELECT status FROM access_requests WHERE repo_id = $1 AND user_id = $2")
            .bind(repo.id)
            .bind(uid)
            .fetch_optional(&state.db)
            .await?;
    Ok(matches!(status, Some((s,)) if s == "accepted"))
}

/// What a user's account may do with a repo (their role in its namespace, or
/// public read), without any token's limits.
async fn user_access(state: &AppState, repo: &RepoRow, uid: i64) -> ApiResult<Access> {
    let Some(user) = crate::db::namespaces::user_by_id(&state.db, uid).await? else {
        return Ok(Access::None);
    };
    let account = access::account(&user);
    let standing = Standing::load_repo(&state.db, Some(&account), repo).await?;
    Ok(access::decide(Some(&account), &standing, Action::ReadRepo).unwrap_or(Access::None))
}

/// The decision for a user's account (`None`: an anonymous caller), made now
/// for `need` on `repo`; reading a gated repo also needs the gate. The
/// [`Download`] records `grant`.
async fn decide_for(
    state: &AppState,
    repo: RepoRow,
    user: Option<i64>,
    need: Access,
    grant: Grant,
) -> ApiResult<Download> {
    let have = match user {
        None if !repo.private => Access::Read,
        None => Access::None,
        Some(uid) => user_access(state, &repo, uid).await?,
    };
    access::require(have, need)?;
    let ctx = RepoCtx { repo, access: have };
    if ctx.repo.gated.is_none() || have >= Access::Write {
        return Ok(Download { ctx, grant });
    }
    match user {
        Some(uid) if user_passes_gate(state, &ctx.repo, uid).await? => Ok(Download { ctx, grant }),
        _ => Err(gated(&ctx.repo)),
    }
}

/// Why a token's grant is withdrawn.
pub const TOKEN_WITHDRAWN: &str =
    "the access token this credential was issued to has been revoked or has expired";
/// Why an endpoint's pull grant is withdrawn.
pub const ENDPOINT_WITHDRAWN: &str =
    "the inference endpoint this credential was issued for no longer exists or serves another repository";
/// Why a job's pull grant is withdrawn.
pub const JOB_WITHDRAWN: &str =
    "the fine-tuning job this credential was issued for has ended or is held by another claim";

/// Why a dashboard session's grant is withdrawn.
pub const SESSION_WITHDRAWN: &str =
    "the dashboard session this credential was issued to has ended (signed out); sign in again";

/// Whether a user's credential is still valid: the API token `token` (not
/// revoked, not expired), or the session issued under `session` (the user has
/// not signed out since). Neither: the account alone decides.
async fn credential_withdrawn(
    state: &AppState,
    uid: i64,
    token: Option<i64>,
    session: Option<i32>,
) -> ApiResult<Option<&'static str>> {
    if let Some(id) = token {
        let valid = crate::db::tokens::by_id(&state.db, id)
            .await?
            .is_some_and(|t| {
                t.user_id == uid
                    && t.revoked_at.is_none()
                    && t.expires_at.is_none_or(|e| e > chrono::Utc::now())
            });
        if !valid {
            return Ok(Some(TOKEN_WITHDRAWN));
        }
    }
    if let Some(version) = session {
        let current = crate::db::namespaces::user_by_id(&state.db, uid)
            .await?
            .map(|u| u.session_version);
        if current != Some(version) {
            return Ok(Some(SESSION_WITHDRAWN));
        }
    }
    Ok(None)
}

/// A grant's decision made from the database, now.
async fn decide_grant(
    state: &AppState,
    grant: Grant,
    repo_id: i64,
    need: Access,
) -> ApiResult<Decided> {
    let Some(repo) = crate::db::repos::by_id(&state.db, repo_id).await? else {
        return Ok(Decided {
            namespace_id: None,
            verdict: Err(Refusal::RepoNotFound),
        });
    };
    let namespace_id = Some(repo.namespace_id);
    let made = match grant {
        Grant::Anonymous => decide_for(state, repo, None, need, grant).await,
        Grant::User { id, token, session } => {
            match credential_withdrawn(state, id, token, session).await? {
                None => decide_for(state, repo, Some(id), need, grant).await,
                Some(why) => Err(ApiError::Unauthorized(why.into())),
            }
        }
        // Pull grants read; they never write.
        Grant::Endpoint { .. } | Grant::Job { .. } if need > Access::Read => Err(
            ApiError::Forbidden("a worker's pull credential only reads".into()),
        ),
        Grant::Endpoint { id } => match crate::db::endpoints::by_id(&state.db, id).await? {
            Some(e) if e.repo_id == Some(repo_id) => endpoint_decision(state, &e, repo).await,
            _ => Err(ApiError::Unauthorized(ENDPOINT_WITHDRAWN.into())),
        },
        Grant::Job { id, claim } => match crate::db::jobs::by_id(&state.db, id).await? {
            Some(j)
                if j.state == "running"
                    && j.claim == Some(claim)
                    && (j.base_repo_id == Some(repo_id) || j.dataset_repo_id == Some(repo_id)) =>
            {
                job_decision(state, repo, j.namespace_id, j.created_by, grant).await
            }
            _ => Err(ApiError::Unauthorized(JOB_WITHDRAWN.into())),
        },
    };
    match made {
        Ok(dl) => Ok(Decided {
            namespace_id,
            verdict: Ok((dl.ctx.repo, dl.ctx.access)),
        }),
        Err(e) => match Refusal::of(&e) {
            Some(r) => Ok(Decided {
                namespace_id,
                verdict: Err(r),
            }),
            None => Err(e),
        },
    }
}

/// The decision for a grant recorded in a credential (a signed link, a Xet
/// token or data link, a pull token), made again now for `need` on the repo
/// `repo_id`. Answered from the per-process grant cache while it can answer
/// (`auth::grants`: every change that may withdraw a grant drops it, and an
/// entry lives `--auth-cache-ttl-secs` at most), else from the database. A
/// refusal is the error the decision gives when the credential is minted:
/// `RepoNotFound`, `GatedRepo`, `Forbidden`, or `Unauthorized` when what it
/// was minted for is gone (a revoked token, a deleted endpoint, an ended job).
pub async fn recheck(
    state: &AppState,
    grant: Grant,
    repo_id: i64,
    need: Access,
) -> ApiResult<Download> {
    let key = (grant, repo_id, need > Access::Read);
    let cache = &state.tenancy.grants;
    let decided = if !state.resolved.rows.is_live() {
        // Nobody tells this process of repo row changes: read them.
        decide_grant(state, grant, repo_id, need).await?
    } else {
        match cache.get(&key) {
            Lookup::Fresh(d) => d,
            Lookup::Stale { value, epoch } => {
                let (state, cache) = (state.clone(), cache.clone());
                tokio::spawn(async move {
                    match decide_grant(&state, grant, repo_id, need).await {
                        Ok(d) => cache.put(key, d, epoch),
                        Err(e) => {
                            tracing::debug!(error = %e, "deciding a grant again failed");
                            cache.reload_failed(&key);
                        }
                    }
                });
                value
            }
            Lookup::Miss { epoch } => {
                let d = decide_grant(state, grant, repo_id, need).await?;
                cache.put(key, d.clone(), epoch);
                d
            }
        }
    };
    match decided.verdict {
        Ok((repo, access)) => Ok(Download {
            ctx: RepoCtx { repo, access },
            grant,
        }),
        Err(r) => Err(r.into_error()),
    }
}

/// Opens a signed LFS download link for `sha`: checks the signature, then
/// makes the read-and-gate decision again for the grant it records.
pub async fn open_lfs_link(state: &AppState, token: &str, sha: &Sha256) -> ApiResult<Download> {
    let c: LinkClaims = state
        .keys
        .verify(token, LINK_AUDIENCE)
        .await
        .map_err(|_| ApiError::InvalidSignature)?;
    if c.oid != sha.as_str() {
        return Err(ApiError::InvalidSignature);
    }
    recheck(state, c.reader, c.repo, Access::Read).await
}

/// The decision for an inference endpoint's weights, made whenever a worker is
/// handed a pull token and whenever one is used: the endpoint's creator must
/// still be allowed to read the files (an endpoint of the repo's own
/// namespace always is). The [`Download`] records the endpoint's grant.
pub async fn endpoint_download(
    state: &AppState,
    e: &crate::db::endpoints::EndpointRow,
) -> ApiResult<Download> {
    let repo_id = e.repo_id.ok_or(ApiError::RepoNotFound)?;
    let repo = crate::db::repos::by_id(&state.db, repo_id)
        .await?
        .ok_or(ApiError::RepoNotFound)?;
    endpoint_decision(state, e, repo).await
}

async fn endpoint_decision(
    state: &AppState,
    e: &crate::db::endpoints::EndpointRow,
    repo: RepoRow,
) -> ApiResult<Download> {
    let grant = Grant::Endpoint { id: e.id };
    if repo.namespace_id == e.namespace_id {
        return Ok(Download {
            ctx: RepoCtx {
                repo,
                access: Access::Read,
            },
            grant,
        });
    }
    let creator: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT created_by FROM endpoints WHERE id = $1")
            .bind(e.id)
            .fetch_optional(&state.db)
            .await?;
    let creator = creator.and_then(|c| c.0);
    decide_for(state, repo, creator, Access::Read, grant).await
}

/// The read-and-gate decision for a repo a fine-tuning job reads, made for
/// its creator each time the job is claimed and each time a pull token of the
/// claim is used: a repo of the job's own namespace is read like an
/// endpoint's weights; another namespace's repo only as the creator may (a
/// gated one needs their accepted request). `grant` is the claim's
/// ([`Grant::Job`]).
pub async fn job_download(
    state: &AppState,
    repo_id: i64,
    job_namespace_id: i64,
    created_by: Option<i64>,
    grant: Grant,
) -> ApiResult<Download> {
    let repo = crate::db::repos::by_id(&state.db, repo_id)
        .await?
        .ok_or(ApiError::RepoNotFound)?;
    job_decision(state, repo, job_namespace_id, created_by, grant).await
}

async fn job_decision(
    state: &AppState,
    repo: RepoRow,
    job_namespace_id: i64,
    created_by: Option<i64>,
    grant: Grant,
) -> ApiResult<Download> {
    if repo.namespace_id == job_namespace_id {
        return Ok(Download {
            ctx: RepoCtx {
                repo,
                access: Access::Read,
            },
            grant,
        });
    }
    decide_for(state, repo, created_by, Access::Read, grant).await
}

/// An access request the hub cannot take (400 `invalid_request`).
#[derive(Debug, thiserror::Error)]
pub enum AccessRequestError {
    #[error("status {0:?} is not one of pending, accepted, rejected")]
    Status(String),
    #[error("{0} is not gated; access requests apply only to gated repositories")]
    NotGated(String),
    #[error("the rejection reason must be at most 1000 characters, without NUL")]
    Reason,
    #[error("send exactly one of user and requestId")]
    UserOrRequestId,
    #[error("{user} already has access to {repo}")]
    AlreadyGranted { user: String, repo: String },
}

/// A request's status.
pub const STATUSES: &[&str] = &["pending", "accepted", "rejected"];

/// Parses a status from a URL or body.
pub fn parse_status(s: &str) -> ApiResult<&'static str> {
    STATUSES
        .iter()
        .find(|x| **x == s)
        .copied()
        .ok_or_else(|| AccessRequestError::Status(crate::error::clip(s, 40)).into())
}

fn require_gated(ctx: &RepoCtx) -> ApiResult<&str> {
    ctx.repo
        .gated
        .as_deref()
        .ok_or_else(|| AccessRequestError::NotGated(ctx.repo.full_id()).into())
}

/// A user asks for access: `auto` gating accepts at once, `manual` waits for
/// an admin. Asking again returns the existing request unchanged.
pub async fn request_access(
    state: &AppState,
    p: &crate::auth::Principal,
    ctx: &RepoCtx,
    fields: &serde_json::Value,
) -> ApiResult<crate::db::access_requests::AccessRequest> {
    let mode = require_gated(ctx)?;
    let status = if mode == "auto" {
        "accepted"
    } else {
        "pending"
    };
    let mut tx = state.db.begin().await?;
    let existing = crate::db::access_requests::get(&mut *tx, ctx.repo.id, p.user_id).await?;
    if let Some(r) = existing {
        return Ok(r);
    }
    let r =
        crate::db::access_requests::create(&mut tx, ctx.repo.id, p.user_id, status, fields).await?;
    crate::audit::record(
        &mut *tx,
        Some(p),
        ctx.repo.namespace_id,
        if status == "accepted" {
            "access_request.auto_accepted"
        } else {
            "access_request.created"
        },
        &format!("{}:{}", ctx.repo.repo_type, ctx.repo.full_id()),
        serde_json::json!({"user": p.name}),
    )
    .await?;
    tx.commit().await?;
    crate::signals::invalidate(state, crate::signals::Invalidation::Gate(ctx.repo.id)).await;
    Ok(r)
}

/// An admin decides on a user's request (or grants access without one when
/// `create` is set). Recorded in the audit log.
pub async fn decide(
    state: &AppState,
    admin: &crate::auth::Principal,
    ctx: &RepoCtx,
    user: &crate::db::namespaces::User,
    status: &'static str,
    reason: Option<&str>,
    create: bool,
) -> ApiResult<()> {
    require_gated(ctx)?;
    if reason.is_some_and(|r| r.chars().count() > 1000 || r.contains('\0')) {
        return Err(AccessRequestError::Reason.into());
    }
    let mut tx = state.db.begin().await?;
    let existing = crate::db::access_requests::get(&mut *tx, ctx.repo.id, user.id).await?;
    if existing.is_none() && !create {
        return Err(ApiError::NotFound("access request"));
    }
    crate::db::access_requests::set_status(
        &mut *tx,
        ctx.repo.id,
        user.id,
        status,
        if status == "rejected" { reason } else { None },
        admin.user_id,
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        Some(admin),
        ctx.repo.namespace_id,
        &format!(
            "access_request.{}",
            if existing.is_none() {
                "granted"
            } else {
                status
            }
        ),
        &format!("{}:{}", ctx.repo.repo_type, ctx.repo.full_id()),
        serde_json::json!({"user": user.name, "status": status}),
    )
    .await?;
    tx.commit().await?;
    // Links, Xet tokens and pull tokens minted for the user are decided again.
    crate::signals::invalidate(state, crate::signals::Invalidation::Gate(ctx.repo.id)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Reads of stored bytes that request-serving code may make without a
    /// [`super::Download`], each with why it hands no file contents out.
    const ALLOWED: &[(&str, &str, &str)] = &[
        (
            "dashboard/repo.rs",
            "read_small(",
            "the repo page renders README.md: the model card is metadata, shown on gated repos as on the HF Hub",
        ),
        (
            "routes/hf/upload.rs",
            "read_path(",
            "preupload reads .gitattributes to choose LFS; the bytes are never returned",
        ),
        (
            "routes/inference/job_runner.rs",
            "read_small(",
            "a job's result file is read back by the digest of the bytes the worker has just \
             uploaded (to tell text from binary and keep README.md/config.json for the commit); \
             the bytes are never returned",
        ),
        (
            "routes/xet/download.rs",
            "storage.read_",
            "a Xet data link serves xorb ranges signed into a reconstruction for a CAS read \
             token, which `xet-read-token` mints only after `load_repo_for_download`; the link \
             records the token's grant and is decided again (`gating::recheck`) when used",
        ),
        (
            "routes/xet/upload.rs",
            "storage.read_",
            "a shard upload recomputes each file's SHA-256 from xorbs its namespace uploaded; \
             the bytes are never returned",
        ),
    ];

    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Where `needle` occurs in `code` other than as a method call (`x.needle`).
    fn free_calls(code: &str, needle: &str) -> usize {
        code.match_indices(needle)
            .filter(|(i, _)| !code[..*i].ends_with('.'))
            .count()
    }

    /// No route or dashboard page reads stored bytes except through a
    /// `Download` (the read-and-gate decision): a new byte route that calls
    /// the storage directly fails here.
    #[test]
    fn byte_reads_go_through_the_decision() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src.join("routes"), &mut files);
        walk(&src.join("dashboard"), &mut files);
        let mut bad = Vec::new();
        for f in files {
            let rel = f
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&f).unwrap();
            // Method chains may span lines: compare without whitespace.
            let code: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let mut hits = Vec::new();
            if code.contains("storage.read_") {
                hits.push("storage.read_");
            }
            for needle in ["read_small(", "read_path(", "read_blob(", "read_range("] {
                if free_calls(&code, needle) > 0 {
                    hits.push(needle);
                }
            }
            for h in hits {
                if !ALLOWED.iter().any(|(file, n, _)| *file == rel && *n == h) {
                    bad.push(format!("{rel}: {h}"));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "stored bytes read outside gating::Download (use gating::load_repo_for_download): {bad:?}"
        );
    }
}
