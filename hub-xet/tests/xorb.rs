//! Xorb validation (§5.5): bodies from an independent, hand-written serializer (LZ4 frames via
//! lz4_flex and a BG4 split written here, not the client library's), and every rejection.

mod common;

use common::*;
use hub_xet::hash::{self, XetHash};
use hub_xet::xorb::{self, Compression, XorbError, XorbLimits};

/// BG4 split written from §5.2 (byte i goes to group i mod 4).
fn bg4_split(d: &[u8]) -> Vec<u8> {
    (0..4)
        .flat_map(|k| d.iter().skip(k).step_by(4).copied())
        .collect()
}

fn lz4_frame(d: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(d).unwrap();
    enc.finish().unwrap()
}

/// One chunk: header + payload, scheme as given, lengths as given.
fn raw_chunk(scheme: u8, payload: &[u8], uncompressed_len: usize) -> Vec<u8> {
    let c = (payload.len() as u32).to_le_bytes();
    let u = (uncompressed_len as u32).to_le_bytes();
    let mut out = vec![0, c[0], c[1], c[2], scheme, u[0], u[1], u[2]];
    out.extend_from_slice(payload);
    out
}

fn encode(scheme: u8, d: &[u8]) -> Vec<u8> {
    match scheme {
        0 => raw_chunk(0, d, d.len()),
        1 => raw_chunk(1, &lz4_frame(d), d.len()),
        _ => raw_chunk(2, &lz4_frame(&bg4_split(d)), d.len()),
    }
}

/// Structured data (little-endian f32 ramps) that BG4 really compresses.
fn floats(n: usize, seed: u32) -> Vec<u8> {
    (0..n.div_ceil(4))
        .flat_map(|i| (seed as f32 + i as f32 * 0.25).to_le_bytes())
        .take(n)
        .collect()
}

