//! Xet hashes (spec §0.3, §4): the 32-byte hash type, its string form, and every hash the CAS
//! recomputes — chunk, Merkle (xorb and file), term verification, dedup HMAC — plus global-dedup
//! eligibility and the SHA-256 byte order of `FileMetadataExt`.
//!
//! All of it delegates to `xet_core_structures::merklehash` / `metadata_shard` 1.8.0, the code
//! the stock client runs, so a hash we compute is by construction the one hf_xet computes.

use sha2::Digest;
use xet_core_structures::merklehash::{self, MerkleHash};
use xet_core_structures::metadata_shard::chunk_verification::range_hash_from_chunks;
use xet_core_structures::metadata_shard::constants::hash_is_global_dedup_eligible;

/// A Xet hash (chunk, xorb, file, verification, HMAC key or shard-encoded SHA-256): 32 raw bytes.
pub type XetHash = MerkleHash;

/// A hash string that is not 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a Xet hash: expected 64 hex digits, got {len} characters")]
pub struct HashParseError {
    /// Length of the rejected input in characters.
    pub len: usize,
}

/// Parses the §0.3 string form (four little-endian u64 words as hex). Upper case is accepted;
/// anything but exactly 64 hex digits is rejected.
pub fn parse_hash(s: &str) -> Result<XetHash, HashParseError> {
    let err = || HashParseError {
        len: s.chars().count(),
    };
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err());
    }
    MerkleHash::from_hex(s).map_err(|_| err())
}

/// The §0.3 string form: lower-case, 64 characters (what URLs, JSON and `X-Xet-Hash` carry).
pub fn hash_string(h: &XetHash) -> String {
    h.hex()
}

/// The hash from its 32 raw (wire) bytes.
pub fn hash_from_raw(raw: [u8; 32]) -> XetHash {
    XetHash::from(raw)
}

/// The 32 raw (wire) bytes of a hash.
pub fn hash_raw(h: &XetHash) -> [u8; 32] {
    (*h).into()
}

/// §4.2: `keyed_blake3(DATA_KEY, bytes)` of one uncompressed chunk.
pub fn chunk_hash(data: &[u8]) -> XetHash {
    merklehash::compute_data_hash(data)
}

/// §4.3/§4.4: the aggregated Merkle hash of `(chunk hash, uncompressed length)` in xorb order.
pub fn xorb_hash(chunks: &[(XetHash, u64)]) -> XetHash {
    merklehash::xorb_hash(chunks)
}

/// §4.5: the file hash over all chunks of a file in file order (salt zero; empty → zero hash).
pub fn file_hash(chunks: &[(XetHash, u64)]) -> XetHash {
    merklehash::file_hash(chunks)
}

/// §4.6: the verification hash of a term covering these consecutive chunk hashes.
pub fn verification_hash(chunk_hashes: &[XetHash]) -> XetHash {
    range_hash_from_chunks(chunk_hashes)
}

/// §4.7: the keyed chunk hash a dedup response carries (`keyed_blake3(key, raw hash)`).
pub fn hmac_chunk_hash(chunk: &XetHash, key: &XetHash) -> XetHash {
    chunk.hmac(*key)
}

/// §4.8: true when the hash itself makes a chunk global-dedup eligible
/// (`u64_le(hash[24..32]) % 1024 == 0`). First chunks of files are eligible as well; the shard
/// summary ([`crate::shard::ShardSummary::dedup_eligible`]) accounts for both.
pub fn is_global_dedup_eligible(h: &XetHash) -> bool {
    hash_is_global_dedup_eligible(h)
}

/// §4.9: the SHA-256 as `FileMetadataExt` stores it, from a standard digest.
pub fn sha256_to_xet(digest: [u8; 32]) -> XetHash {
    MerkleHash::from_be_bytes(digest)
}

/// §4.9: the standard lower-case SHA-256 hex (the `lfsFile.oid`) of a shard's `FileMetadataExt`
/// value. Equal to [`hash_string`]; named separately so call sites say which one they mean.
pub fn sha256_hex_from_xet(h: &XetHash) -> String {
    h.hex()
}

/// SHA-256 of bytes in the `FileMetadataExt` byte order (tests and LFS conversion).
pub fn sha256_of(data: &[u8]) -> XetHash {
    sha256_to_xet(sha2::Sha256::digest(data).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_is_word_wise_little_endian() {
        let raw: [u8; 32] = std::array::from_fn(|i| i as u8);
        let h = hash_from_raw(raw);
        let s = hash_string(&h);
        assert_eq!(
            s,
            "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
        );
        assert_eq!(parse_hash(&s).unwrap(), h);
        assert_eq!(parse_hash(&s.to_uppercase()).unwrap(), h);
        assert_eq!(hash_raw(&h), raw);
    }

    #[test]
    fn parse_rejects_bad_lengths_and_digits() {
        // The 62-character example in the official api.md (§0.3 pitfall).
        let spec_example = "07060504030201000f0e0d0c0b0a0908171615141312111f1e1d1c1b1a1918";
        assert_eq!(spec_example.len(), 62);
        assert_eq!(parse_hash(spec_example), Err(HashParseError { len: 62 }));
        assert!(parse_hash("").is_err());
        assert!(parse_hash(&"0".repeat(65)).is_err());
        assert!(parse_hash(&format!("+{}", "0".repeat(63))).is_err());
        assert!(parse_hash(&"g".repeat(64)).is_err());
        // Multi-byte characters whose byte length is 64 must not slip through.
        assert!(parse_hash(&"é".repeat(32)).is_err());
    }
}
