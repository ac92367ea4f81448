//! File reconstruction answers (spec §7.6-§7.8): from a file's terms, the indexes of its xorbs
//! and an optional `Range`, the v1 and v2 JSON bodies. Pure: data URLs come from a
//! caller-provided closure (the route signs them), nothing here touches storage.
//!
//! Range semantics follow §7.8 (xet-core's `compute_reconstruction_ranges`): whole terms and
//! whole chunks outside the range are dropped, chunks are never split (the client trims bytes
//! itself using `offset_into_first_range`), `start >= size` is 416, the end is clamped to the
//! size, and per xorb the kept chunk ranges are sorted and merged when they overlap or touch.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::hash::{self, XetHash};
use crate::shard::FileTerm;
use crate::xorb::XorbIndex;

/// A `Range` request header value, before the file size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=a-b` (inclusive).
    FromTo(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n` (the last n bytes).
    Suffix(u64),
}

/// Why a reconstruction cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReconstructError {
    /// Malformed or multi-range `Range` header (400).
    #[error("invalid Range header: {0}")]
    InvalidRange(String),
    /// The range starts at or after the end of the file (416).
    #[error("range not satisfiable: the file has {size} bytes")]
    NotSatisfiable { size: u64 },
    /// A term names a xorb whose index was not supplied (an index inconsistency: 500).
    #[error("xorb {0} of the file is not indexed")]
    MissingXorb(String),
    /// A term's chunk range does not fit its xorb (an index inconsistency: 500).
    #[error("a term references chunks [{start}, {end}) of xorb {xorb}, which has {chunks}")]
    BadTerm {
        xorb: String,
        start: u32,
        end: u32,
        chunks: usize,
    },
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n`, and the `a-b` form of hf_xet ≤ 1.0.4.
pub fn parse_range_header(value: &str) -> Result<RangeRequest, ReconstructError> {
    let bad = || ReconstructError::InvalidRange(value.to_string());
    let v = value.trim();
    let spec = v.strip_prefix("bytes=").unwrap_or(v).trim();
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, ReconstructError> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    match (a.trim(), b.trim()) {
        ("", n) => Ok(RangeRequest::Suffix(num(n)?)),
        (a, "") => Ok(RangeRequest::From(num(a)?)),
        (a, b) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(bad());
            }
            Ok(RangeRequest::FromTo(a, b))
        }
    }
}

/// Chunk index range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChunkRange {
    pub start: u32,
    pub end: u32,
}

/// Byte range with an **inclusive** end, as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// One (possibly trimmed) term of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconstructionTerm {
    pub hash: String,
    pub unpacked_length: u32,
    pub range: ChunkRange,
}

/// A merged chunk range of one xorb and its bytes in the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRange {
    pub chunks: ChunkRange,
    pub bytes: ByteRange,
}

/// The version-independent answer; render with [`Plan::to_v1`] / [`Plan::to_v2`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Σ of all terms' unpacked bytes.
    pub file_size: u64,
    pub offset_into_first_range: u64,
    pub terms: Vec<ReconstructionTerm>,
    /// Per xorb (in order of first use), its merged fetch ranges sorted by chunk start.
    pub fetch: Vec<(XetHash, Vec<FetchRange>)>,
}

/// Computes the reconstruction of a file (§7.8).
pub fn plan(
    terms: &[FileTerm],
    xorbs: &HashMap<XetHash, XorbIndex>,
    range: Option<RangeRequest>,
) -> Result<Plan, ReconstructError> {
    // Chunk sizes per term, from the (validated) xorb indexes.
    let mut sized = Vec::with_capacity(terms.len());
    for t in terms {
        let x = xorbs
            .get(&t.xorb)
            .ok_or_else(|| ReconstructError::MissingXorb(hash::hash_string(&t.xorb)))?;
        let (s, e) = (t.chunk_start as usize, t.chunk_end as usize);
        if s >= e || e > x.chunks.len() {
            return Err(ReconstructError::BadTerm {
                xorb: hash::hash_string(&t.xorb),
                start: t.chunk_start,
                end: t.chunk_end,
                chunks: x.chunks.len(),
            });
        }
        sized.push((t, x));
    }
    let file_size: u64 = sized
        .iter()
        .map(|(t, x)| {
            x.chunks[t.chunk_start as usize..t.chunk_end as usize]
                .iter()
                .map(|c| u64::from(c.uncompressed_len))
                .sum::<u64>()
        })
        .sum();
    let (a, end) = match range {
        None => (0, file_size),
        Some(r) => {
            let (a, b) = match r {
                RangeRequest::FromTo(a, b) => (a, b),
                RangeRequest::From(a) => (a, u64::MAX),
                RangeRequest::Suffix(n) => {
                    if n == 0 {
                        return Err(ReconstructError::NotSatisfiable { size: file_size });
                    }
                    (file_size.saturating_sub(n), u64::MAX)
                }
            };
            if a >= file_size && !(file_size == 0 && a == 0) {
                return Err(ReconstructError::NotSatisfiable { size: file_size });
            }
            (a, b.saturating_add(1).min(file_size))
        }
    };

    let mut out_terms = Vec::new();
    let mut per_xorb: Vec<(XetHash, Vec<ChunkRange>)> = Vec::new();
    let mut offset_into_first_range = 0;
    let mut pos = 0u64; // file offset of the current chunk
    for (t, x) in sized {
        if pos >= end {
            break;
        }
        let mut kept: Option<(u32, u32)> = None;
        let mut first_kept_pos = 0;
        let mut kept_bytes = 0u64;
        for ci in t.chunk_start..t.chunk_end {
            let len = u64::from(x.chunks[ci as usize].uncompressed_len);
            let (cs, ce) = (pos, pos + len);
            pos = ce;
            if ce <= a || cs >= end {
                continue;
            }
            match &mut kept {
                None => {
                    kept = Some((ci, ci + 1));
                    first_kept_pos = cs;
                }
                Some((_, e)) => *e = ci + 1,
            }
            kept_bytes += len;
        }
        let Some((s, e)) = kept else { continue };
        if out_terms.is_empty() {
            offset_into_first_range = a - first_kept_pos;
        }
        out_terms.push(ReconstructionTerm {
            hash: hash::hash_string(&t.xorb),
            unpacked_length: kept_bytes as u32,
            range: ChunkRange { start: s, end: e },
        });
        match per_xorb.iter_mut().find(|(h, _)| *h == t.xorb) {
            Some((_, v)) => v.push(ChunkRange { start: s, end: e }),
            None => per_xorb.push((t.xorb, vec![ChunkRange { start: s, end: e }])),
        }
    }

    let fetch = per_xorb
        .into_iter()
        .map(|(h, mut ranges)| {
            ranges.sort_by_key(|r| (r.start, r.end));
            let mut merged: Vec<ChunkRange> = Vec::new();
            for r in ranges {
                match merged.last_mut() {
                    Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                    _ => merged.push(r),
                }
            }
            let x = &xorbs[&h];
            let fr = merged
                .into_iter()
                .map(|c| {
                    // In bounds: every range came from a checked term.
                    let (bs, be) = x
                        .byte_range(c.start as usize, c.end as usize)
                        .unwrap_or((0, 1));
                    FetchRange {
                        chunks: c,
                        bytes: ByteRange {
                            start: bs,
                            end: be - 1,
                        },
                    }
                })
                .collect();
            (h, fr)
        })
        .collect();
    Ok(Plan {
        file_size,
        offset_into_first_range,
        terms: out_terms,
        fetch,
    })
}