fn claimed(chunks: &[&[u8]]) -> XetHash {
    hash::xorb_hash(
        &chunks
            .iter()
            .map(|c| (hash::chunk_hash(c), c.len() as u64))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn xorb_independent_serializer_all_schemes_validate() {
    // BG4 with n % 4 in {0,1,2,3}, LZ4, none, mixed in one xorb.
    let chunks: Vec<Vec<u8>> = vec![
        floats(40_000, 1),
        floats(40_001, 2),
        floats(40_002, 3),
        floats(40_003, 4),
        vec![7u8; 70_000],
        splitmix(9, 30_000),
    ];
    let schemes = [2u8, 2, 2, 2, 1, 0];
    let mut body = Vec::new();
    let mut ends = Vec::new();
    for (c, s) in chunks.iter().zip(schemes) {
        body.extend(encode(s, c));
        ends.push(body.len() as u32);
    }
    let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
    let idx = xorb::validate(&body, &claimed(&refs), &XorbLimits::default()).unwrap();
    assert_eq!(idx.chunks.len(), 6);
    for (i, c) in idx.chunks.iter().enumerate() {
        assert_eq!(c.hash, hash::chunk_hash(&chunks[i]));
        assert_eq!(c.uncompressed_len as usize, chunks[i].len());
        assert_eq!(c.byte_end, ends[i]);
        assert_eq!(c.byte_start, if i == 0 { 0 } else { ends[i - 1] });
    }
    // Compression really happened for the BG4/LZ4 chunks.
    assert!(body.len() < chunks.iter().map(|c| c.len()).sum::<usize>() / 2);
    // The stored object decodes back to the data, and so does any chunk range of it.
    let stored = xorb::stored_object(&body, &idx);
    let (s, e) = idx.byte_range(1, 4).unwrap();
    let decoded = xorb::decode_chunks(&stored[s as usize..e as usize]).unwrap();
    assert_eq!(decoded, chunks[1..4].to_vec());
}

#[test]
fn xorb_client_serializer_round_trip() {
    // The client library's serializer (serialize_chunk with LZ4 and BG4) on D3 + float data.
    let mut data = splitmix(1, 256_000);
    data.extend(floats(300_000, 5));
    for scheme in [Compression::None, Compression::Lz4, Compression::Bg4Lz4] {
        let (body, idx) = xorb_of(&data, scheme);
        let all = xorb::decode_chunks(&body).unwrap().concat();
        assert_eq!(all, data, "{scheme:?}");
        assert_eq!(idx.uncompressed_bytes(), data.len() as u64);
    }
}

fn d3_body() -> (Vec<u8>, XetHash) {
    let (body, idx) = xorb_of(&splitmix(1, 256_000), Compression::None);
    (body, idx.hash)
}

fn err(body: &[u8], h: &XetHash) -> XorbError {
    xorb::validate(body, h, &XorbLimits::default()).unwrap_err()
}

#[test]
fn xorb_rejects_flipped_byte_and_wrong_hash() {
    let (body, h) = d3_body();
    let mut flipped = body.clone();
    flipped[1000] ^= 1;
    assert!(matches!(err(&flipped, &h), XorbError::HashMismatch { .. }));
    let other = hash::chunk_hash(b"other");
    match err(&body, &other) {
        XorbError::HashMismatch { claimed, computed } => {
            assert_eq!(claimed, hash::hash_string(&other));
            assert_eq!(computed, hash::hash_string(&h));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn xorb_rejects_truncated_body() {
    let (body, h) = d3_body();
    assert!(matches!(
        err(&body[..body.len() - 1], &h),
        XorbError::TruncatedChunk {
            offset: 235_593,
            ..
        }
    ));
    // Cut right after the first chunk plus 3 bytes of the next header.
    let first_end = 8 + 25_125;
    assert_eq!(
        err(&body[..first_end + 3], &h),
        XorbError::TruncatedHeader { offset: first_end }
    );
    assert_eq!(err(&[], &h), XorbError::Empty);
}

#[test]
fn xorb_rejects_oversized_bodies() {
    let (body, h) = d3_body();
    let small = XorbLimits {
        max_body_bytes: 1000,
        ..Default::default()
    };
    assert_eq!(
        xorb::validate(&body, &h, &small).unwrap_err(),
        XorbError::BodyTooLarge {
            len: body.len(),
            max: 1000
        }
    );
    let few = XorbLimits {
        max_chunks: 3,
        ..Default::default()
    };
    assert_eq!(
        xorb::validate(&body, &h, &few).unwrap_err(),
        XorbError::TooManyChunks { max: 3 }
    );
    let bytes = XorbLimits {
        max_uncompressed_bytes: 200_000,
        ..Default::default()
    };
    assert_eq!(
        xorb::validate(&body, &h, &bytes).unwrap_err(),
        XorbError::TooManyBytes { max: 200_000 }
    );
    // The default limits are the client's: 8192 chunks, 64 MiB.
    let many: Vec<Vec<u8>> = (0..8193u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let body: Vec<u8> = many.iter().flat_map(|c| encode(0, c)).collect();
    let refs: Vec<&[u8]> = many.iter().map(|c| c.as_slice()).collect();
    assert_eq!(
        err(&body, &claimed(&refs)),
        XorbError::TooManyChunks { max: 8192 }
    );
}

#[test]
fn xorb_rejects_bad_headers() {
    let d = vec![1u8; 100];
    let h = hash::chunk_hash(&d);
    let mut c = encode(0, &d);
    c[4] = 3;
    assert_eq!(
        err(&c, &h),
        XorbError::UnsupportedCompression {
            offset: 0,
            scheme: 3
        }
    );
    c[4] = 99; // "Auto" never appears on the wire
    assert_eq!(
        err(&c, &h),
        XorbError::UnsupportedCompression {
            offset: 0,
            scheme: 99
        }
    );
    let mut c = encode(0, &d);
    c[0] = 1;
    assert_eq!(
        err(&c, &h),
        XorbError::UnsupportedVersion {
            offset: 0,
            version: 1
        }
    );
    // Uncompressed length above 128 KiB (strict) and zero.
    let big = raw_chunk(1, &lz4_frame(&vec![0u8; 131_073]), 131_073);
    assert!(matches!(
        err(&big, &h),
        XorbError::BadUncompressedLength { len: 131_073, .. }
    ));
    let zero = raw_chunk(0, &[], 0);
    assert!(matches!(
        err(&zero, &h),
        XorbError::BadUncompressedLength { len: 0, .. }
    ));
    // Compressed length above 2 x 128 KiB.
    let mut c = encode(0, &d);
    c[1..4].copy_from_slice(&[0x01, 0x00, 0x04]); // 262145
    assert!(matches!(
        err(&c, &h),
        XorbError::BadCompressedLength { len: 262_145, .. }
    ));
    // Scheme 0 whose payload length differs from the uncompressed length.
    let c = raw_chunk(0, &d, 99);
    assert!(matches!(
        err(&c, &h),
        XorbError::LengthMismatch {
            declared: 99,
            actual: 100,
            ..
        }
    ));
}

#[test]
fn xorb_rejects_bad_compressed_payloads() {
    let d = vec![5u8; 10_000];
    let h = hash::chunk_hash(&d);
    // LZ4 *block* format is not the frame format.
    let block = lz4_flex::block::compress(&d);
    assert!(matches!(
        err(&raw_chunk(1, &block, d.len()), &h),
        XorbError::Decompress { .. }
    ));
    // A frame that inflates past its declared length (a bomb) stops at declared + 1 bytes.
    let bomb = lz4_frame(&vec![0u8; 16 * 1024 * 1024]);
    assert!(matches!(
        err(&raw_chunk(1, &bomb, 100), &h),
        XorbError::LengthMismatch {
            declared: 100,
            actual: 101,
            ..
        }
    ));
    // A frame that inflates to less.
    assert!(matches!(
        err(&raw_chunk(1, &lz4_frame(&d), 10_001), &h),
        XorbError::LengthMismatch {
            declared: 10_001,
            actual: 10_000,
            ..
        }
    ));
}

#[test]
fn xorb_footer_forms() {
    let (body, h) = d3_body();
    let idx = xorb::validate(&body, &h, &XorbLimits::default()).unwrap();
    // Old clients' footer is accepted (and not trusted: a footer claiming another hash is ignored).
    let mut stored = xorb::stored_object(&body, &idx);
    assert_eq!(
        xorb::validate(&stored, &h, &XorbLimits::default()).unwrap(),
        idx
    );
    stored[body.len() + 8] ^= 0xff; // the footer's xorb hash
    assert_eq!(
        xorb::validate(&stored, &h, &XorbLimits::default()).unwrap(),
        idx
    );
    // Trailing garbage that is neither a chunk nor a well-formed footer.
    let mut g = body.clone();
    g.extend_from_slice(b"XETBLOB garbage");
    assert_eq!(
        err(&g, &h),
        XorbError::MalformedFooter { offset: body.len() }
    );
    let mut g = body.clone();
    g.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        err(&g, &h),
        XorbError::TruncatedHeader { offset: body.len() }
    );
    // A body that is only a footer has no chunk.
    let footer = xorb::stored_footer(&idx);
    assert_eq!(err(&footer, &h), XorbError::NoChunks);
}

#[test]
fn xorb_index_packs_for_the_database() {
    let (body, h) = d3_body();
    let idx = xorb::validate(&body, &h, &XorbLimits::default()).unwrap();
    let packed = idx.chunks_to_bytes();
    assert_eq!(packed.len(), 4 * xorb::PACKED_CHUNK_LEN);
    assert_eq!(
        xorb::XorbIndex::from_packed(idx.hash, idx.chunk_stream_len, &packed),
        Some(idx.clone())
    );
    assert_eq!(
        xorb::XorbIndex::from_packed(idx.hash, idx.chunk_stream_len, &packed[..43]),
        None
    );
}
