//! The Git LFS batch API and the signed transfer links it hands out. The HF
//! clients send no `Authorization` to upload links, so each link carries a
//! short-lived hub-signed JWT for exactly one session (and part).
//!
//! Bytes are streamed to staging while hashed; an object becomes referable
//! (linked to the repo) only after its size and sha256 verify.

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
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

const LFS_JSON: &str = "application/vnd.git-lfs+json";
/// How long upload links stay valid.
const LINK_TTL_S: i64 = 24 * 3600;
const AUDIENCE: &str = "paddock-lfs";

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
    JsonBody(body): JsonBody<BatchBody>,
) -> ApiResult<HttpResponse> {
    let need = match body.operation.as_str() {
        "upload" => Access::Write,
        "download" => Access::Read,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "operation {other:?} is not upload or download"
            )))
        }
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

    // Refuse before any byte is stored if the new objects would pass the quota.
    let new_bytes: i64 = parsed
        .iter()
        .filter(|(s, _)| !linked.contains_key(s.as_str()))
        .map(|(_, z)| *z)
        .sum();
    if new_bytes > 0 {
        let mut conn = state.db.acquire().await?;
        crate::quota::check_namespace_can_grow(&state, &mut conn, ctx.repo.namespace_id, new_bytes)
            .await?;
    }
    let creator = auth.principal().map(|p| p.user_id);
    let mut out = Vec::new();
    let mut any_multipart = false;
    for (sha, size) in &parsed {
        if let Some(have) = linked.get(sha.as_str()) {
            if have == size {
                out.push(json!({"oid": sha, "size": size}));
                continue;
            }
            out.push(json!({"oid": sha, "size": size, "error": {"code": 422, "message": format!("object exists with size {have}")}}));
            continue;
        }
        let id = Uuid::new_v4();
        let multipart = multipart_ok && *size as u64 > state.limits.multipart_threshold;
        let chunk = state.limits.multipart_chunk as i64;
        let parts = multipart.then(|| ((*size + chunk - 1) / chunk) as i32);
        db::lfs::create_session(
            &state.db,
            &UploadSession {
                id,
                repo_id: ctx.repo.id,
                sha256: sha.to_string(),
                size: *size,
                chunk_size: multipart.then_some(chunk),
                part_count: parts,
                created_by: creator,
                expires_at: chrono::Utc::now() + chrono::Duration::seconds(LINK_TTL_S),
                completed_at: None,
            },
        )
        .await?;
        let sid = id.to_string();
        let verify = json!({"href": format!("{}/{}{}.git/info/lfs/objects/verify", state.public_url, repo.kind.url_prefix(), ctx.repo.full_id()), "header": {}});
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

async fn open_session(state: &AppState, sid: &str) -> ApiResult<UploadSession> {
    let id = Uuid::parse_str(sid).map_err(|_| ApiError::InvalidSignature)?;
    let s = db::lfs::session(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("upload session"))?;
    if s.expires_at < chrono::Utc::now() {
        return Err(ApiError::InvalidSignature);
    }
    Ok(s)
}

/// Marks the object verified: recorded, linked to the repo, session done.
async fn finish(state: &AppState, s: &UploadSession) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    db::lfs::insert_blob(&mut *tx, &s.sha256, s.size).await?;
    db::lfs::link(&mut *tx, s.repo_id, &s.sha256).await?;
    db::lfs::complete_session(&mut *tx, s.id).await?;
    tx.commit().await?;
    Ok(())
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
    if s.completed_at.is_none() {
        let sha = Sha256::parse(&s.sha256)?;
        state
            .storage
            .write_blob(payload, Some(s.size as u64), Some(&sha), false)
            .await?;
        finish(&state, &s).await?;
        tracing::info!(upload.session = %s.id, bytes = s.size, "lfs object stored");
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `PUT /lfs/upload/{session}/part/{n}`: one part; answers its ETag.
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
        _ => {
            return Err(ApiError::InvalidRequest(
                "this upload is not multipart".into(),
            ))
        }
    };
    if part == 0 || part > count {
        return Err(ApiError::InvalidRequest(format!(
            "part {part} is outside 1..={count}"
        )));
    }
    let expected = if part == count {
        s.size as u64 - chunk * (count as u64 - 1)
    } else {
        chunk
    };
    let (size, etag) = state
        .storage
        .write_part(s.id, part, payload, expected)
        .await?;
    if size != expected {
        return Err(ApiError::DigestMismatch(format!(
            "part {part} has {size} bytes; expected {expected}"
        )));
    }
    db::lfs::record_part(&state.db, s.id, part as i32, size as i64, &etag).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{etag}\"")))
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

/// `POST /lfs/upload/{session}/complete`: joins the parts and verifies the whole.
pub async fn complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    JsonBody(body): JsonBody<CompleteBody>,
) -> ApiResult<HttpResponse> {
    let sid = path.into_inner();
    check_link(&state, &req, &sid, "complete", None).await?;
    let s = open_session(&state, &sid).await?;
    if s.completed_at.is_some() {
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    if !body.oid.eq_ignore_ascii_case(&s.sha256) {
        return Err(ApiError::DigestMismatch(format!(
            "completion for {} but the session uploads {}",
            body.oid, s.sha256
        )));
    }
    let count = s.part_count.unwrap_or(0) as u32;
    let stored = db::lfs::parts(&state.db, s.id).await?;
    if stored.len() as u32 != count || body.parts.len() as u32 != count {
        return Err(ApiError::InvalidRequest(format!(
            "{count} parts are needed; {} were uploaded and {} listed",
            stored.len(),
            body.parts.len()
        )));
    }
    for p in &body.parts {
        let ok = stored.iter().any(|(n, _, e)| {
            *n as u32 == p.part_number && e.eq_ignore_ascii_case(p.etag.trim_matches('"'))
        });
        if !ok {
            return Err(ApiError::InvalidRequest(format!(
                "part {} has a different ETag than uploaded",
                p.part_number
            )));
        }
    }
    let sha = Sha256::parse(&s.sha256)?;
    state
        .storage
        .assemble_parts(s.id, count, s.size as u64, &sha)
        .await?;
    finish(&state, &s).await?;
    tracing::info!(upload.session = %s.id, bytes = s.size, parts = count, "lfs multipart object stored");
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
    Ok(resp.no_chunking(len).streaming(stream))
}
