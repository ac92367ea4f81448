//! The Xet CAS index (issue 12): xorbs, registered files, which repo
//! registered them, and the per-namespace global-dedup index. Hashes are the
//! 32 raw bytes; the packed forms are `hub_xet`'s.

use hub_xet::hash::{self, XetHash};
use hub_xet::shard::{FileSummary, FileTerm};
use hub_xet::xorb::XorbIndex;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;

/// Bytes of one packed term: xorb hash, chunk start, chunk end, unpacked bytes.
const PACKED_TERM_LEN: usize = 44;

fn raw(h: &XetHash) -> Vec<u8> {
    hash::hash_raw(h).to_vec()
}

fn from_raw(b: &[u8]) -> Option<XetHash> {
    let a: [u8; 32] = b.try_into().ok()?;
    Some(hash::hash_from_raw(a))
}

/// A row that does not decode: the index is corrupt (a 500).
#[derive(Debug, thiserror::Error)]
#[error("corrupt xet index row: {0}")]
pub struct CorruptRow(pub String);

/// Packs a file's terms for `xet_files.terms`.
pub fn pack_terms(terms: &[FileTerm]) -> Vec<u8> {
    let mut out = Vec::with_capacity(terms.len() * PACKED_TERM_LEN);
    for t in terms {
        out.extend_from_slice(&hash::hash_raw(&t.xorb));
        out.extend_from_slice(&t.chunk_start.to_le_bytes());
        out.extend_from_slice(&t.chunk_end.to_le_bytes());
        out.extend_from_slice(&t.unpacked_bytes.to_le_bytes());
    }
    out
}

/// Inverse of [`pack_terms`].
pub fn unpack_terms(b: &[u8]) -> Result<Vec<FileTerm>, CorruptRow> {
    if b.is_empty() || !b.len().is_multiple_of(PACKED_TERM_LEN) {
        return Err(CorruptRow(format!("terms of {} bytes", b.len())));
    }
    let u32_at = |c: &[u8], i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
    Ok(b.chunks_exact(PACKED_TERM_LEN)
        .map(|c| FileTerm {
            xorb: from_raw(&c[..32]).expect("32 bytes"),
            chunk_start: u32_at(c, 32),
            chunk_end: u32_at(c, 36),
            unpacked_bytes: u32_at(c, 40),
        })
        .collect())
}

