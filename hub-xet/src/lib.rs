//! Xet storage for Paddock (issue 12): the formats, validation and pure logic of the CAS, with
//! no HTTP and no database, so the routes that use it stay thin.
//!
//! The normative reference is `shared/reference/xet-protocol.md` (the server-side spec); section
//! numbers below are its. Every binary format and hash comes from `xet-core-structures = "=1.8.0"`
//! (Apache-2.0), the code the stock `hf_xet` client runs, so a hash or a shard we produce is the
//! client's by construction; `tests/golden.rs` pins all of `xet-golden-vectors.txt` (computed
//! with the 1.8.0 crates).
//!
//! What is here:
//! - [`hash`] — §0.3 string form ([`hash::parse_hash`] accepts upper case, rejects anything but
//!   64 hex digits), chunk hash (§4.2), Merkle xorb/file hashes (§4.3-4.5), term verification
//!   hash (§4.6), dedup HMAC (§4.7), global-dedup eligibility (§4.8), `FileMetadataExt` SHA-256
//!   byte order (§4.9).
//! - [`chunker`] — the gear-hash content-defined chunker (§3), implemented here because the crate
//!   does not carry it (it lives in `xet-data`, which pulls the whole client); checked against
//!   the D1/D2/D3 golden boundaries.
//! - [`xorb`] — [`xorb::validate`] (§5.5): upload bodies of every client version (§5.4),
//!   None / LZ4-frame / BG4+LZ4 chunks decompressed with bounded output, re-hashed, Merkle root
//!   compared with the claim, client limits (8192 chunks, 64 MiB, 70 MB body); returns the
//!   per-chunk index (hash, length, byte range in the stored object). Stored form (§5.6): chunk
//!   stream + a rebuilt V1 footer ([`xorb::stored_object`]). [`xorb::decode_chunks`] decodes
//!   any byte range a data URL serves.
//! - [`shard`] — [`shard::parse`] of every upload form (§6.1-6.3, §6.5), [`shard::validate`]
//!   (§6.6: terms against stored xorb indexes, verification hashes, file hash recomputed, listed
//!   xorbs match what is stored) returning what to index, [`shard::verify_file_sha256`] (the
//!   `FileMetadataExt` SHA-256 recomputed from stored chunks), [`shard::write_upload_shard`]
//!   (the client's upload form) and [`shard::build_dedup_shard`] (§6.7: footer-ful, keyed
//!   chunk hashes, expiry).
//! - [`reconstruct`] — [`reconstruct::plan`] (§7.8 range trimming, `offset_into_first_range`,
//!   416 when start ≥ size, merged per-xorb fetch ranges) rendered as the v1 and v2 JSON bodies
//!   (§7.6-7.7) with URLs from a caller's closure; [`reconstruct::parse_range_header`].
//!
//! - [`recipe`] — a registered file as byte ranges of stored xorbs, for serving its bytes
//!   server-side (`/resolve`, the worker) without the index; [`xorb::next_chunk`] decodes a chunk
//!   stream one chunk at a time, handing uncompressed chunks on uncopied.
//!
//! Every parser returns a typed error for malformed input and never panics (`tests/fuzz.rs`);
//! each error variant says which HTTP status the route should map it to.
//!
//! What the routes must still do (hub-api): the token routes and `/resolve`/tree fields (§2);
//! the CAS routes (§7: auth, 404 for unknown routes including `/v1/xorb-grants`, the
//! `default`/`default-merkledb` prefixes and older aliases); read bodies with a size cap before
//! calling in here, off the async executor (`spawn_blocking`: validation decompresses and hashes
//! up to 64 MiB); store xorbs write-if-absent under a `StorageKey`; persist the indexes in
//! PostgreSQL and look them up before [`shard::validate`] / [`reconstruct::plan`]; choose the
//! dedup set and a fresh HMAC key per response; sign data URLs (403 when expired) and serve
//! exact byte ranges; tie shards' SHA-256 to commits (§9); quotas and garbage collection.

pub mod chunker;
pub mod hash;
pub mod recipe;
pub mod reconstruct;
pub mod shard;
pub mod xorb;
