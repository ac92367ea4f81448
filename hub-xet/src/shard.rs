//! Shards (spec §6): parsing an uploaded shard, validating it against stored xorbs (§6.6),
//! writing the upload form, and building the global-dedup response shard (§6.7).
//!
//! Parsing reads the header, then the file-info section and the xorb-info section each to its
//! bookend, with `xet_core_structures::metadata_shard::streaming_shard`'s section readers given a
//! byte budget equal to the body length (so a forged entry count cannot make them allocate more
//! than the body). Whatever follows the xorb bookend (lookup tables, footer) is ignored, which
//! accepts every upload form of §6.5; `footer_size` is never used.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use xet_core_structures::metadata_shard::file_structs::{
    FileDataSequenceEntry, FileDataSequenceHeader, FileMetadataExt, FileVerificationEntry,
    MDBFileInfoView,
};
use xet_core_structures::metadata_shard::streaming_shard::{
    process_shard_file_info_section, process_shard_xorb_info_section,
};
use xet_core_structures::metadata_shard::xorb_structs::{
    MDBXorbInfoView, XorbChunkSequenceEntry, XorbChunkSequenceHeader,
    MDB_CHUNK_WITH_GLOBAL_DEDUP_FLAG,
};
use xet_core_structures::metadata_shard::{MDBShardFileFooter, MDBShardFileHeader};

use crate::hash::{self, XetHash};
use crate::xorb::XorbIndex;

/// The shard header tag (`MDB_SHARD_HEADER_TAG`).
pub const HEADER_TAG: [u8; 32] = [
    0x48, 0x46, 0x52, 0x65, 0x70, 0x6f, 0x4d, 0x65, 0x74, 0x61, 0x44, 0x61, 0x74, 0x61, 0x00, 0x55,
    0x69, 0x67, 0x45, 0x6a, 0x7b, 0x81, 0x57, 0x83, 0xa5, 0xbd, 0xd9, 0x5c, 0xcd, 0xd1, 0x4a, 0xa9,
];
/// The only shard header version.
pub const SHARD_VERSION: u64 = 2;
/// Default largest accepted shard body (the client cuts shards at ~64 MiB; HF refuses bigger).
pub const DEFAULT_MAX_SHARD_BYTES: usize = 80 * 1024 * 1024;

/// Why a shard upload is refused. All are the client's fault (HTTP 400; 413 for `TooLarge`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("shard body is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("not a shard: the header tag is wrong")]
    BadTag,
    #[error("shard header version {0} is not supported (only 2)")]
    BadVersion(u64),
    #[error("malformed shard: {0}")]
    Malformed(String),
    #[error("only some files of the shard carry verification entries")]
    MixedVerification,
    #[error("file {file} has no terms")]
    EmptyFile { file: String },
    #[error("file {file} has no verification entries")]
    MissingVerification { file: String },
    #[error("xorb {xorb} is not stored; upload xorbs before the shard that references them")]
    UnknownXorb { xorb: String },
    #[error("file {file} term {term} references chunks [{start}, {end}) of xorb {xorb}, which has {chunks}")]
    BadChunkRange {
        file: String,
        term: usize,
        xorb: String,
        start: u32,
        end: u32,
        chunks: usize,
    },
    #[error("file {file} term {term} claims {declared} bytes, its chunks hold {actual}")]
    TermSizeMismatch {
        file: String,
        term: usize,
        declared: u32,
        actual: u64,
    },
    #[error("file {file} term {term} has a wrong verification hash")]
    VerificationMismatch { file: String, term: usize },
    #[error("file {file}: its terms hash to {computed}")]
    FileHashMismatch { file: String, computed: String },
    #[error("file {file}: its bytes have SHA-256 {computed}, the shard claims {claimed}")]
    Sha256Mismatch {
        file: String,
        claimed: String,
        computed: String,
    },
    #[error("file {file}: stored xorb {xorb} cannot be read back: {reason}")]
    UnreadableXorb {
        file: String,
        xorb: String,
        reason: String,
    },
    #[error("xorb {xorb} is listed with chunks that differ from the stored xorb")]
    XorbMismatch { xorb: String },
}