/// Records a validated, stored xorb and that `namespace_id` uploaded it (so may
/// reference it in a shard). False when it was already indexed.
pub async fn insert_xorb(
    db: &mut PgConnection,
    index: &XorbIndex,
    namespace_id: i64,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO xet_xorbs (hash, num_chunks, chunk_stream_bytes, stored_bytes, chunk_index, namespace_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(raw(&index.hash))
    .bind(index.chunks.len() as i32)
    .bind(index.chunk_stream_len as i64)
    .bind(index.stored_len() as i64)
    .bind(index.chunks_to_bytes())
    .bind(namespace_id)
    .execute(&mut *db)
    .await?;
    // Every namespace that uploads the bytes may reference them, the first or not.
    sqlx::query(
        "INSERT INTO xet_xorb_owners (xorb_hash, namespace_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(raw(&index.hash))
    .bind(namespace_id)
    .execute(&mut *db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The indexes of those of `hashes` that are stored and that `namespace_id`
/// uploaded itself: the xorbs a shard of that namespace may reference (the others
/// are absent, so the shard is refused as naming an unknown xorb, which says
/// nothing about whether another tenant stores it).
pub async fn owned_xorb_indexes(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    hashes: &[XetHash],
) -> Result<HashMap<XetHash, XorbIndex>, crate::error::ApiError> {
    let keys: Vec<Vec<u8>> = hashes.iter().map(raw).collect();
    let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT x.hash, x.chunk_stream_bytes, x.chunk_index
         FROM xet_xorbs x JOIN xet_xorb_owners o ON o.xorb_hash = x.hash
         WHERE x.hash = ANY($1) AND o.namespace_id = $2",
    )
    .bind(&keys)
    .bind(namespace_id)
    .fetch_all(db)
    .await?;
    decode_indexes(rows)
}

/// The indexes of those of `hashes` that are stored (missing ones are absent).
pub async fn xorb_indexes(
    db: impl PgExecutor<'_>,
    hashes: &[XetHash],
) -> Result<HashMap<XetHash, XorbIndex>, crate::error::ApiError> {
    let keys: Vec<Vec<u8>> = hashes.iter().map(raw).collect();
    let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT hash, chunk_stream_bytes, chunk_index FROM xet_xorbs WHERE hash = ANY($1)",
    )
    .bind(&keys)
    .fetch_all(db)
    .await?;
    decode_indexes(rows)
}

fn decode_indexes(
    rows: Vec<(Vec<u8>, i64, Vec<u8>)>,
) -> Result<HashMap<XetHash, XorbIndex>, crate::error::ApiError> {
    let mut out = HashMap::with_capacity(rows.len());
    for (h, len, packed) in rows {
        let h = from_raw(&h).ok_or_else(|| corrupt("xorb hash"))?;
        let idx = XorbIndex::from_packed(h, len as u64, &packed)
            .ok_or_else(|| corrupt("xorb chunk index"))?;
        out.insert(h, idx);
    }
    Ok(out)
}

fn corrupt(what: &str) -> crate::error::ApiError {
    crate::error::ApiError::internal(CorruptRow(what.to_string()))
}

/// Registers a shard's files for `repo_id` and its dedup set for
/// `namespace_id`, in the caller's transaction. `xorbs` is the dedup set
/// (every xorb the files use and the shard lists), with the chunk indices
/// that start a file; `dedup_chunks` are the eligible chunk hashes.
pub async fn register_shard(
    tx: &mut PgConnection,
    namespace_id: i64,
    repo_id: i64,
    files: &[FileSummary],
    xorbs: &[(XetHash, Vec<u32>)],
    dedup_chunks: &[XetHash],
) -> sqlx::Result<()> {
    // Linking files to the repo changes the namespace's usage: under its
    // quota lock, as every change a quota check could miss is made.
    if files.iter().any(|f| f.sha256.is_some()) {
        crate::quota::lock_namespace(&mut *tx, namespace_id).await?;
    }
    for f in files {
        let fh = raw(&f.hash);
        sqlx::query(
            "INSERT INTO xet_files (file_hash, size, terms) VALUES ($1, $2, $3)
             ON CONFLICT (file_hash) DO NOTHING",
        )
        .bind(&fh)
        .bind(f.size as i64)
        .bind(pack_terms(&f.terms))
        .execute(&mut *tx)
        .await?;
        let used: Vec<Vec<u8>> = f.terms.iter().map(|t| raw(&t.xorb)).collect();
        sqlx::query(
            "INSERT INTO xet_file_xorbs (file_hash, xorb_hash)
             SELECT $1, x FROM unnest($2::bytea[]) AS x ON CONFLICT DO NOTHING",
        )
        .bind(&fh)
        .bind(&used)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO xet_repo_files (repo_id, file_hash, sha256) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id, file_hash) DO UPDATE
             SET sha256 = COALESCE(EXCLUDED.sha256, xet_repo_files.sha256)",
        )
        .bind(repo_id)
        .bind(&fh)
        .bind(f.sha256.as_deref())
        .execute(&mut *tx)
        .await?;
        // The file as a blob of the repo (§9.4): an `lfsFile` with this oid
        // commits like an uploaded LFS object. Under the blob's shared lock, as
        // every reference is made (the collector takes it exclusively). A blob
        // already stored whole stays so; its recipe is then unused.
        if let Some(sha) = &f.sha256 {
            crate::db::lfs::lock_blob_shared(&mut *tx, sha).await?;
            sqlx::query(
                "INSERT INTO blobs (sha256, size, xet_file) VALUES ($1, $2, $3)
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(sha)
            .bind(f.size as i64)
            .bind(&fh)
            .execute(&mut *tx)
            .await?;
            crate::db::lfs::link(&mut *tx, repo_id, sha).await?;
        }
    }
    if dedup_chunks.is_empty() || xorbs.is_empty() {
        return Ok(());
    }
    let set: Vec<Vec<u8>> = xorbs.iter().map(|(h, _)| raw(h)).collect();
    let starts = serde_json::Value::from(
        xorbs
            .iter()
            .map(|(_, s)| serde_json::Value::from(s.clone()))
            .collect::<Vec<_>>(),
    );
    let (upload_id,): (i64,) = sqlx::query_as(
        "INSERT INTO xet_uploads (namespace_id, repo_id, xorbs, file_start_chunks)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(namespace_id)
    .bind(repo_id)
    .bind(&set)
    .bind(&starts)
    .fetch_one(&mut *tx)
    .await?;
    let chunks: Vec<Vec<u8>> = dedup_chunks.iter().map(raw).collect();
    sqlx::query(
        "INSERT INTO xet_dedup_chunks (namespace_id, chunk_hash, upload_id)
         SELECT $1, c, $2 FROM unnest($3::bytea[]) AS c ON CONFLICT DO NOTHING",
    )
    .bind(namespace_id)
    .bind(upload_id)
    .bind(&chunks)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A file `repo_id` may read: one it registered, or a Xet-stored blob linked
/// to it (committed or uploaded there); its size and terms. None otherwise
/// (another repo's file is not this token's to read).
pub async fn repo_file(
    db: impl PgExecutor<'_>,
    repo_id: i64,
    file: &XetHash,
) -> Result<Option<(u64, Vec<FileTerm>)>, crate::error::ApiError> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT f.size, f.terms FROM xet_files f
         WHERE f.file_hash = $2
           AND (EXISTS (SELECT 1 FROM xet_repo_files r
                        WHERE r.repo_id = $1 AND r.file_hash = f.file_hash)
                OR EXISTS (SELECT 1 FROM blobs b
                           JOIN repo_lfs_objects l ON l.sha256 = b.sha256
                           WHERE l.repo_id = $1 AND b.xet_file = f.file_hash))",
    )
    .bind(repo_id)
    .bind(raw(file))
    .fetch_optional(db)
    .await?;
    match row {
        None => Ok(None),
        Some((size, terms)) => Ok(Some((
            size as u64,
            unpack_terms(&terms).map_err(crate::error::ApiError::internal)?,
        ))),
    }
}

/// The newest dedup set of `namespace_id` holding `chunk`: its xorbs in order
/// with their file-start chunk indices. None: not in this namespace's index.
pub async fn dedup_set(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    chunk: &XetHash,
) -> Result<Option<Vec<(XetHash, Vec<u32>)>>, crate::error::ApiError> {
    let row: Option<(Vec<Vec<u8>>, serde_json::Value)> = sqlx::query_as(
        "SELECT u.xorbs, u.file_start_chunks FROM xet_dedup_chunks d
         JOIN xet_uploads u ON u.id = d.upload_id
         WHERE d.namespace_id = $1 AND d.chunk_hash = $2
         ORDER BY u.id DESC LIMIT 1",
    )
    .bind(namespace_id)
    .bind(raw(chunk))
    .fetch_optional(db)
    .await?;
    let Some((xorbs, starts)) = row else {
        return Ok(None);
    };
    let starts: Vec<Vec<u32>> =
        serde_json::from_value(starts).map_err(|_| corrupt("file_start_chunks"))?;
    if starts.len() != xorbs.len() {
        return Err(corrupt("dedup set"));
    }
    let mut out = Vec::with_capacity(xorbs.len());
    for (x, s) in xorbs.iter().zip(starts) {
        out.push((from_raw(x).ok_or_else(|| corrupt("xorb hash"))?, s));
    }
    Ok(Some(out))
}
