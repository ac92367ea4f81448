//! Shard parsing and validation (§6.5-§6.6) and the dedup response (§6.7), read back with the
//! client library.

mod common;

use std::collections::HashMap;

use common::*;
use hub_xet::hash::{self, XetHash};
use hub_xet::shard::{self, NewFile, ShardError};
use hub_xet::xorb::{self, Compression, XorbIndex};

/// Two xorbs from D1 (chunks 0..10 and 10..19) and a file spanning both, plus a second file
/// (D3) in its own xorb.
struct Fixture {
    data: Vec<u8>,
    bodies: Vec<Vec<u8>>,
    x1: XorbIndex,
    x2: XorbIndex,
    x3: XorbIndex,
    f1: NewFile,
    f3: NewFile,
    d3: Vec<u8>,
}

fn fixture() -> Fixture {
    let data = d1();
    let chunks = hub_xet::chunker::chunks(&data);
    let split = chunks[..10].iter().map(|c| c.len()).sum::<usize>();
    let (b1, x1) = xorb_of_chunks(&chunks[..10], Compression::Lz4);
    let (b2, x2) = xorb_of_chunks(&chunks[10..], Compression::None);
    assert_eq!(x1.uncompressed_bytes() as usize, split);
    let d3 = splitmix(1, 256_000);
    let (b3, x3) = xorb_of(&d3, Compression::Bg4Lz4);
    let f1 = new_file(&data, &[(&x1, 0, 10), (&x2, 0, 9)]);
    let f3 = new_file(&d3, &[(&x3, 0, 4)]);
    Fixture {
        data,
        bodies: vec![b1, b2, b3],
        x1,
        x2,
        x3,
        f1,
        f3,
        d3,
    }
}

fn xorb_of_chunks(chunks: &[&[u8]], scheme: Compression) -> (Vec<u8>, XorbIndex) {
    let body = xorb::serialize_chunks(chunks, scheme);
    let leaves: Vec<_> = chunks
        .iter()
        .map(|c| (hash::chunk_hash(c), c.len() as u64))
        .collect();
    let idx = xorb::validate(&body, &hash::xorb_hash(&leaves), &Default::default()).unwrap();
    (body, idx)
}

fn check(
    files: &[NewFile],
    listed: &[&XorbIndex],
    stored: &HashMap<XetHash, XorbIndex>,
) -> Result<shard::ShardSummary, ShardError> {
    let bytes = shard::write_upload_shard(files, listed);
    let parsed = shard::parse(&bytes, shard::DEFAULT_MAX_SHARD_BYTES)?;
    shard::validate(&parsed, stored)
}

