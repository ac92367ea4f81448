//! The Git LFS batch API and the signed transfer links it hands out. The HF
//! clients send no `Authorization` to upload links, so each link carries a
//! short-lived hub-signed JWT for exactly one session (and part).
//!
//! Bytes are streamed to staging while hashed; an object becomes referable
//! (linked to the repo) only after its size and sha256 verify. The batch
//! reserves each new object's declared size in the namespace's quota (an open
//! session counts until it completes or is swept). A session accepts bytes
//! only while open: after completion part PUTs and completions are 409
//! `upload_completed`, after expiry 410 `upload_expired`, both before any
//! byte is read. A completion that does not verify keeps the parts, so the
//! client can upload the bad part again and complete again.

use crate::auth::access::Access;
use crate::auth::jwt::{expires_in, ISSUER};
use crate::auth::Auth;
use crate::db;
use crate::db::lfs::UploadSession;
use crate::domain::Sha256;
use crate::error::{ApiError, ApiResult};
use crate::registry::{self, RepoRef};
use crate::routes::body::{reject_encoded, JsonBody};
use crate::state::AppState;
use crate::storage::{Staged, StorageError};
use crate::sweeper;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

const LFS_JSON: &str = "application/vnd.git-lfs+json";
/// How long upload links stay valid.
const LINK_TTL_S: i64 = 24 * 3600;
const AUDIENCE: &str = "paddock-lfs";

