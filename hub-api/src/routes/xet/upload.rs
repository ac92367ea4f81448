//! CAS uploads (§7.1, §7.3): `POST /v1/xorbs/default/{hash}` and
//! `POST /v1/shards` (alias `/shards`). Bodies are read with a cap, validated
//! by `hub_xet` on the blocking pool, and only then stored and indexed: a
//! malformed body leaves no object and no row.

use super::{check_prefix, CasToken};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::routes::body::read_limited;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use hub_xet::hash::{self, XetHash};
use hub_xet::shard::{self, ShardSummary};
use hub_xet::xorb::{self, XorbIndex, XorbLimits};
use serde_json::json;
use std::collections::HashMap;

fn join(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(anyhow::anyhow!("validation task failed: {e}"))
}

/// Reserves `times` the body's size (its Content-Length, else the largest
/// body allowed) in the namespace's upload memory before the body is read.
async fn reserve_body(
    state: &AppState,
    cas: &CasToken,
    req: &HttpRequest,
    max: usize,
    times: u64,
) -> ApiResult<crate::membudget::Reservation> {
    let len = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(max as u64, |n| n.min(max as u64));
    state
        .tenancy
        .upload_memory
        .reserve(cas.0.ns, len.saturating_mul(times))
        .await
}

/// Uploads one xorb: `{"was_inserted": bool}` (false: it was already stored).
pub async fn xorb(
    state: web::Data<AppState>,
    cas: CasToken,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    cas.need_write()?;
    let (prefix, hash_str) = path.into_inner();
    check_prefix(&prefix, false)?;
    let claimed = hash::parse_hash(&hash_str)?;
    let max = state.limits.xet_xorb_body;
    // The body and its stored form are both in memory until it is stored.
    let _memory = reserve_body(&state, &cas, &req, max, 2).await?;
    let body = read_limited(&req, &mut payload.into_inner(), max).await?;
    let limits = XorbLimits {
        max_body_bytes: max,
        ..Default::default()
    };
    let (index, stored) = tokio::task::spawn_blocking(move || {
        let index = xorb::validate(&body, &claimed, &limits)?;
        let stored = xorb::stored_object(&body, &index);
        Ok::<_, xorb::XorbError>((index, stored))
    })
    .await
    .map_err(join)??;
    let name = hash::hash_string(&index.hash);
    // Quota room first (crate::quota), then the object and its row (crate::sweeper).
    let reservation =
        crate::quota::reserve_xorb(&state, cas.0.ns, &index.hash, stored.len() as i64).await?;
    let stored_bytes = stored.len() as u64;
    let inserted =
        crate::sweeper::store_xorb(&state, &name, &index, cas.0.ns, stored.into(), reservation)
            .await?;
    state.metrics.xet(if inserted {
        "xorb_upload"
    } else {
        "xorb_duplicate"
    });
    state.metrics.xet_bytes.add(&["up"], stored_bytes);
    tracing::info!(xorb = %name, repo.id = cas.0.repo, inserted, "xet xorb uploaded");
    Ok(HttpResponse::Ok().json(json!({"was_inserted": inserted})))
}

/// Uploads a shard: validates it against the stored xorbs, checks each
/// file's SHA-256 against its stored bytes, and registers its files for the
/// token's repo and its dedup chunks for the token's namespace, in one
/// transaction. `{"result": 1}`.
pub async fn shard(
    state: web::Data<AppState>,
    cas: CasToken,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    cas.need_write()?;
    let max = state.limits.xet_shard_body;
    // The body, its parsed form and the copy validated on the blocking pool.
    let _memory = reserve_body(&state, &cas, &req, max, 3).await?;
    let body = read_limited(&req, &mut payload.into_inner(), max).await?;
    let parsed = tokio::task::spawn_blocking(move || shard::parse(&body, max))
        .await
        .map_err(join)??;
    // Only xorbs this namespace uploaded: a hash learnt elsewhere is no right to bytes.
    let indexes =
        db::xet::owned_xorb_indexes(&state.db, cas.0.ns, &parsed.referenced_xorbs()).await?;
    let (summary, indexes) = {
        let parsed = parsed.clone();
        tokio::task::spawn_blocking(move || {
            shard::validate(&parsed, &indexes).map(|s| (s, indexes))
        })
        .await
        .map_err(join)??
    };
    verify_sha256(&state, &summary, &indexes).await?;
    write_recipes(&state, &summary, &indexes).await?;
    let set = dedup_set(&summary, &parsed);
    let mut tx = state.db.begin().await?;
    let xorbs = parsed.referenced_xorbs();
    crate::sweeper::guard_shard(&mut tx, &state.storage, cas.0.ns, &xorbs, &summary.files).await?;
    db::xet::register_shard(
        &mut tx,
        cas.0.ns,
        cas.0.repo,
        &summary.files,
        &set,
        &summary.dedup_eligible,
    )
    .await?;
    tx.commit().await?;
    state.metrics.xet("shard_upload");
    tracing::info!(
        repo.id = cas.0.repo,
        files = summary.files.len(),
        dedup_chunks = summary.dedup_eligible.len(),
        "xet shard registered"
    );
    Ok(HttpResponse::Ok().json(json!({"result": 1})))
}