#[test]
fn shard_multi_file_multi_xorb_validates() {
    let f = fixture();
    let stored = index_map(&[&f.x1, &f.x2, &f.x3]);
    let s = check(
        &[f.f1.clone(), f.f3.clone()],
        &[&f.x1, &f.x2, &f.x3],
        &stored,
    )
    .unwrap();
    assert_eq!(s.files.len(), 2);
    assert_eq!(
        s.files[0].hash,
        hash::file_hash(
            &hub_xet::chunker::chunks(&f.data)
                .iter()
                .map(|c| (hash::chunk_hash(c), c.len() as u64))
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(s.files[0].size, 1_000_000);
    assert_eq!(
        s.files[0].sha256.as_deref(),
        Some(sha256_hex(&f.data).as_str())
    );
    assert_eq!(
        s.files[1].sha256.as_deref(),
        Some(sha256_hex(&f.d3).as_str())
    );
    assert_eq!(s.xorbs.len(), 3);
    // First chunk of each file is dedup-eligible.
    assert_eq!(
        s.dedup_eligible,
        vec![f.x1.chunks[0].hash, f.x3.chunks[0].hash]
    );
    // A shard whose terms only reference xorbs stored earlier (none listed) is valid too.
    let s = check(std::slice::from_ref(&f.f1), &[], &stored).unwrap();
    assert!(s.xorbs.is_empty());
    assert_eq!(s.dedup_eligible, vec![f.x1.chunks[0].hash]);
    // The referenced xorbs are what the route must look up.
    let parsed = shard::parse(
        &shard::write_upload_shard(std::slice::from_ref(&f.f1), &[&f.x3]),
        usize::MAX,
    )
    .unwrap();
    assert_eq!(
        parsed.referenced_xorbs(),
        vec![f.x1.hash, f.x2.hash, f.x3.hash]
    );
}

#[test]
fn shard_rejects_tampered_verification_hash() {
    let f = fixture();
    let stored = index_map(&[&f.x1, &f.x2]);
    let mut bad = f.f1.clone();
    bad.verification[1] = hash::chunk_hash(b"guess");
    assert!(matches!(
        check(&[bad], &[], &stored),
        Err(ShardError::VerificationMismatch { term: 1, .. })
    ));
    // Tampering with the bytes of a written shard is caught the same way.
    let mut bytes = shard::write_upload_shard(std::slice::from_ref(&f.f1), &[]);
    bytes[48 + 48 * 3 + 5] ^= 1; // first verification entry
    let parsed = shard::parse(&bytes, usize::MAX).unwrap();
    assert!(matches!(
        shard::validate(&parsed, &stored),
        Err(ShardError::VerificationMismatch { term: 0, .. })
    ));
}

#[test]
fn shard_rejects_unknown_xorb() {
    let f = fixture();
    let only_x1 = index_map(&[&f.x1]);
    assert_eq!(
        check(std::slice::from_ref(&f.f1), &[], &only_x1),
        Err(ShardError::UnknownXorb {
            xorb: hash::hash_string(&f.x2.hash)
        })
    );
    // A listed (new) xorb that was never uploaded.
    let stored = index_map(&[&f.x1, &f.x2]);
    assert_eq!(
        check(std::slice::from_ref(&f.f1), &[&f.x3], &stored),
        Err(ShardError::UnknownXorb {
            xorb: hash::hash_string(&f.x3.hash)
        })
    );
}

#[test]
fn shard_rejects_inconsistent_terms_and_file_hash() {
    let f = fixture();
    let stored = index_map(&[&f.x1, &f.x2]);
    let mut bad = f.f1.clone();
    bad.terms[1].chunk_end = 10; // x2 has 9 chunks
    assert!(matches!(
        check(&[bad], &[], &stored),
        Err(ShardError::BadChunkRange {
            term: 1,
            end: 10,
            chunks: 9,
            ..
        })
    ));
    let mut bad = f.f1.clone();
    bad.terms[0].chunk_start = 10;
    assert!(matches!(
        check(&[bad], &[], &stored),
        Err(ShardError::BadChunkRange { term: 0, .. })
    ));
    let mut bad = f.f1.clone();
    bad.terms[0].unpacked_bytes += 1;
    assert!(matches!(
        check(&[bad], &[], &stored),
        Err(ShardError::TermSizeMismatch { term: 0, .. })
    ));
    let mut bad = f.f1.clone();
    bad.hash = f.f3.hash;
    assert!(matches!(
        check(&[bad], &[], &stored),
        Err(ShardError::FileHashMismatch { .. })
    ));
    let mut bad = f.f1.clone();
    bad.terms.clear();
    bad.verification.clear();
    assert!(matches!(
        check(&[bad], &[], &stored),
        Err(ShardError::EmptyFile { .. })
    ));
    // A listed xorb whose chunk list differs from the stored one.
    let mut lie = f.x2.clone();
    lie.chunks[3].uncompressed_len += 1;
    assert_eq!(
        check(std::slice::from_ref(&f.f1), &[&lie], &stored),
        Err(ShardError::XorbMismatch {
            xorb: hash::hash_string(&f.x2.hash)
        })
    );
}

#[test]
fn shard_verification_presence_rules() {
    let f = fixture();
    let stored = index_map(&[&f.x1, &f.x2, &f.x3]);
    let mut unverified = f.f3.clone();
    unverified.verification.clear();
    let r = check(&[unverified.clone()], &[], &stored);
    assert!(
        matches!(r, Err(ShardError::MissingVerification { .. })),
        "{r:?}"
    );
    assert_eq!(
        check(&[f.f1.clone(), unverified], &[], &stored),
        Err(ShardError::MixedVerification)
    );
}

#[test]
fn shard_rejects_malformed_headers_and_sections() {
    let f = fixture();
    let good = shard::write_upload_shard(std::slice::from_ref(&f.f1), &[&f.x1]);
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(shard::parse(&bad, usize::MAX), Err(ShardError::BadTag));
    let mut bad = good.clone();
    bad[32] = 1;
    assert_eq!(
        shard::parse(&bad, usize::MAX),
        Err(ShardError::BadVersion(1))
    );
    // Missing xorb bookend / truncated anywhere.
    for cut in [good.len() - 48, good.len() - 1, 300, 100, 47, 0] {
        assert!(
            matches!(
                shard::parse(&good[..cut], usize::MAX),
                Err(ShardError::Malformed(_))
            ),
            "cut {cut}"
        );
    }
    // A file header claiming 2^32-1 entries must not allocate its way out.
    let mut huge = good.clone();
    huge[48 + 36..48 + 40].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        shard::parse(&huge, usize::MAX),
        Err(ShardError::Malformed(_))
    ));
    assert_eq!(
        shard::parse(&good, 100),
        Err(ShardError::TooLarge {
            len: good.len(),
            max: 100
        })
    );
}