/// An LFS batch, upload or preupload request the hub cannot take (400
/// `invalid_request`).
#[derive(Debug, thiserror::Error)]
pub enum LfsRequestError {
    #[error("operation {0:?} is not upload or download")]
    Operation(String),
    #[error("this upload is multipart: send its parts to the part links")]
    IsMultipart,
    #[error("this upload is not multipart")]
    NotMultipart,
    #[error("part {part} is outside 1..={count}")]
    PartOutOfRange { part: u32, count: u32 },
    #[error("{needed} parts are needed; {uploaded} were uploaded and {listed} listed")]
    PartCount {
        needed: u32,
        uploaded: usize,
        listed: usize,
    },
    #[error("part {0} has a different ETag than uploaded")]
    PartEtag(u32),
    #[error("Content-Length is not a number")]
    ContentLength,
    /// Preupload: a file's sample that is not base64.
    #[error("sample of {0} is not base64")]
    SampleNotBase64(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct LinkClaims {
    iss: String,
    aud: String,
    exp: i64,
    /// Upload session id.
    sub: String,
    /// "put", "part", "complete" or "get".
    act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part: Option<u32>,
}

async fn link(
    state: &AppState,
    path: &str,
    session: &str,
    act: &str,
    part: Option<u32>,
) -> ApiResult<String> {
    let claims = LinkClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        exp: expires_in(LINK_TTL_S),
        sub: session.into(),
        act: act.into(),
        part,
    };
    let token = state.keys.sign(&claims).await.map_err(ApiError::internal)?;
    Ok(format!("{}{path}?token={token}", state.public_url))
}

/// Checks a link's token is for this session, action and part.
async fn check_link(
    state: &AppState,
    req: &HttpRequest,
    session: &str,
    act: &str,
    part: Option<u32>,
) -> ApiResult<()> {
    let token = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or(ApiError::InvalidSignature)?;
    let c: LinkClaims = state
        .keys
        .verify(&token, AUDIENCE)
        .await
        .map_err(|_| ApiError::InvalidSignature)?;
    if c.sub != session || c.act != act || c.part != part {
        return Err(ApiError::InvalidSignature);
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct BatchObject {
    oid: String,
    size: i64,
}

#[derive(Debug, Deserialize)]
pub struct BatchBody {
    operation: String,
    #[serde(default)]
    transfers: Option<Vec<String>>,
    objects: Vec<BatchObject>,
    #[serde(default)]
    #[allow(dead_code)]
    hash_algo: Option<String>,
}

/// Checks each object of a batch body (digest and size), in order, before
/// anything is looked up or stored.
pub(crate) fn check_objects(body: &BatchBody, max_size: u64) -> ApiResult<Vec<(Sha256, i64)>> {
    let mut parsed = Vec::with_capacity(body.objects.len());
    for o in &body.objects {
        let sha = Sha256::parse(&o.oid)?;
        if o.size < 0 || o.size as u64 > max_size {
            return Err(ApiError::PayloadTooLarge(format!(
                "object {} of {} bytes is outside 0..={} bytes",
                o.oid, o.size, max_size
            )));
        }
        parsed.push((sha, o.size));
    }
    Ok(parsed)
}

pub async fn batch(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<BatchBody>,
) -> ApiResult<HttpResponse> {
    let need = match body.operation.as_str() {
        "upload" => Access::Write,
        "download" => Access::Read,
        other => return Err(LfsRequestError::Operation(other.to_string()).into()),
    };
    // Download links hand out bytes: they need the read-and-gate decision.
    let (ctx, download) = if need == Access::Read {
        let dl = crate::gating::load_repo_for_download(&state, &auth, repo.kind, &repo.id).await?;
        (dl.ctx().clone(), Some(dl))
    } else {
        let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, need).await?;
        (ctx, None)
    };
    if body.objects.len() > 1000 {
        return Err(ApiError::PayloadTooLarge(
            "at most 1000 objects per batch".into(),
        ));
    }
    let multipart_ok = body
        .transfers
        .as_ref()
        .is_none_or(|t| t.iter().any(|x| x == "multipart"));
    let parsed = check_objects(&body, state.limits.lfs_object)?;
    let shas: Vec<String> = parsed.iter().map(|(s, _)| s.to_string()).collect();
    let linked: std::collections::HashMap<String, i64> =
        db::lfs::linked(&state.db, ctx.repo.id, &shas)
            .await?
            .into_iter()
            .collect();

    if let Some(dl) = &download {
        let mut out = Vec::new();
        for (sha, size) in &parsed {
            match linked.get(sha.as_str()) {
                Some(s) if *s == *size => {
                    let href = dl.lfs_link(&state, sha).await?;
                    out.push(json!({"oid": sha, "size": size, "actions": {"download": {"href": href, "expires_in": crate::gating::LINK_TTL_S}}}));
                }
                _ => out.push(json!({"oid": sha, "size": size, "error": {"code": 404, "message": "Object does not exist"}})),
            }
        }
        return Ok(HttpResponse::Ok()
            .content_type(LFS_JSON)
            .json(json!({"transfer": "basic", "objects": out})));
    }

    // Refuse before any byte is stored if the new objects would pass the
    // quota; the sessions made here reserve their declared sizes, in the same
    // transaction and under the namespace's quota lock.
    let new_objects: Vec<(String, i64)> = parsed
        .iter()
        .filter(|(s, _)| !linked.contains_key(s.as_str()))
        .map(|(s, z)| (s.to_string(), *z))
        .collect();
    // Multipart uploads into a store with its own multipart upload (S3) get
    // that upload now, before the transaction: no store call under its lock.
    let mut planned = Vec::new();
    for (sha, size) in &parsed {
        if linked.contains_key(sha.as_str()) {
            planned.push(None);
            continue;
        }
        let id = Uuid::new_v4();
        let multipart = multipart_ok && *size as u64 > state.limits.multipart_threshold;
        let chunk = chunk_size(&state, *size as u64) as i64;
        let store_upload = if multipart && state.storage.native_multipart() {
            match state.storage.begin_parts(id).await {
                Ok(u) => Some(u),
                Err(e) => {
                    abort_planned(&state, &planned).await;
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        planned.push(Some((id, multipart, chunk, store_upload)));
    }
    let sessions = match create_sessions(&state, &auth, &ctx, &parsed, &new_objects, &planned).await
    {
        Ok(s) => s,
        Err(e) => {
            abort_planned(&state, &planned).await;
            return Err(e);
        }
    };
    let mut out = Vec::new();
    let mut any_multipart = false;
    for ((sha, size), session) in parsed.iter().zip(sessions) {
        let Some((id, chunk, parts)) = session else {
            let have = linked[sha.as_str()];
            if have == *size {
                out.push(json!({"oid": sha, "size": size}));
            } else {
                out.push(json!({"oid": sha, "size": size, "error": {"code": 422, "message": format!("object exists with size {have}")}}));
            }
            continue;
        };
        let sid = id.to_string();
        // git-lfs sends only the action's headers to `verify`: the caller's
        // own credentials go with it (as the Hub does), or `git lfs push`
        // fails with an authorization error after uploading.
        let mut verify_header = serde_json::Map::new();
        if let Some(a) = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            verify_header.insert("Authorization".into(), json!(a));
        }
        let verify = json!({"href": format!("{}/{}{}.git/info/lfs/objects/verify", state.public_url, repo.kind.url_prefix(), ctx.repo.full_id()), "header": verify_header});
        if let Some(n) = parts {
            any_multipart = true;
            let mut header = serde_json::Map::new();
            header.insert("chunk_size".into(), json!(chunk.to_string()));
            for part in 1..=n as u32 {
                header.insert(
                    part.to_string(),
                    json!(
                        link(
                            &state,
                            &format!("/lfs/upload/{sid}/part/{part}"),
                            &sid,
                            "part",
                            Some(part)
                        )
                        .await?
                    ),
                );
            }
            let complete = link(
                &state,
                &format!("/lfs/upload/{sid}/complete"),
                &sid,
                "complete",
                None,
            )
            .await?;
            out.push(json!({"oid": sha, "size": size, "actions": {
                "upload": {"href": complete, "header": header, "expires_in": LINK_TTL_S},
                "verify": verify,
            }}));
        } else {
            let href = link(&state, &format!("/lfs/upload/{sid}"), &sid, "put", None).await?;
            out.push(json!({"oid": sha, "size": size, "actions": {
                "upload": {"href": href, "expires_in": LINK_TTL_S},
                "verify": verify,
            }}));
        }
    }
    Ok(HttpResponse::Ok().content_type(LFS_JSON).json(
        json!({"transfer": if any_multipart { "multipart" } else { "basic" }, "objects": out}),
    ))
}

/// A new upload session: (id, multipart, chunk size, the store's upload).
type Planned = Option<(Uuid, bool, i64, Option<String>)>;

/// The part size offered for an object of `size` bytes: the configured
/// chunk, or more when a store's multipart upload could not hold the object
/// in its 10,000 parts (whole MiB, so every part but the last is a whole
/// number of SHA-256 blocks).
fn chunk_size(state: &AppState, size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let chunk = state.limits.multipart_chunk;
    if !state.storage.native_multipart() {
        return chunk;
    }
    let least = size.div_ceil(10_000);
    if least <= chunk {
        chunk
    } else {
        least.div_ceil(MIB) * MIB
    }
}

/// Creates the batch's sessions in one short transaction, under the
/// namespace's quota lock after checking the new objects fit.
async fn create_sessions(
    state: &AppState,
    auth: &Auth,
    ctx: &registry::RepoCtx,
    parsed: &[(Sha256, i64)],
    new_objects: &[(String, i64)],
    planned: &[Planned],
) -> ApiResult<Vec<Option<(Uuid, i64, Option<i32>)>>> {
    let mut tx = state.db.begin().await?;
    if !new_objects.is_empty() {
        crate::quota::lock_namespace(&mut tx, ctx.repo.namespace_id).await?;
        crate::quota::check_objects_fit(state, &mut tx, ctx.repo.namespace_id, new_objects).await?;
    }
    let creator = auth.principal().map(|p| p.user_id);
    let mut sessions = Vec::new();
    for ((sha, size), plan) in parsed.iter().zip(planned) {
        let Some((id, multipart, chunk, store_upload)) = plan else {
            sessions.push(None);
            continue;
        };
        let parts = multipart.then(|| ((*size + chunk - 1) / chunk) as i32);
        db::lfs::create_session(
            &mut *tx,
            &UploadSession {
                id: *id,
                repo_id: ctx.repo.id,
                sha256: sha.to_string(),
                size: *size,
                chunk_size: multipart.then_some(*chunk),
                part_count: parts,
                created_by: creator,
                expires_at: chrono::Utc::now() + chrono::Duration::seconds(LINK_TTL_S),
                completed_at: None,
                store_upload: store_upload.clone(),
            },
        )
        .await?;
        sessions.push(Some((*id, *chunk, parts)));
    }
    tx.commit().await?;
    Ok(sessions)
}

/// Abandons the store uploads of sessions that were never created.
async fn abort_planned(state: &AppState, planned: &[Planned]) {
    for (id, _, _, upload) in planned.iter().flatten() {
        if let Some(u) = upload {
            state.storage.abort_parts(*id, u).await;
        }
    }
}

/// The session of a link, while it may still take bytes: 410 once expired,
/// 409 once completed (checked before any byte of the body is read).
async fn open_session(state: &AppState, sid: &str) -> ApiResult<UploadSession> {
    let id = Uuid::parse_str(sid).map_err(|_| ApiError::InvalidSignature)?;
    let s = db::lfs::session(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("upload session"))?;
    if s.completed_at.is_some() {
        return Err(ApiError::UploadCompleted);
    }
    if s.expires_at < chrono::Utc::now() {
        return Err(ApiError::UploadExpired);
    }
    Ok(s)
}

/// Makes verified staged bytes final (pending for the session's namespace)
/// and links them: recorded, linked to the repo, session done, pending row
/// claimed, in one transaction. On failure the bytes are released.
async fn finish(state: &AppState, s: &UploadSession, staged: Staged) -> ApiResult<()> {
    let namespace_id = match db::lfs::repo_namespace(&state.db, s.repo_id).await {
        Ok(Some(ns)) => ns,
        Ok(None) => {
            state.storage.discard(staged).await;
            return Err(ApiError::NotFound("upload session"));
        }
        Err(e) => {
            state.storage.discard(staged).await;
            return Err(e.into());
        }
    };
    let (_, pending) = sweeper::store(state, namespace_id, staged).await?;
    let linked = async {
        let mut tx = state.db.begin().await?;
        sweeper::claim(&mut tx, &state.storage, &pending).await?;
        db::lfs::insert_blob(&mut *tx, &s.sha256, s.size).await?;
        db::lfs::link(&mut *tx, s.repo_id, &s.sha256).await?;
        db::lfs::complete_session(&mut *tx, s.id).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if linked.is_err() {
        sweeper::release(state, std::slice::from_ref(&pending)).await;
    }
    linked
}

/// `PUT /lfs/upload/{session}`: the whole object in one body.
pub async fn put_object(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let sid = path.into_inner();
    check_link(&state, &req, &sid, "put", None).await?;
    reject_encoded(&req)?;
    let s = open_session(&state, &sid).await?;
    if s.part_count.is_some() {
        return Err(LfsRequestError::IsMultipart.into());
    }
    check_content_length(&req, s.size as u64, "the object")?;
    let sha = Sha256::parse(&s.sha256)?;
    let staged = state
        .storage
        .stage(payload, Some(s.size as u64), Some(&sha), false)
        .await?;
    finish(&state, &s, staged).await?;
    state.metrics.lfs("upload", s.size as u64);
    tracing::info!(upload.session = %s.id, bytes = s.size, "lfs object stored");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// Refuses a body whose declared `Content-Length` is not `expected` bytes
/// (before reading it; bodies without one are counted as they stream).
fn check_content_length(req: &HttpRequest, expected: u64, what: &str) -> ApiResult<()> {
    let Some(v) = req.headers().get(actix_web::http::header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let declared: Option<u64> = v.to_str().ok().and_then(|v| v.trim().parse().ok());
    match declared {
        Some(n) if n == expected => Ok(()),
        Some(n) => Err(ApiError::DigestMismatch(format!(
            "{what} must be exactly {expected} bytes; Content-Length says {n}"
        ))),
        None => Err(LfsRequestError::ContentLength.into()),
    }
}

/// `PUT /lfs/upload/{session}/part/{n}`: one part; answers its ETag. The part
/// must be exactly its size (the chunk size, or the rest for the last part).
pub async fn put_part(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, u32)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (sid, part) = path.into_inner();
    check_link(&state, &req, &sid, "part", Some(part)).await?;
    reject_encoded(&req)?;
    let s = open_session(&state, &sid).await?;
    let (chunk, count) = match (s.chunk_size, s.part_count) {
        (Some(c), Some(n)) => (c as u64, n as u32),
        _ => return Err(LfsRequestError::NotMultipart.into()),
    };
    if part == 0 || part > count {
        return Err(LfsRequestError::PartOutOfRange { part, count }.into());
    }
    let expected = if part == count {
        s.size as u64 - chunk * (count as u64 - 1)
    } else {
        chunk
    };
    check_content_length(&req, expected, &format!("part {part}"))?;
    if let Some(upload) = &s.store_upload {
        return put_native_part(&state, &s, upload, part, chunk, expected, payload).await;
    }
    let etag = state
        .storage
        .write_part(s.id, part, payload, expected)
        .await
        .map_err(|e| part_body_error(part, expected, e))?;
    // The session may have completed while the part streamed: then the part
    // is not recorded and its bytes go.
    if !db::lfs::record_part(&state.db, s.id, part as i32, expected as i64, &etag).await? {
        state.storage.delete_part(s.id, part).await;
        return Err(ApiError::UploadCompleted);
    }
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{etag}\"")))
        .finish())
}

/// Maps a refused part body to the client's error.
fn part_body_error(part: u32, expected: u64, e: StorageError) -> ApiError {
    match e {
        StorageError::SizeMismatch { actual, .. } => ApiError::DigestMismatch(format!(
            "part {part} has {actual} bytes; it must be exactly {expected}"
        )),
        StorageError::TooLong(_) => {
            ApiError::DigestMismatch(format!("part {part} is longer than its {expected} bytes"))
        }
        e => e.into(),
    }
}

/// Ends an attempt that sent nothing to the store when it is dropped (a
/// refused body, or the client went away) unless disarmed first.
struct AttemptGuard {
    db: sqlx::PgPool,
    session: Uuid,
    part: i32,
    armed: bool,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if self.armed {
            let (db, session, part) = (self.db.clone(), self.session, self.part);
            tokio::spawn(async move {
                if let Err(e) = db::lfs::end_part_attempt(&db, session, part).await {
                    tracing::warn!(upload.session = %session, part, error = %e, "ending a part attempt failed");
                }
            });
        }
    }
}

/// A part of an upload into the store's own multipart upload (S3): read whole
/// within the namespace's upload memory, hashed from the SHA-256 state its
/// predecessor left, sent as the store's part, and recorded.
async fn put_native_part(
    state: &AppState,
    s: &UploadSession,
    upload: &str,
    part: u32,
    chunk: u64,
    expected: u64,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let ns = db::lfs::repo_namespace(&state.db, s.repo_id)
        .await?
        .ok_or(ApiError::NotFound("upload session"))?;
    let _memory = state.tenancy.upload_memory.reserve(ns, expected).await?;
    let attempt = db::lfs::start_part_attempt(&state.db, s.id, part as i32)
        .await?
        .ok_or(ApiError::UploadCompleted)?;
    let mut guard = AttemptGuard {
        db: state.db.clone(),
        session: s.id,
        part: part as i32,
        armed: true,
    };
    let hashed_from = attempt
        .resume
        .as_deref()
        .and_then(crate::sha256_state::decode);
    let resume = hashed_from
        .map(|st| crate::sha256_state::Sha256State::resume(st, chunk * (part as u64 - 1)));
    let read = crate::storage::Storage::read_native_part(payload, expected, resume).await;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            guard.armed = false;
            db::lfs::end_part_attempt(&state.db, s.id, part as i32).await?;
            return Err(part_body_error(part, expected, e));
        }
    };
    // From here the store may hold this attempt's bytes: if the send fails or
    // is cut off, the attempt stays in flight and the session's joined object
    // is read back to verify it.
    guard.armed = false;
    let store_etag = state
        .storage
        .send_native_part(s.id, upload, part, &read)
        .await?;
    let last = part as i64 * chunk as i64 >= s.size;
    let sha_after = read.sha.clone().and_then(|h| {
        if last {
            Some(h.finish().to_vec())
        } else {
            h.saved().map(|st| crate::sha256_state::encode(&st))
        }
    });
    let rec = db::lfs::NativePartRecord {
        size: expected as i64,
        etag: &read.etag,
        store_etag: &store_etag,
        sha_before: sha_after.as_ref().and(attempt.resume.clone()),
        sha_after,
    };
    if !db::lfs::record_native_part(&state.db, s.id, part as i32, &attempt, &rec).await? {
        return Err(ApiError::UploadCompleted);
    }
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{}\"", read.etag)))
        .finish())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRef {
    part_number: u32,
    etag: String,
}

