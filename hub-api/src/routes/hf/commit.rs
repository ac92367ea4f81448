//! `POST /api/{type}s/{repo}/commit/{rev}`: the NDJSON commit, read line by
//! line with bounded memory (one line at a time; inline files are stored as
//! soon as their line is read, as pending objects of the namespace). If the
//! payload is refused, the files stored so far are released at once; the
//! commit engine settles them otherwise.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::registry::commit::{self, AddContent, CommitInput, Op};
use crate::registry::ndjson::{self, Line};
use crate::registry::repo_ref::param;
use crate::registry::{self, RepoRef};
use crate::routes::body::reject_encoded;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures::StreamExt;
use serde_json::json;

/// What inline files of one commit may still add to the namespace's storage.
struct InlineQuota {
    /// (used, limit) when the namespace has a quota.
    quota: Option<(i64, i64)>,
    /// Inline bytes of this commit so far.
    added: i64,
}

impl InlineQuota {
    /// Refuses a file before its bytes are stored if it would pass the quota.
    fn admit(&mut self, size: usize) -> ApiResult<()> {
        let size = size as i64;
        if let Some((used, limit)) = self.quota {
            if used + self.added + size > limit {
                return Err(crate::quota::exceeded(used, limit, self.added + size));
            }
        }
        self.added += size;
        Ok(())
    }
}

async fn apply_line(
    state: &AppState,
    namespace_id: i64,
    line_no: usize,
    line: &[u8],
    header: &mut Option<ndjson::Header>,
    ops: &mut Vec<Op>,
    quota: &mut InlineQuota,
) -> ApiResult<()> {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    let parsed = ndjson::parse_line(line)
        .map_err(|m| ApiError::InvalidCommit(format!("line {line_no}: {m}")))?;
    if header.is_none() && !matches!(parsed, Line::Header(_)) {
        return Err(ApiError::InvalidCommit(format!(
            "line {line_no}: the header must come first"
        )));
    }
    if ops.len() >= state.limits.commit_ops {
        return Err(ApiError::PayloadTooLarge(format!(
            "a commit may have at most {} operations",
            state.limits.commit_ops
        )));
    }
    match parsed {
        Line::Header(h) => {
            if header.is_some() {
                return Err(ApiError::InvalidCommit(format!(
                    "line {line_no}: a second header"
                )));
            }
            *header = Some(h);
        }
        Line::File(f) => {
            let path = RepoPath::parse(&f.path)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|e| {
                    ApiError::InvalidCommit(format!(
                        "line {line_no}: content of {} is not valid base64: {e}",
                        f.path
                    ))
                })?;
            quota.admit(bytes.len())?;
            let content = commit::store_inline(state, namespace_id, &path, bytes.into()).await?;
            ops.push(Op::Add { path, content });
        }
        Line::LfsFile(f) => {
            let path = RepoPath::parse(&f.path)?;
            let sha = Sha256::parse(&f.oid)?;
            if let Some(old) = &f.old_path {
                ops.push(Op::Delete(RepoPath::parse(old)?));
            }
            ops.push(Op::Add {
                path,
                content: AddContent::Lfs {
                    sha256: sha.to_string(),
                    size: f.size,
                },
            });
        }
        Line::DeletedFile(p) => ops.push(Op::Delete(RepoPath::parse(&p.path)?)),
        Line::DeletedFolder(p) => ops.push(Op::DeleteFolder(RepoPath::parse_folder(&p.path)?)),
    }
    Ok(())
}