/// `QueryReconstructionResponse` (v1).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResponseV1 {
    pub offset_into_first_range: u64,
    pub terms: Vec<ReconstructionTerm>,
    pub fetch_info: BTreeMap<String, Vec<FetchInfoV1>>,
}

/// One v1 fetch entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FetchInfoV1 {
    pub range: ChunkRange,
    pub url: String,
    pub url_range: ByteRange,
}

/// `QueryReconstructionResponseV2`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResponseV2 {
    pub offset_into_first_range: u64,
    pub terms: Vec<ReconstructionTerm>,
    pub xorbs: BTreeMap<String, Vec<XorbFetchV2>>,
}

/// One v2 fetch entry: a URL valid for every listed range.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct XorbFetchV2 {
    pub url: String,
    pub ranges: Vec<RangeV2>,
}

/// A v2 range descriptor.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RangeV2 {
    pub chunks: ChunkRange,
    pub bytes: ByteRange,
}

impl Plan {
    /// The v1 body; `url(xorb, ranges)` must return a URL that authorizes those byte ranges of
    /// the stored xorb (called once per fetch entry, with one range).
    pub fn to_v1(&self, url: &dyn Fn(&XetHash, &[ByteRange]) -> String) -> ResponseV1 {
        let fetch_info = self
            .fetch
            .iter()
            .map(|(h, ranges)| {
                let entries = ranges
                    .iter()
                    .map(|r| FetchInfoV1 {
                        range: r.chunks,
                        url: url(h, &[r.bytes]),
                        url_range: r.bytes,
                    })
                    .collect();
                (hash::hash_string(h), entries)
            })
            .collect();
        ResponseV1 {
            offset_into_first_range: self.offset_into_first_range,
            terms: self.terms.clone(),
            fetch_info,
        }
    }

    /// The v2 body: one URL per xorb, authorizing all its ranges (called once per xorb).
    pub fn to_v2(&self, url: &dyn Fn(&XetHash, &[ByteRange]) -> String) -> ResponseV2 {
        let xorbs = self
            .fetch
            .iter()
            .map(|(h, ranges)| {
                let bytes: Vec<ByteRange> = ranges.iter().map(|r| r.bytes).collect();
                let entry = XorbFetchV2 {
                    url: url(h, &bytes),
                    ranges: ranges
                        .iter()
                        .map(|r| RangeV2 {
                            chunks: r.chunks,
                            bytes: r.bytes,
                        })
                        .collect(),
                };
                (hash::hash_string(h), vec![entry])
            })
            .collect();
        ResponseV2 {
            offset_into_first_range: self.offset_into_first_range,
            terms: self.terms.clone(),
            xorbs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_forms() {
        assert_eq!(
            parse_range_header("bytes=0-99"),
            Ok(RangeRequest::FromTo(0, 99))
        );
        assert_eq!(parse_range_header("5-9"), Ok(RangeRequest::FromTo(5, 9)));
        assert_eq!(parse_range_header("bytes=7-"), Ok(RangeRequest::From(7)));
        assert_eq!(parse_range_header("bytes=-3"), Ok(RangeRequest::Suffix(3)));
        for bad in [
            "bytes=9-5",
            "bytes=0-1,4-5",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "",
            "bytes=1",
        ] {
            assert!(parse_range_header(bad).is_err(), "{bad}");
        }
    }
}
