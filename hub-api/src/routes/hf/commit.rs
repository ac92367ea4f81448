//! `POST /api/{type}s/{repo}/commit/{rev}`: the NDJSON commit, read line by
//! line with bounded memory (a line, and inline files waiting to be stored in
//! batches of at most 1,000 files or 16 MiB, as pending objects of the
//! namespace). If the
//! payload is refused, the files stored so far are released at once; the
//! commit engine settles them otherwise.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::registry::commit::{self, AddContent, CommitInput, Op};
use crate::registry::discussions as disc;
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
    /// (added so far, limit) when the caller is a contributor without write
    /// access committing to a pull request ([`Limits::contribution`]).
    contribution: Option<(i64, i64)>,
    /// Inline bytes of this commit so far.
    added: i64,
}

impl InlineQuota {
    /// Refuses a file before its bytes are stored if it would pass the quota
    /// or the contributor's allowance.
    fn admit(&mut self, size: usize) -> ApiResult<()> {
        let size = size as i64;
        if let Some((used, limit)) = self.quota {
            if used + self.added + size > limit {
                return Err(crate::quota::exceeded(used, limit, self.added + size));
            }
        }
        if let Some((added, limit)) = self.contribution {
            if added + self.added + size > limit {
                return Err(ApiError::QuotaExceeded(format!(
                    "a contributor without write access may add at most {limit} bytes to this \
                     repository's pull requests (they count toward its owner's quota); you \
                     have added {added}, and this commit needs {} more",
                    self.added + size
                )));
            }
        }
        self.added += size;
        Ok(())
    }
}

/// Inline files stored per batch (one transaction of pending rows, writes in
/// parallel): at most this many files, or [`BATCH_BYTES`] of content.
const BATCH_FILES: usize = 1000;
const BATCH_BYTES: usize = 16 << 20;

/// The operations read so far. Inline files wait in `batch` (at most
/// [`BATCH_FILES`] files or [`BATCH_BYTES`]) and are stored together; their
/// slots in `ops` are filled when the batch is stored, so the order of the
/// payload is kept.
#[derive(Default)]
struct Reader {
    ops: Vec<Option<Op>>,
    /// (slot in `ops`, path, bytes) of inline files not stored yet.
    batch: Vec<(usize, RepoPath, bytes::Bytes)>,
    batch_bytes: usize,
}

impl Reader {
    fn push(&mut self, op: Op) {
        self.ops.push(Some(op));
    }

    /// Stores the waiting inline files.
    async fn flush(&mut self, state: &AppState, namespace_id: i64) -> ApiResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let (slots, files): (Vec<usize>, Vec<_>) =
            batch.into_iter().map(|(i, p, b)| (i, (p, b))).unzip();
        let stored = commit::store_inline(state, namespace_id, files).await?;
        for (i, op) in slots.into_iter().zip(stored) {
            self.ops[i] = Some(op);
        }
        Ok(())
    }

    /// The stored operations (for releasing them on failure).
    fn stored(&self) -> Vec<Op> {
        self.ops.iter().flatten().cloned().collect()
    }

    /// Every operation, once the last batch is stored.
    fn finish(self) -> ApiResult<Vec<Op>> {
        self.ops
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("an inline file was not stored"))
                })
            })
            .collect()
    }
}