/// One term of a file: chunks `[chunk_start, chunk_end)` of a xorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTerm {
    pub xorb: XetHash,
    pub chunk_start: u32,
    pub chunk_end: u32,
    /// Uncompressed bytes of those chunks.
    pub unpacked_bytes: u32,
}

/// A file as the shard describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFile {
    pub hash: XetHash,
    pub terms: Vec<FileTerm>,
    /// One verification hash per term, when the file carries them.
    pub verification: Option<Vec<XetHash>>,
    /// `FileMetadataExt` SHA-256 (shard byte order, §4.9).
    pub sha256: Option<XetHash>,
}

/// One chunk entry of a shard's xorb-info section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardChunk {
    pub hash: XetHash,
    /// Cumulative *uncompressed* offset inside the xorb (what clients write, §6.3).
    pub uncompressed_offset: u32,
    pub len: u32,
    pub flags: u32,
}

/// A xorb as the shard's xorb-info section lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardXorb {
    pub hash: XetHash,
    pub chunks: Vec<ShardChunk>,
}

/// A parsed (not yet validated) shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedShard {
    pub files: Vec<ShardFile>,
    pub xorbs: Vec<ShardXorb>,
}

/// Parses a shard body in any §6.5 form. Never panics on malformed input.
pub fn parse(body: &[u8], max_len: usize) -> Result<ParsedShard, ShardError> {
    if body.len() > max_len {
        return Err(ShardError::TooLarge {
            len: body.len(),
            max: max_len,
        });
    }
    if body.len() < 48 {
        return Err(ShardError::Malformed(
            "shorter than the 48-byte header".into(),
        ));
    }
    if body[..32] != HEADER_TAG {
        return Err(ShardError::BadTag);
    }
    let mut r = Cursor::new(body);
    let header = MDBShardFileHeader::deserialize(&mut r)
        .map_err(|e| ShardError::Malformed(e.to_string()))?;
    if header.version != SHARD_VERSION {
        return Err(ShardError::BadVersion(header.version));
    }
    let budget = Some(body.len() as u64);
    let mut files = Vec::new();
    let budget = process_shard_file_info_section(
        &mut r,
        |v: MDBFileInfoView| {
            files.push(file_from_view(&v));
            Ok(())
        },
        budget,
    )
    .map_err(|e| ShardError::Malformed(format!("file section: {e}")))?;
    let mut xorbs = Vec::new();
    process_shard_xorb_info_section(
        &mut r,
        |v: MDBXorbInfoView| {
            xorbs.push(xorb_from_view(&v));
            Ok(())
        },
        budget,
    )
    .map_err(|e| ShardError::Malformed(format!("xorb section: {e}")))?;
    if files
        .iter()
        .map(|f| f.verification.is_some())
        .collect::<HashSet<_>>()
        .len()
        > 1
    {
        return Err(ShardError::MixedVerification);
    }
    Ok(ParsedShard { files, xorbs })
}

fn file_from_view(v: &MDBFileInfoView) -> ShardFile {
    let n = v.num_entries();
    let terms = (0..n)
        .map(|i| {
            let e = v.entry(i);
            FileTerm {
                xorb: e.xorb_hash,
                chunk_start: e.chunk_index_start,
                chunk_end: e.chunk_index_end,
                unpacked_bytes: e.unpacked_segment_bytes,
            }
        })
        .collect();
    ShardFile {
        hash: v.file_hash(),
        terms,
        verification: v
            .contains_verification()
            .then(|| (0..n).map(|i| v.verification(i).range_hash).collect()),
        sha256: v.metadata_ext().map(|m| m.sha256),
    }
}

fn xorb_from_view(v: &MDBXorbInfoView) -> ShardXorb {
    ShardXorb {
        hash: v.xorb_hash(),
        chunks: (0..v.num_entries())
            .map(|i| {
                let c = v.chunk(i);
                ShardChunk {
                    hash: c.chunk_hash,
                    uncompressed_offset: c.chunk_byte_range_start,
                    len: c.unpacked_segment_bytes,
                    flags: c.flags,
                }
            })
            .collect(),
    }
}

