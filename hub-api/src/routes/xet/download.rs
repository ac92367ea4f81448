//! CAS reads: reconstructions (§7.6-7.8), the signed xorb data links they
//! hand out (§7.9), and the global-dedup query (§7.5).
//!
//! A token reconstructs only files its repo registered; a dedup query only
//! sees its namespace's index. Data links carry their own claims (xorb,
//! byte ranges, expiry, and the repo and grant of the token that asked for
//! them; signed with the hub's JWT keys): the client sends them no token,
//! and answers a 403 by asking for a fresh reconstruction. Each use of a link
//! decides its grant again (`gating::recheck`, from the per-process cache when
//! warm, so a chunk fetch makes no database round trip).

use super::{check_prefix, CasToken, XetError, CAS_PREFIX};
use crate::auth::grants::Grant;
use crate::auth::jwt::{expires_in, ISSUER};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use hub_xet::hash::{self, XetHash};
use hub_xet::reconstruct::{self, ByteRange, Plan, ReconstructError};
use hub_xet::shard::{self, DedupXorb};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const DATA_AUDIENCE: &str = "paddock-xet-data";
/// How long a dedup answer's HMAC key is valid (§6.7).
pub const DEDUP_KEY_TTL_S: u64 = 7 * 24 * 3600;

/// The claims of a data link: which byte ranges (inclusive) of which xorb.
#[derive(Debug, Serialize, Deserialize)]
struct DataClaims {
    iss: String,
    aud: String,
    exp: i64,
    /// Xorb hash string.
    sub: String,
    /// Authorized ranges, `[start, end]` inclusive.
    r: Vec<(u64, u64)>,
    /// The repo whose file the link reconstructs, and on whose behalf: the
    /// CAS token's, decided again when the link is used.
    repo: i64,
    grant: Grant,
}

async fn data_link(
    state: &AppState,
    cas: &CasToken,
    xorb: &XetHash,
    ranges: &[ByteRange],
) -> ApiResult<String> {
    let name = hash::hash_string(xorb);
    let claims = DataClaims {
        iss: ISSUER.into(),
        aud: DATA_AUDIENCE.into(),
        exp: expires_in(state.limits.xet_data_link_ttl_s),
        sub: name.clone(),
        r: ranges.iter().map(|b| (b.start, b.end)).collect(),
        repo: cas.0.repo,
        grant: cas.0.grant,
    };
    let sig = state.keys.sign(&claims).await.map_err(ApiError::internal)?;
    Ok(format!(
        "{}{CAS_PREFIX}/v1/xorbs/default/{name}?sig={sig}",
        state.public_url.trim_end_matches('/')
    ))
}

/// Loads the file and plans the answer for the request's `Range`.
async fn plan(state: &AppState, cas: &CasToken, file: &str, req: &HttpRequest) -> ApiResult<Plan> {
    let file = hash::parse_hash(file)?;
    let (size, terms) = db::xet::repo_file(&state.db, cas.0.repo, &file)
        .await?
        .ok_or(ApiError::NotFound("xet file"))?;
    let range = match req.headers().get(header::RANGE) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| XetError::Range(ReconstructError::InvalidRange("not ASCII".into())))?;
            Some(reconstruct::parse_range_header(v).map_err(XetError::Range)?)
        }
    };
    let mut xorbs: Vec<XetHash> = terms.iter().map(|t| t.xorb).collect();
    xorbs.sort_unstable_by_key(hash::hash_raw);
    xorbs.dedup();
    let indexes = db::xet::xorb_indexes(&state.db, &xorbs).await?;
    reconstruct::plan(&terms, &indexes, range).map_err(|e| match e {
        ReconstructError::NotSatisfiable { .. } => ApiError::RangeNotSatisfiable { size },
        e @ ReconstructError::InvalidRange(_) => XetError::Range(e).into(),
        e => ApiError::internal(e),
    })
}