#[test]
fn shard_sha256_is_recomputed_from_stored_xorbs() {
    let f = fixture();
    let stored_objects: HashMap<XetHash, Vec<u8>> = [
        (&f.x1, &f.bodies[0]),
        (&f.x2, &f.bodies[1]),
        (&f.x3, &f.bodies[2]),
    ]
    .into_iter()
    .map(|(x, b)| (x.hash, xorb::stored_object(b, x)))
    .collect();
    let indexes = index_map(&[&f.x1, &f.x2, &f.x3]);
    let mut read = |h: &XetHash, s: u64, e: u64| -> Result<Vec<u8>, String> {
        Ok(stored_objects.get(h).ok_or("missing")?[s as usize..e as usize].to_vec())
    };
    let s = check(&[f.f1.clone(), f.f3.clone()], &[], &indexes).unwrap();
    for file in &s.files {
        shard::verify_file_sha256(file, &indexes, &mut read).unwrap();
    }
    // A shard claiming the SHA-256 of other bytes (e.g. to make an LFS pointer lie).
    let mut lie = f.f1.clone();
    lie.sha256 = Some(hash::sha256_of(b"something else"));
    let s = check(&[lie], &[], &indexes).unwrap();
    assert!(matches!(
        shard::verify_file_sha256(&s.files[0], &indexes, &mut read),
        Err(ShardError::Sha256Mismatch { .. })
    ));
    // Storage returning wrong bytes is reported, not trusted.
    let mut broken = |_: &XetHash, _: u64, _: u64| -> Result<Vec<u8>, String> { Ok(vec![0; 5]) };
    assert!(matches!(
        shard::verify_file_sha256(&s.files[0], &indexes, &mut broken),
        Err(ShardError::UnreadableXorb { .. })
    ));
}

#[test]
fn dedup_shard_with_hmac_is_usable_by_the_client_library() {
    use xet_core_structures::metadata_shard::MDBShardInfo;
    let f = fixture();
    let key = hash::hash_from_raw(std::array::from_fn(|i| (i * 7 + 3) as u8));
    let bytes = shard::build_dedup_shard(
        &[
            shard::DedupXorb {
                index: &f.x1,
                file_start_chunks: &[0],
            },
            shard::DedupXorb {
                index: &f.x2,
                file_start_chunks: &[],
            },
        ],
        &key,
        1_900_000_000,
        1_900_604_800,
    );
    let mut r = std::io::Cursor::new(&bytes);
    let info = MDBShardInfo::load_from_reader(&mut r).unwrap();
    assert_eq!(info.metadata.chunk_hash_hmac_key, key);
    assert_eq!(info.metadata.shard_key_expiry, 1_900_604_800);
    let blocks = info.read_all_xorb_blocks_full(&mut r).unwrap();
    assert_eq!(blocks.len(), 2);
    for (b, x) in blocks.iter().zip([&f.x1, &f.x2]) {
        assert_eq!(b.metadata.xorb_hash, x.hash);
        assert_eq!(b.chunks.len(), x.chunks.len());
        for (c, xc) in b.chunks.iter().zip(&x.chunks) {
            assert_eq!(c.chunk_hash, hash::hmac_chunk_hash(&xc.hash, &key));
            assert_ne!(c.chunk_hash, xc.hash, "raw chunk hashes must not leak");
            assert_eq!(c.unpacked_segment_bytes, xc.uncompressed_len);
        }
    }
    assert!(blocks[0].chunks[0].is_global_dedup_eligible());
    // The client's dedup match on its own (raw) chunk hashes finds a run in xorb 1 (whose
    // header is entry 1 + 10 of the xorb section).
    let raw: Vec<XetHash> = f.x2.chunks[2..6].iter().map(|c| c.hash).collect();
    let (n, entry) = info
        .chunk_hash_dedup_query_direct(&mut r, &raw, 1 + f.x1.chunks.len() as u32, 2)
        .unwrap()
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(entry.xorb_hash, f.x2.hash);
    assert_eq!((entry.chunk_index_start, entry.chunk_index_end), (2, 6));
    assert_eq!(
        entry.unpacked_segment_bytes,
        f.x2.chunks[2..6]
            .iter()
            .map(|c| c.uncompressed_len)
            .sum::<u32>()
    );
    // The streaming parser accepts it as a (file-less) shard.
    let parsed = shard::parse(&bytes, usize::MAX).unwrap();
    assert!(parsed.files.is_empty());
    assert_eq!(parsed.xorbs.len(), 2);
}