impl ParsedShard {
    /// Every xorb the shard mentions (terms and xorb section), first appearance order: what the
    /// caller must look up before [`validate`].
    pub fn referenced_xorbs(&self) -> Vec<XetHash> {
        let mut seen = HashSet::new();
        self.files
            .iter()
            .flat_map(|f| f.terms.iter().map(|t| t.xorb))
            .chain(self.xorbs.iter().map(|x| x.hash))
            .filter(|h| seen.insert(*h))
            .collect()
    }
}

/// A validated file, ready to index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub hash: XetHash,
    /// Standard lower-case SHA-256 hex (the commit's `lfsFile.oid`), when the shard carries it.
    pub sha256: Option<String>,
    /// Σ of the terms' unpacked bytes.
    pub size: u64,
    pub terms: Vec<FileTerm>,
}

/// What a valid shard registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSummary {
    pub files: Vec<FileSummary>,
    /// Xorbs of the xorb-info section (the uploader's new xorbs) with their chunk hashes.
    pub xorbs: Vec<(XetHash, Vec<XetHash>)>,
    /// Chunk hashes for the global dedup index (§4.8, §6.6 step 4): first chunk of every file,
    /// chunks of the listed xorbs whose hash is eligible or whose entry carries flag bit 31.
    pub dedup_eligible: Vec<XetHash>,
}

/// Validates a parsed shard (§6.6) against the stored xorbs' indexes (`stored` must hold every
/// xorb of [`ParsedShard::referenced_xorbs`] that exists; a missing one is an error).
pub fn validate(
    shard: &ParsedShard,
    stored: &HashMap<XetHash, XorbIndex>,
) -> Result<ShardSummary, ShardError> {
    let lookup = |h: &XetHash| {
        stored.get(h).ok_or_else(|| ShardError::UnknownXorb {
            xorb: hash::hash_string(h),
        })
    };
    let mut files = Vec::with_capacity(shard.files.len());
    let mut eligible = Vec::new();
    let mut seen = HashSet::new();
    for f in &shard.files {
        let name = hash::hash_string(&f.hash);
        if f.terms.is_empty() {
            return Err(ShardError::EmptyFile { file: name });
        }
        let Some(verification) = &f.verification else {
            return Err(ShardError::MissingVerification { file: name });
        };
        let mut leaves = Vec::new();
        let mut size = 0u64;
        for (i, t) in f.terms.iter().enumerate() {
            let x = lookup(&t.xorb)?;
            let (s, e) = (t.chunk_start as usize, t.chunk_end as usize);
            if s >= e || e > x.chunks.len() {
                return Err(ShardError::BadChunkRange {
                    file: name,
                    term: i,
                    xorb: hash::hash_string(&t.xorb),
                    start: t.chunk_start,
                    end: t.chunk_end,
                    chunks: x.chunks.len(),
                });
            }
            let chunks = &x.chunks[s..e];
            let actual: u64 = chunks.iter().map(|c| u64::from(c.uncompressed_len)).sum();
            if actual != u64::from(t.unpacked_bytes) {
                return Err(ShardError::TermSizeMismatch {
                    file: name,
                    term: i,
                    declared: t.unpacked_bytes,
                    actual,
                });
            }
            let hashes: Vec<XetHash> = chunks.iter().map(|c| c.hash).collect();
            if hash::verification_hash(&hashes) != verification[i] {
                return Err(ShardError::VerificationMismatch {
                    file: name,
                    term: i,
                });
            }
            leaves.extend(
                chunks
                    .iter()
                    .map(|c| (c.hash, u64::from(c.uncompressed_len))),
            );
            size += actual;
        }
        let computed = hash::file_hash(&leaves);
        if computed != f.hash {
            return Err(ShardError::FileHashMismatch {
                file: name,
                computed: hash::hash_string(&computed),
            });
        }
        let first = leaves[0].0;
        if seen.insert(first) {
            eligible.push(first);
        }
        files.push(FileSummary {
            hash: f.hash,
            sha256: f.sha256.as_ref().map(hash::sha256_hex_from_xet),
            size,
            terms: f.terms.clone(),
        });
    }
    let mut xorbs = Vec::with_capacity(shard.xorbs.len());
    for x in &shard.xorbs {
        let s = lookup(&x.hash)?;
        let same = s.chunks.len() == x.chunks.len()
            && s.chunks
                .iter()
                .zip(&x.chunks)
                .all(|(a, b)| a.hash == b.hash && a.uncompressed_len == b.len);
        if !same {
            return Err(ShardError::XorbMismatch {
                xorb: hash::hash_string(&x.hash),
            });
        }
        for c in &x.chunks {
            if (hash::is_global_dedup_eligible(&c.hash)
                || c.flags & MDB_CHUNK_WITH_GLOBAL_DEDUP_FLAG != 0)
                && seen.insert(c.hash)
            {
                eligible.push(c.hash);
            }
        }
        xorbs.push((x.hash, x.chunks.iter().map(|c| c.hash).collect()));
    }
    Ok(ShardSummary {
        files,
        xorbs,
        dedup_eligible: eligible,
    })
}