/// Recomputes each file's SHA-256 from the stored xorbs (the value later ties
/// a commit's LFS pointer to the file, §9.4, so it is not taken on trust).
/// One term is in memory at a time; reads run on the blocking pool.
async fn verify_sha256(
    state: &AppState,
    summary: &ShardSummary,
    indexes: &HashMap<XetHash, XorbIndex>,
) -> ApiResult<()> {
    let storage = state.storage.clone();
    let files = summary.files.clone();
    let indexes = indexes.clone();
    let rt = tokio::runtime::Handle::current();
    let verified = tokio::task::spawn_blocking(move || {
        let mut read = |x: &XetHash, s: u64, e: u64| -> Result<Vec<u8>, String> {
            let name = hash::hash_string(x);
            rt.block_on(async {
                use futures::StreamExt;
                let mut stream = storage
                    .read_xorb(&name, s..e)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::with_capacity((e - s) as usize);
                while let Some(c) = stream.next().await {
                    out.extend_from_slice(&c.map_err(|e| e.to_string())?);
                }
                Ok::<_, String>(out)
            })
        };
        for f in &files {
            shard::verify_file_sha256(f, &indexes, &mut read)?;
        }
        Ok::<_, shard::ShardError>(())
    })
    .await
    .map_err(join)?;
    match verified {
        // Collected since the shard was checked against the index (unused
        // past the grace): the client's answer is the one for a xorb never
        // uploaded, 400, not a server fault.
        Err(shard::ShardError::UnreadableXorb { xorb, .. })
            if state.storage.xorb_size(&xorb).await?.is_none() =>
        {
            Err(shard::ShardError::UnknownXorb { xorb }.into())
        }
        other => Ok(other?),
    }
}

/// Writes the recipe of each file with a verified SHA-256 (how the storage
/// layer serves it as a blob, `hub_xet::recipe`), before the transaction
/// that makes it a blob: a blob row always has its recipe. A recipe left by
/// a transaction that then fails is harmless (write-if-absent, by content).
async fn write_recipes(
    state: &AppState,
    summary: &ShardSummary,
    indexes: &HashMap<XetHash, XorbIndex>,
) -> ApiResult<()> {
    for f in &summary.files {
        let Some(sha) = &f.sha256 else { continue };
        let sha = crate::domain::Sha256::parse(sha)?;
        let recipe = hub_xet::recipe::Recipe::build(f, indexes)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("a validated file: {e}")))?;
        state
            .storage
            .put_xet_recipe(&sha, recipe.encode().into())
            .await?;
    }
    Ok(())
}

/// The dedup set a query hitting this shard's chunks hands out (§6.7): the
/// listed xorbs, then the other xorbs the files use, each with the chunk
/// indices that start a file.
fn dedup_set(summary: &ShardSummary, parsed: &shard::ParsedShard) -> Vec<(XetHash, Vec<u32>)> {
    let mut order: Vec<XetHash> = parsed.xorbs.iter().map(|x| x.hash).collect();
    for f in &summary.files {
        for t in &f.terms {
            if !order.contains(&t.xorb) {
                order.push(t.xorb);
            }
        }
    }
    order
        .into_iter()
        .map(|x| {
            let mut starts: Vec<u32> = summary
                .files
                .iter()
                .filter_map(|f| f.terms.first())
                .filter(|t| t.xorb == x)
                .map(|t| t.chunk_start)
                .collect();
            starts.sort_unstable();
            starts.dedup();
            (x, starts)
        })
        .collect()
}
