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
//! What stays visible on a gated repo (metadata, as on the HF Hub): repo info,
//! the tree and paths-info listings (names, sizes, oids), card data, and the
//! rendered model card (README.md) on the dashboard's repo page. Everything
//! that returns a file's contents or a link to them is gated: `/resolve`
//! (README.md included), the LFS batch `download` operation and its links,
//! the dashboard's file view and raw links, and endpoints (pull tokens).

use crate::auth::access::{self, Access, Action, Standing};
use crate::auth::jwt::{expires_in, ISSUER};
use crate::auth::{Auth, Credential, Principal, Scope};
use crate::db::repos::RepoRow;
use crate::domain::{RepoId, RepoType, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::registry::{self, RepoCtx};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// On whose behalf bytes are read: what a signed download link records, so
/// the decision is made again when the link is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Reader {
    /// Anyone (a public repo that is not gated).
    Anonymous,
    /// A user, with the rights of their account.
    User(i64),
    /// A worker's pull token for the repo.
    Pull,
}

/// Proof that a caller may read a repo's file contents: the repo is visible to
/// them and its gate, if any, lets them through. Made only by this module.
#[derive(Debug, Clone)]
pub struct Download {
    ctx: RepoCtx,
    reader: Reader,
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

    /// On whose behalf the bytes are read.
    pub fn reader(&self) -> Reader {
        self.reader
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
    /// valid [`LINK_TTL_S`]. The link records the reader, and using it makes
    /// the decision again ([`open_lfs_link`]): a link stops working when the
    /// reader loses access (a rejected request, a removed member).
    pub async fn lfs_link(&self, state: &AppState, sha: &Sha256) -> ApiResult<String> {
        let claims = LinkClaims {
            iss: ISSUER.into(),
            aud: LINK_AUDIENCE.into(),
            exp: expires_in(LINK_TTL_S),
            repo: self.ctx.repo.id,
            oid: sha.to_string(),
            reader: self.reader,
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
    reader: Reader,
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

/// The decision for a repo the caller can already see (`ctx` from
/// `registry::load_repo`).
pub async fn authorize(state: &AppState, auth: &Auth, ctx: RepoCtx) -> ApiResult<Download> {
    access::require(ctx.access, Access::Read)?;
    let p = auth.principal();
    if let Some(Principal {
        credential: Credential::RepoPull { repo_id },
        ..
    }) = p
    {
        // A worker pulling an endpoint's weights: the token was minted from a
        // `Download` for this repo (`service_tokens::pull_token`).
        if *repo_id == ctx.repo.id {
            return Ok(Download {
                ctx,
                reader: Reader::Pull,
            });
        }
    }
    let user = p.and_then(|p| gate_user(p, &ctx.repo));
    let reader = user.map_or(Reader::Anonymous, Reader::User);
    if ctx.repo.gated.is_none() || ctx.access >= Access::Write {
        return Ok(Download { ctx, reader });
    }
    match user {
        Some(uid) if user_passes_gate(state, &ctx.repo, uid).await? => Ok(Download { ctx, reader }),
        _ => Err(ApiError::GatedRepo(format!(
            "{} {}",
            ctx.repo.kind().as_str(),
            ctx.repo.full_id()
        ))),
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

/// The decision for a reader recorded earlier (a download link), made again
/// now: a repo that went private or a gate that closed refuses.
async fn authorize_reader(state: &AppState, repo: RepoRow, reader: Reader) -> ApiResult<Download> {
    let have = match reader {
        Reader::Pull => Access::Read,
        Reader::Anonymous if !repo.private => Access::Read,
        Reader::Anonymous => Access::None,
        Reader::User(uid) => user_access(state, &repo, uid).await?,
    };
    access::require(have, Access::Read)?;
    let ctx = RepoCtx { repo, access: have };
    if ctx.repo.gated.is_none() || have >= Access::Write || reader == Reader::Pull {
        return Ok(Download { ctx, reader });
    }
    match reader {
        Reader::User(uid) if user_passes_gate(state, &ctx.repo, uid).await? => {
            Ok(Download { ctx, reader })
        }
        _ => Err(ApiError::GatedRepo(format!(
            "{} {}",
            ctx.repo.kind().as_str(),
            ctx.repo.full_id()
        ))),
    }
}

/// Opens a signed LFS download link for `sha`: checks the signature, then
/// makes the read-and-gate decision again for the reader it records.
pub async fn open_lfs_link(state: &AppState, token: &str, sha: &Sha256) -> ApiResult<Download> {
    let c: LinkClaims = state
        .keys
        .verify(token, LINK_AUDIENCE)
        .await
        .map_err(|_| ApiError::InvalidSignature)?;
    if c.oid != sha.as_str() {
        return Err(ApiError::InvalidSignature);
    }
    let repo = crate::db::repos::by_id(&state.db, c.repo)
        .await?
        .ok_or(ApiError::NotFound("object"))?;
    authorize_reader(state, repo, c.reader).await
}

/// The decision for an inference endpoint's weights, made whenever a worker is
/// handed a pull token: the endpoint's creator must still be allowed to read
/// the files (an endpoint of the repo's own namespace always is).
pub async fn endpoint_download(
    state: &AppState,
    e: &crate::db::endpoints::EndpointRow,
) -> ApiResult<Download> {
    let repo_id = e.repo_id.ok_or(ApiError::RepoNotFound)?;
    let repo = crate::db::repos::by_id(&state.db, repo_id)
        .await?
        .ok_or(ApiError::RepoNotFound)?;
    if repo.namespace_id == e.namespace_id {
        return Ok(Download {
            ctx: RepoCtx {
                repo,
                access: Access::Read,
            },
            reader: Reader::Pull,
        });
    }
    let creator: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT created_by FROM endpoints WHERE id = $1")
            .bind(e.id)
            .fetch_optional(&state.db)
            .await?;
    match creator.and_then(|c| c.0) {
        Some(uid) => authorize_reader(state, repo, Reader::User(uid)).await,
        None => authorize_reader(state, repo, Reader::Anonymous).await,
    }
}

/// The read-and-gate decision for a repo a fine-tuning job reads, made for
/// its creator each time the job is claimed: a repo of the job's own
/// namespace is read like an endpoint's weights; another namespace's repo
/// only as the creator may (a gated one needs their accepted request).
pub async fn job_download(
    state: &AppState,
    repo_id: i64,
    job_namespace_id: i64,
    created_by: Option<i64>,
) -> ApiResult<Download> {
    let repo = crate::db::repos::by_id(&state.db, repo_id)
        .await?
        .ok_or(ApiError::RepoNotFound)?;
    if repo.namespace_id == job_namespace_id {
        return Ok(Download {
            ctx: RepoCtx {
                repo,
                access: Access::Read,
            },
            reader: Reader::Pull,
        });
    }
    match created_by {
        Some(uid) => authorize_reader(state, repo, Reader::User(uid)).await,
        None => authorize_reader(state, repo, Reader::Anonymous).await,
    }
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
             token, which `xet-read-token` mints only after `load_repo_for_download` (1 h)",
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