/// Reads bytes `[start, end)` of a stored xorb object; the error is a human-readable reason.
pub type XorbRangeReader<'a> = dyn FnMut(&XetHash, u64, u64) -> Result<Vec<u8>, String> + 'a;

/// Recomputes a registered file's SHA-256 from its stored chunks and compares it with the
/// `FileMetadataExt` value (§6.6 lets a server trust it; Paddock should not, because the commit
/// links an LFS pointer's oid to the Xet file through it, §9.4). `read(xorb, start, end)` returns
/// bytes `[start, end)` of the stored xorb object; one term is held in memory at a time. A file
/// without a SHA-256 passes. Cost: reading and decompressing the file once (run it off the async
/// executor).
pub fn verify_file_sha256(
    file: &FileSummary,
    xorbs: &HashMap<XetHash, XorbIndex>,
    read: &mut XorbRangeReader<'_>,
) -> Result<(), ShardError> {
    use sha2::Digest;
    let Some(claimed) = &file.sha256 else {
        return Ok(());
    };
    let name = || hash::hash_string(&file.hash);
    let mut hasher = sha2::Sha256::new();
    for t in &file.terms {
        let unreadable = |reason: String| ShardError::UnreadableXorb {
            file: name(),
            xorb: hash::hash_string(&t.xorb),
            reason,
        };
        let x = xorbs.get(&t.xorb).ok_or_else(|| ShardError::UnknownXorb {
            xorb: hash::hash_string(&t.xorb),
        })?;
        let (s, e) = x
            .byte_range(t.chunk_start as usize, t.chunk_end as usize)
            .ok_or_else(|| unreadable("term outside the xorb".into()))?;
        let bytes = read(&t.xorb, s, e).map_err(unreadable)?;
        let chunks =
            crate::xorb::decode_chunks(&bytes).map_err(|err| unreadable(err.to_string()))?;
        let expected = &x.chunks[t.chunk_start as usize..t.chunk_end as usize];
        if chunks.len() != expected.len() {
            return Err(unreadable("chunk count differs from the index".into()));
        }
        for c in &chunks {
            hasher.update(c);
        }
    }
    let computed = hex_lower(&hasher.finalize());
    if &computed != claimed {
        return Err(ShardError::Sha256Mismatch {
            file: name(),
            claimed: claimed.clone(),
            computed,
        });
    }
    Ok(())
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A file to write into an upload-form shard.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub hash: XetHash,
    pub terms: Vec<FileTerm>,
    /// Verification hash per term.
    pub verification: Vec<XetHash>,
    /// SHA-256 in shard byte order ([`hash::sha256_to_xet`]).
    pub sha256: Option<XetHash>,
}

/// Writes the upload form of a shard (§6.5, hf_xet ≥ 1.3.0: header with `footer_size = 0`, file
/// section, xorb section, no lookup tables, no footer), as the client does. `xorbs` are the new
/// xorbs of the upload; their chunk entries carry cumulative uncompressed offsets.
pub fn write_upload_shard(files: &[NewFile], xorbs: &[&XorbIndex]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, 0);
    write_file_section(&mut out, files);
    write_xorb_section(&mut out, xorbs, &|_, _| false, None);
    out
}