/// Reads the NDJSON payload into `ops` (inline files stored as their lines
/// arrive); answers the header.
async fn read_payload(
    state: &AppState,
    namespace_id: i64,
    payload: &mut web::Payload,
    ops: &mut Vec<Op>,
) -> ApiResult<ndjson::Header> {
    let mut quota = InlineQuota {
        quota: crate::quota::headroom(state, namespace_id).await?,
        added: 0,
    };
    let mut header = None;
    let mut buf = web::BytesMut::new();
    let mut total: u64 = 0;
    let mut line_no = 0usize;
    // Bytes of `buf` already known to hold no newline.
    let mut scanned = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(crate::routes::body::BodyError::read)?;
        total += chunk.len() as u64;
        if total > state.limits.commit_body {
            return Err(ApiError::PayloadTooLarge(format!(
                "the commit body is over the limit of {} bytes",
                state.limits.commit_body
            )));
        }
        buf.extend_from_slice(&chunk);
        loop {
            let Some(rel) = buf[scanned..].iter().position(|b| *b == b'\n') else {
                scanned = buf.len();
                break;
            };
            let line = buf.split_to(scanned + rel + 1);
            scanned = 0;
            line_no += 1;
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            apply_line(
                state,
                namespace_id,
                line_no,
                line,
                &mut header,
                ops,
                &mut quota,
            )
            .await?;
        }
        if buf.len() > state.limits.commit_line {
            return Err(ApiError::PayloadTooLarge(format!(
                "line {} is over the limit of {} bytes",
                line_no + 1,
                state.limits.commit_line
            )));
        }
    }
    if !buf.is_empty() {
        line_no += 1;
        let rest = buf.split();
        apply_line(
            state,
            namespace_id,
            line_no,
            &rest,
            &mut header,
            ops,
            &mut quota,
        )
        .await?;
    }
    header.ok_or_else(|| ApiError::InvalidCommit("the payload has no header line".into()))
}

pub async fn commit(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    mut payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let author = auth.require()?.clone();
    reject_encoded(&req)?;
    // A declared length over the limit is refused before any byte is read.
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limits.commit_body) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the commit body is over the limit of {} bytes",
            state.limits.commit_body
        )));
    }
    if req.query_string().contains("create_pr=1") || req.query_string().contains("create_pr=true") {
        return Err(crate::routes::query::QueryError::PullRequests.into());
    }
    let rev = param(&req, "rev").unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string());
    let rev = crate::domain::Revision::parse(&rev)?;
    let branch_ref = match rev.as_str() {
        r if r.starts_with("refs/heads/") => r.to_string(),
        r if r.starts_with("refs/") || crate::domain::is_commit_oid(r) => {
            return Err(ApiError::InvalidRevision(format!(
                "{r:?}: commits can only be made to a branch"
            )))
        }
        r => format!("refs/heads/{r}"),
    };
    if crate::db::refs::get(&state.db, ctx.repo.id, &branch_ref)
        .await?
        .is_none()
    {
        let short = branch_ref.trim_start_matches("refs/heads/");
        if crate::db::refs::get(&state.db, ctx.repo.id, &format!("refs/tags/{short}"))
            .await?
            .is_some()
        {
            return Err(ApiError::InvalidRevision(format!(
                "{short:?} is a tag; commits can only be made to a branch"
            )));
        }
        return Err(ApiError::RevisionNotFound(short.to_string()));
    }

    let mut ops = Vec::new();
    let read = read_payload(&state, ctx.repo.namespace_id, &mut payload, &mut ops).await;
    let header = match read {
        Ok(h) => h,
        Err(e) => {
            crate::sweeper::release(&state, &commit::pending_of(&ops)).await;
            return Err(e);
        }
    };
    let idempotency_key = req
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(str::to_string);
    let input = CommitInput {
        summary: header.summary.clone(),
        description: header.description.clone(),
        parent: header.parent_commit.clone(),
        ops,
        idempotency_key,
    };
    let done = commit::commit(&state, &ctx.repo, &branch_ref, &author, input).await?;
    let url = format!(
        "{}/{}{}/commit/{}",
        state.public_url,
        repo.kind.url_prefix(),
        ctx.repo.full_id(),
        done.oid
    );
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "commitUrl": url,
        "commitOid": done.oid,
        "commitMessage": header.summary,
        "commitDescription": header.description,
    })))
}