async fn apply_line(
    state: &AppState,
    namespace_id: i64,
    line_no: usize,
    line: &[u8],
    header: &mut Option<ndjson::Header>,
    ops: &mut Reader,
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
    if ops.ops.len() >= state.limits.commit_ops {
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
            ops.batch_bytes += bytes.len();
            ops.batch.push((ops.ops.len(), path, bytes.into()));
            ops.ops.push(None);
            if ops.batch.len() >= BATCH_FILES || ops.batch_bytes >= BATCH_BYTES {
                ops.flush(state, namespace_id).await?;
            }
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

/// Reads the NDJSON payload into `ops` (inline files stored in batches as
/// their lines arrive); answers the header.
async fn read_payload(
    state: &AppState,
    namespace_id: i64,
    contribution: Option<(i64, i64)>,
    payload: &mut web::Payload,
    ops: &mut Reader,
) -> ApiResult<(ndjson::Header, i64)> {
    let mut quota = InlineQuota {
        quota: crate::quota::headroom(state, namespace_id).await?,
        contribution,
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
    ops.flush(state, namespace_id).await?;
    let header =
        header.ok_or_else(|| ApiError::InvalidCommit("the payload has no header line".into()))?;
    Ok((header, quota.added))
}

pub async fn commit(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    mut payload: web::Payload,
) -> ApiResult<HttpResponse> {
    // Read first: a pull request's author may commit to it without write
    // access (`registry::discussions`); every other commit needs write.
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
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
    let create_pr = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "create_pr")
        .map(|(_, v)| v.into_owned());
    let create_pr =
        crate::registry::repo_ref::query_bool("create_pr", create_pr.as_deref())? == Some(true);
    let rev = param(&req, "rev").unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string());
    let rev = crate::domain::Revision::parse(&rev)?;
    // A pull request's ref: its author or a writer, while it is open.
    let pr_num = rev
        .as_str()
        .strip_prefix("refs/pr/")
        .map(|n| {
            n.parse::<i32>().map_err(|_| {
                ApiError::InvalidRevision(format!("{n:?}: refs/pr/ takes a pull request number"))
            })
        })
        .transpose()?;
    let mut pull = match pr_num {
        Some(n) if !create_pr => {
            let p = disc::participant(&auth, &ctx)?;
            crate::gating::require_gate(&state, &auth, &ctx).await?;
            Some(disc::pr_for_commit(&state, &ctx, p, n).await?)
        }
        Some(_) => {
            return Err(ApiError::InvalidRevision(
                "create_pr opens a pull request on a branch; commit to refs/pr/N without it".into(),
            ))
        }
        None if create_pr => {
            disc::participant(&auth, &ctx)?;
            crate::gating::require_gate(&state, &auth, &ctx).await?;
            None
        }
        None => {
            crate::auth::access::require(ctx.access, Access::Write)?;
            None
        }
    };
    let author = auth.require()?.clone();
    let branch_ref = match rev.as_str() {
        _ if pull.is_some() => rev.as_str().to_string(),
        // A pull request opens on a branch; anything else names no branch.
        r if create_pr && (r.starts_with("refs/") || crate::domain::is_commit_oid(r)) => {
            return Err(ApiError::RevisionNotFound(r.to_string()))
        }
        r if r.starts_with("refs/heads/") => r.to_string(),
        r if r.starts_with("refs/") || crate::domain::is_commit_oid(r) => {
            return Err(ApiError::InvalidRevision(format!(
                "{r:?}: commits can only be made to a branch or a pull request (refs/pr/N)"
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

    // A contributor without write access (committing to a pull request):
    // what their inline files may still add (`Limits::contribution`).
    let contributor = (pull.is_some() || create_pr) && ctx.access < Access::Write;
    let contribution = if contributor {
        let added =
            crate::db::discussions::contributed(&state.db, ctx.repo.id, author.user_id).await?;
        Some((added, state.limits.contribution))
    } else {
        None
    };
    let mut reader = Reader::default();
    let started = std::time::Instant::now();
    let read = read_payload(
        &state,
        ctx.repo.namespace_id,
        contribution,
        &mut payload,
        &mut reader,
    )
    .await;
    tracing::debug!(
        ops = reader.ops.len(),
        read_ms = started.elapsed().as_millis() as u64,
        "commit payload read and its inline files stored"
    );
    let (header, inline_bytes) = match read {
        Ok(h) => h,
        Err(e) => {
            crate::sweeper::release(&state, &commit::pending_of(&reader.stored())).await;
            return Err(e);
        }
    };
    let ops = reader.finish()?;
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
        merge_parent: None,
    };
    // `create_pr`: the pull request is opened on the branch (at the header's
    // parentCommit, else the branch head) and the commit goes to its ref; a
    // commit that fails takes the pull request back.
    let mut target_ref = branch_ref.clone();
    let mut input = input;
    if create_pr {
        let branch = branch_ref.trim_start_matches("refs/heads/");
        let d = match disc::create(
            &state,
            &ctx,
            &author,
            &header.summary,
            &header.description,
            Some((branch, header.parent_commit.as_deref(), "open")),
            false,
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                crate::sweeper::release(&state, &commit::pending_of(&input.ops)).await;
                return Err(e);
            }
        };
        target_ref = format!("refs/pr/{}", d.num);
        input.parent = None;
        pull = Some(d);
    }
    let done = match commit::commit(&state, &ctx.repo, &target_ref, &author, input).await {
        Ok(done) => done,
        Err(e) => {
            if let (true, Some(d)) = (create_pr, &pull) {
                disc::undo_create(&state, ctx.repo.id, d.num).await?;
            }
            return Err(e);
        }
    };
    // A contributor's allowance is charged once the commit is made (two
    // concurrent commits may both pass the check: the allowance can be
    // exceeded by at most one commit each).
    if contributor && inline_bytes > 0 {
        crate::db::discussions::add_contributed(
            &state.db,
            ctx.repo.id,
            author.user_id,
            inline_bytes,
        )
        .await?;
    }
    // The commit is made and answered either way: a failed event write is
    // logged, not turned into an error the client would retry.
    if let Some(d) = &pull {
        if let Err(e) = disc::record_commit(
            &state,
            &ctx,
            d,
            &author,
            &done.oid,
            &header.summary,
            create_pr,
        )
        .await
        {
            tracing::warn!(repo.id = ctx.repo.id, discussion = d.num, error = %e, "recording a pull request's commit event failed");
        }
    }
    let pr_url = pull.as_ref().map(|d| {
        format!(
            "{}/{}{}/discussions/{}",
            state.public_url,
            repo.kind.url_prefix(),
            ctx.repo.full_id(),
            d.num
        )
    });
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
        "pullRequestUrl": pr_url,
    })))
}