/// `GET /v1/reconstructions/{file}`: one data link per fetch entry.
pub async fn reconstruction_v1(
    state: web::Data<AppState>,
    cas: CasToken,
    file: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let plan = plan(&state, &cas, &file, &req).await?;
    let mut links = HashMap::new();
    for (x, ranges) in &plan.fetch {
        for r in ranges {
            links.insert(
                (*x, r.bytes.start),
                data_link(&state, &cas, x, &[r.bytes]).await?,
            );
        }
    }
    let body = plan.to_v1(&|x, b| links[&(*x, b[0].start)].clone());
    state.metrics.xet("reconstruction");
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /v2/reconstructions/{file}`: one data link per xorb, valid for each
/// of its ranges.
pub async fn reconstruction_v2(
    state: web::Data<AppState>,
    cas: CasToken,
    file: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let plan = plan(&state, &cas, &file, &req).await?;
    let mut links = HashMap::new();
    for (x, ranges) in &plan.fetch {
        let bytes: Vec<ByteRange> = ranges.iter().map(|r| r.bytes).collect();
        links.insert(*x, data_link(&state, &cas, x, &bytes).await?);
    }
    let body = plan.to_v2(&|x, _| links[x].clone());
    state.metrics.xet("reconstruction");
    Ok(HttpResponse::Ok().json(body))
}

fn link_refused(why: &str) -> ApiError {
    ApiError::Forbidden(format!("xorb data link refused: {why}"))
}

/// The rate-limit bucket of a data link (`crate::ratelimit`): its verified
/// claims (xorb and expiry), so replaying one link is limited like one
/// caller. None when `sig` is not a valid link signature.
pub async fn link_bucket(state: &AppState, sig: &str) -> Option<String> {
    let c: DataClaims = state.keys.verify(sig, DATA_AUDIENCE).await.ok()?;
    Some(format!("xet-link:{}:{}", c.sub, c.exp))
}

/// `GET /v1/xorbs/default/{hash}?sig=…`: exactly the requested byte range of
/// the stored xorb (206), when the link is unexpired, lists a range that
/// holds it, and its grant still reads its repo (else the refusal of the
/// read decision: 404 `repo_not_found`, 403 `gated_repo`, 401 for a revoked
/// token). Without `Range`, a link for one range serves that range.
/// Streamed from the object store.
pub async fn data(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (prefix, name) = path.into_inner();
    check_prefix(&prefix, false)?;
    let xorb = hash::hash_string(&hash::parse_hash(&name)?);
    let sig = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| link_refused("no signature"))?;
    let c: DataClaims = state
        .keys
        .verify(&sig, DATA_AUDIENCE)
        .await
        .map_err(|_| link_refused("invalid or expired signature"))?;
    // Strict expiry (the JWT check allows clock skew): the client asks for a
    // fresh reconstruction on 403.
    if c.exp <= chrono::Utc::now().timestamp() {
        return Err(link_refused("expired"));
    }
    if c.sub != xorb {
        return Err(link_refused("signed for another xorb"));
    }
    let (start, end) = match req.headers().get(header::RANGE) {
        Some(v) => {
            let v = v.to_str().map_err(|_| link_refused("malformed Range"))?;
            match reconstruct::parse_range_header(v) {
                Ok(reconstruct::RangeRequest::FromTo(a, b)) => (a, b),
                _ => return Err(link_refused("Range must be one bytes=start-end")),
            }
        }
        None if c.r.len() == 1 => c.r[0],
        None => return Err(link_refused("send one of the link's ranges in Range")),
    };
    if !c.r.iter().any(|&(s, e)| s <= start && end <= e) {
        return Err(link_refused("range not covered by the link"));
    }
    // Whoever the link was minted for must still read the repo, now.
    crate::gating::recheck(&state, c.grant, c.repo, crate::auth::Access::Read).await?;
    let stream = state.storage.read_xorb(&xorb, start..end + 1).await?;
    state.metrics.xet("xorb_range");
    state.metrics.xet_bytes.add(&["down"], end + 1 - start);
    Ok(
        crate::routes::hf::resolve::untrusted_bytes(&mut HttpResponse::PartialContent())
            .content_type("application/octet-stream")
            .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/*")))
            .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
            .no_chunking(end + 1 - start)
            .streaming(stream),
    )
}

/// `GET /v1/chunks/{default|default-merkledb}/{chunk}`: the dedup shard of
/// this namespace's newest upload holding the chunk, its chunk hashes keyed
/// with a fresh HMAC key (§6.7), or 404. Only for a write token: the client
/// queries while uploading, and the answer covers every repo of the
/// namespace, private ones included, so a read token (which anyone can mint
/// for a public repo) would let a stranger confirm that the namespace holds
/// given content and see how its uploads are laid out.
pub async fn chunk(
    state: web::Data<AppState>,
    cas: CasToken,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    cas.need_write()?;
    let (prefix, chunk) = path.into_inner();
    check_prefix(&prefix, true).map_err(|_| ApiError::NotFound("dedup prefix"))?;
    let chunk = hash::parse_hash(&chunk)?;
    // Under the index lock, recorded as handed out: the collector keeps these
    // xorbs until the answer's key expires (crate::sweeper).
    let mut tx = state.db.begin().await?;
    db::xet_gc::lock_index_shared(&mut tx).await?;
    let set = db::xet::dedup_set(&mut *tx, cas.0.ns, &chunk)
        .await?
        .ok_or(ApiError::NotFound("chunk"))?;
    db::xet_gc::mark_served(&mut *tx, cas.0.ns, &chunk).await?;
    let hashes: Vec<XetHash> = set.iter().map(|(x, _)| *x).collect();
    let indexes = db::xet::xorb_indexes(&mut *tx, &hashes).await?;
    tx.commit().await?;
    let key = hash::hash_from_raw(rand::random());
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let body = tokio::task::spawn_blocking(move || {
        let xorbs: Vec<DedupXorb<'_>> = set
            .iter()
            .filter_map(|(x, starts)| {
                indexes.get(x).map(|index| DedupXorb {
                    index,
                    file_start_chunks: starts,
                })
            })
            .collect();
        shard::build_dedup_shard(&xorbs, &key, now, now + DEDUP_KEY_TTL_S)
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("dedup shard task failed: {e}")))?;
    state.metrics.xet("dedup_query");
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(body))
}