/// A xorb to put into a dedup response, with the indices of its chunks that start a file (they
/// get the global-dedup flag, as the reference serializer does).
#[derive(Debug, Clone, Copy)]
pub struct DedupXorb<'a> {
    pub index: &'a XorbIndex,
    pub file_start_chunks: &'a [u32],
}

/// Builds the global-dedup response shard (§6.7): a complete shard with footer, an empty file
/// section, every given xorb's chunk list with chunk hashes keyed by `hmac_key` (all-zero key =
/// raw hashes), creation time and key expiry in Unix seconds, and empty lookup tables whose
/// offsets point at the footer.
pub fn build_dedup_shard(
    xorbs: &[DedupXorb<'_>],
    hmac_key: &XetHash,
    created: u64,
    expiry: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, 200);
    let file_info_offset = out.len() as u64;
    write_file_section(&mut out, &[]);
    let xorb_info_offset = out.len() as u64;
    let indexes: Vec<&XorbIndex> = xorbs.iter().map(|d| d.index).collect();
    let flagged = |xi: usize, ci: usize| xorbs[xi].file_start_chunks.contains(&(ci as u32));
    let key = (*hmac_key != XetHash::default()).then_some(hmac_key);
    write_xorb_section(&mut out, &indexes, &flagged, key);
    let footer_offset = out.len() as u64;
    let stored_bytes = indexes.iter().map(|x| x.uncompressed_bytes()).sum();
    let footer = MDBShardFileFooter {
        file_info_offset,
        xorb_info_offset,
        file_lookup_offset: footer_offset,
        xorb_lookup_offset: footer_offset,
        chunk_lookup_offset: footer_offset,
        chunk_hash_hmac_key: *hmac_key,
        shard_creation_timestamp: created,
        shard_key_expiry: expiry,
        stored_bytes,
        footer_offset,
        ..Default::default()
    };
    let _ = footer.serialize(&mut out);
    out
}

fn write_header(out: &mut Vec<u8>, footer_size: u64) {
    out.extend_from_slice(&HEADER_TAG);
    out.extend_from_slice(&SHARD_VERSION.to_le_bytes());
    out.extend_from_slice(&footer_size.to_le_bytes());
}

// Writing into a Vec cannot fail, hence the ignored io::Results below.
fn write_file_section(out: &mut Vec<u8>, files: &[NewFile]) {
    for f in files {
        let with_verification = !f.verification.is_empty();
        let _ = FileDataSequenceHeader::new(
            f.hash,
            f.terms.len() as u32,
            with_verification,
            f.sha256.is_some(),
        )
        .serialize(out);
        for t in &f.terms {
            let _ =
                FileDataSequenceEntry::new(t.xorb, t.unpacked_bytes, t.chunk_start, t.chunk_end)
                    .serialize(out);
        }
        for v in &f.verification {
            let _ = FileVerificationEntry::new(*v).serialize(out);
        }
        if let Some(sha) = f.sha256 {
            let _ = FileMetadataExt::new(sha).serialize(out);
        }
    }
    let _ = FileDataSequenceHeader::bookend().serialize(out);
}

fn write_xorb_section(
    out: &mut Vec<u8>,
    xorbs: &[&XorbIndex],
    flagged: &dyn Fn(usize, usize) -> bool,
    hmac_key: Option<&XetHash>,
) {
    for (xi, x) in xorbs.iter().enumerate() {
        let _ = XorbChunkSequenceHeader::new(
            x.hash,
            x.chunks.len() as u32,
            x.uncompressed_bytes() as u32,
        )
        .serialize(out);
        let mut offset = 0u32;
        for (ci, c) in x.chunks.iter().enumerate() {
            let h = hmac_key.map_or(c.hash, |k| hash::hmac_chunk_hash(&c.hash, k));
            let _ = XorbChunkSequenceEntry::new(h, c.uncompressed_len, offset)
                .with_global_dedup_flag(flagged(xi, ci))
                .serialize(out);
            offset += c.uncompressed_len;
        }
    }
    let _ = XorbChunkSequenceHeader::bookend().serialize(out);
}