#[derive(Debug, Deserialize)]
pub struct CompleteBody {
    oid: String,
    parts: Vec<PartRef>,
}

/// `POST /lfs/upload/{session}/complete`: joins the parts and verifies the
/// whole. The parts are deleted only once the object is final and linked; a
/// completion that fails leaves them (and the session) as they were.
pub async fn complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    JsonBody(body): JsonBody<CompleteBody>,
) -> ApiResult<HttpResponse> {
    let sid = path.into_inner();
    check_link(&state, &req, &sid, "complete", None).await?;
    let s = open_session(&state, &sid).await?;
    if !body.oid.eq_ignore_ascii_case(&s.sha256) {
        return Err(ApiError::DigestMismatch(format!(
            "completion for {} but the session uploads {}",
            body.oid, s.sha256
        )));
    }
    let count = s.part_count.unwrap_or(0) as u32;
    let stored = db::lfs::parts(&state.db, s.id).await?;
    if stored.len() as u32 != count || body.parts.len() as u32 != count {
        return Err(LfsRequestError::PartCount {
            needed: count,
            uploaded: stored.len(),
            listed: body.parts.len(),
        }
        .into());
    }
    for p in &body.parts {
        let ok = stored.iter().any(|(n, _, e)| {
            *n as u32 == p.part_number && e.eq_ignore_ascii_case(p.etag.trim_matches('"'))
        });
        if !ok {
            return Err(LfsRequestError::PartEtag(p.part_number).into());
        }
    }
    let sha = Sha256::parse(&s.sha256)?;
    if let Some(upload) = &s.store_upload {
        return complete_native(&state, &s, upload, &sha).await;
    }
    let sizes: Vec<u64> = stored.iter().map(|(_, z, _)| *z as u64).collect();
    let staged = match state
        .storage
        .stage_parts(s.id, &sizes, s.size as u64, &sha)
        .await
    {
        Ok(staged) => staged,
        Err(StorageError::PartMissing { part }) => {
            // A concurrent completion may have finished and removed the parts.
            if db::lfs::session(&state.db, s.id)
                .await?
                .is_some_and(|s| s.completed_at.is_some())
            {
                return Err(ApiError::UploadCompleted);
            }
            // Forget the part so the client's next completion says it is
            // missing until it is uploaded again.
            db::lfs::delete_part(&state.db, s.id, part as i32).await?;
            return Err(ApiError::UploadPartMissing(part));
        }
        Err(StorageError::DigestMismatch { expected, actual }) => {
            return Err(ApiError::DigestMismatch(format!(
                "the parts joined hash to {actual}, not {expected}; upload the wrong part again, then complete again"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    finish(&state, &s, staged).await?;
    state.storage.delete_parts(s.id).await;
    state.metrics.lfs("multipart_upload", s.size as u64);
    tracing::info!(upload.session = %s.id, bytes = s.size, parts = count, "lfs multipart object stored");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// Whether a native upload's recorded parts prove the joined object's
/// digest: each part hashed from the state its predecessor left, the last
/// ending at `sha`, every part certainly what the store holds.
fn digest_known(parts: &[db::lfs::NativePartRow], sha: &Sha256) -> bool {
    let mut expect = Some(crate::sha256_state::encode(&crate::sha256_state::INITIAL));
    for p in parts {
        if !p.clean || p.sha_before.is_none() || p.sha_before != expect {
            return false;
        }
        expect = p.sha_after.clone();
    }
    expect.is_some_and(|d| hex::encode(d) == sha.as_str())
}

/// Completes an upload into the store's own multipart upload: the store
/// joins the parts; the digest is known from the parts' chained hashes, so
/// nothing is read back unless a part's attempts overlapped or came out of
/// order (then the joined object is read once and verified).
async fn complete_native(
    state: &AppState,
    s: &UploadSession,
    upload: &str,
    sha: &Sha256,
) -> ApiResult<HttpResponse> {
    let parts = db::lfs::native_parts(&state.db, s.id).await?;
    let (started, in_flight) = db::lfs::part_attempts(&state.db, s.id).await?;
    let mut known = in_flight == 0 && digest_known(&parts, sha);
    let etags: Vec<String> = parts
        .iter()
        .map(|p| p.store_etag.clone().unwrap_or_default())
        .collect();
    if let Err(e) = state.storage.complete_parts(s.id, upload, etags).await {
        // A concurrent completion may have joined them and finished.
        if db::lfs::session(&state.db, s.id)
            .await?
            .is_some_and(|s| s.completed_at.is_some())
        {
            return Err(ApiError::UploadCompleted);
        }
        // An earlier completion may have joined them and failed after.
        if state.storage.parts_object_size(s.id).await? != Some(s.size as u64) {
            if let Some(p) = parts.iter().find(|p| !p.clean) {
                // The store holds another attempt's bytes for this part.
                db::lfs::delete_part(&state.db, s.id, p.part_number).await?;
                return Err(ApiError::UploadPartMissing(p.part_number as u32));
            }
            return Err(e.into());
        }
        known = false;
    }
    // An attempt that started while the store joined the parts may have
    // replaced one: then the joined object is verified by reading it.
    if db::lfs::part_attempts(&state.db, s.id).await?.0 != started {
        known = false;
    }
    let staged = match state
        .storage
        .staged_parts(s.id, s.size as u64, sha, known)
        .await
    {
        Ok(staged) => staged,
        Err(e @ (StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. })) => {
            // The store's upload is spent: the parts start over in a new one.
            let fresh = state.storage.begin_parts(s.id).await?;
            db::lfs::reset_native_session(&state.db, s.id, &fresh).await?;
            return Err(ApiError::DigestMismatch(format!(
                "the parts joined do not verify ({e}); upload every part again, then complete again"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    finish(state, s, staged).await?;
    tracing::info!(upload.session = %s.id, bytes = s.size, parts = parts.len(), read_back = !known, "lfs multipart object stored");
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct VerifyBody {
    oid: String,
    size: i64,
}

/// `POST {repo}.git/info/lfs/objects/verify` (authenticated).
pub async fn verify(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    JsonBody(body): JsonBody<VerifyBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
    let sha = Sha256::parse(&body.oid)?;
    let linked = db::lfs::linked(&state.db, ctx.repo.id, &[sha.to_string()]).await?;
    match linked.first() {
        Some((_, size)) if *size == body.size => {
            Ok(HttpResponse::Ok().content_type(LFS_JSON).json(json!({})))
        }
        Some((_, size)) => Err(ApiError::DigestMismatch(format!(
            "object has {size} bytes, not {}",
            body.size
        ))),
        None => Err(ApiError::LfsObjectMissing(sha.to_string())),
    }
}

/// `GET /lfs/objects/{sha}` with a download link token (git-lfs download
/// action). The link records its reader; opening it makes the read-and-gate
/// decision again (`gating::open_lfs_link`).
pub async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let sha = Sha256::parse(&path.into_inner())?;
    let token = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or(ApiError::InvalidSignature)?;
    let dl = crate::gating::open_lfs_link(&state, &token, &sha).await?;
    let linked = db::lfs::linked(&state.db, dl.repo().id, &[sha.to_string()]).await?;
    let (_, size) = linked.first().ok_or(ApiError::NotFound("object"))?;
    let size = *size as u64;
    let etag = format!("\"{sha}\"");
    let mut resp = HttpResponse::Ok();
    crate::routes::hf::resolve::untrusted_bytes(&mut resp);
    resp.insert_header((actix_web::http::header::ETAG, etag.as_str()))
        .insert_header((actix_web::http::header::ACCEPT_RANGES, "bytes"))
        .content_type("application/octet-stream");
    let range = crate::routes::hf::resolve::effective_range(&req, &etag);
    let (start, len) = match crate::routes::hf::resolve::parse_range(range, size) {
        crate::routes::hf::resolve::RangeReq::Full => (0, size),
        crate::routes::hf::resolve::RangeReq::Part { start, end } => {
            resp.status(actix_web::http::StatusCode::PARTIAL_CONTENT);
            resp.insert_header((
                actix_web::http::header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{size}"),
            ));
            (start, end - start + 1)
        }
        crate::routes::hf::resolve::RangeReq::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { size })
        }
    };
    let stream = dl.stream(&state, &sha, Some(start..start + len)).await?;
    state.metrics.lfs("download", len);
    Ok(resp.no_chunking(len).streaming(stream))
}
