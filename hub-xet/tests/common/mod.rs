//! Shared test data: the SplitMix64 streams of the golden vectors and small helpers.
#![allow(dead_code)]

use std::collections::HashMap;

use hub_xet::hash::{self, XetHash};
use hub_xet::shard::{FileTerm, NewFile};
use hub_xet::xorb::{self, Compression, XorbIndex, XorbLimits};
use sha2::Digest;

/// §3.3: SplitMix64(seed) output words as little-endian bytes, truncated to `n`.
pub fn splitmix(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn d1() -> Vec<u8> {
    splitmix(0, 1_000_000)
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

pub fn h(s: &str) -> XetHash {
    hash::parse_hash(s).unwrap()
}

/// Chunks `data`, packs every chunk into one xorb with `scheme`, validates it; returns the
/// upload body and its index.
pub fn xorb_of(data: &[u8], scheme: Compression) -> (Vec<u8>, XorbIndex) {
    let chunks = hub_xet::chunker::chunks(data);
    let body = xorb::serialize_chunks(&chunks, scheme);
    let leaves: Vec<_> = chunks
        .iter()
        .map(|c| (hash::chunk_hash(c), c.len() as u64))
        .collect();
    let idx = xorb::validate(&body, &hash::xorb_hash(&leaves), &XorbLimits::default()).unwrap();
    (body, idx)
}

/// A file made of the given (xorb, chunk range) terms, with correct verification, file hash
/// and SHA-256 of `data`.
pub fn new_file(data: &[u8], terms: &[(&XorbIndex, u32, u32)]) -> NewFile {
    let mut leaves = Vec::new();
    let mut out_terms = Vec::new();
    let mut verification = Vec::new();
    for (x, s, e) in terms {
        let cs = &x.chunks[*s as usize..*e as usize];
        leaves.extend(cs.iter().map(|c| (c.hash, u64::from(c.uncompressed_len))));
        verification.push(hash::verification_hash(
            &cs.iter().map(|c| c.hash).collect::<Vec<_>>(),
        ));
        out_terms.push(FileTerm {
            xorb: x.hash,
            chunk_start: *s,
            chunk_end: *e,
            unpacked_bytes: cs.iter().map(|c| c.uncompressed_len).sum(),
        });
    }
    NewFile {
        hash: hash::file_hash(&leaves),
        terms: out_terms,
        verification,
        sha256: Some(hash::sha256_of(data)),
    }
}

pub fn index_map(xs: &[&XorbIndex]) -> HashMap<XetHash, XorbIndex> {
    xs.iter().map(|x| (x.hash, (*x).clone())).collect()
}
