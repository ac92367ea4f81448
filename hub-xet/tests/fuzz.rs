//! Random and mutated inputs never panic the xorb validator, the chunk decoder or the shard
//! parser/validator (fixed seed, a few thousand iterations each).

mod common;

use common::*;
use hub_xet::hash;
use hub_xet::shard;
use hub_xet::xorb::{self, Compression, XorbLimits};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Random bytes, or a valid input with a few bytes overwritten / truncated / extended.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let n = rng.below(600);
            rng.bytes(n)
        }
        1 => {
            let mut v = valid.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            v
        }
        2 => valid[..rng.below(valid.len())].to_vec(),
        _ => {
            let mut v = valid.to_vec();
            let n = rng.below(100);
            v.extend(rng.bytes(n));
            v
        }
    }
}

#[test]
fn fuzz_xorb_validate_never_panics() {
    let mut rng = Rng(7);
    // A small xorb with LZ4 and none chunks, so mutations hit headers, frames and payloads.
    let mut data = vec![3u8; 20_000];
    data.extend(splitmix(5, 30_000));
    let chunks: Vec<&[u8]> = vec![&data[..20_000], &data[20_000..35_000], &data[35_000..]];
    let mut valid = xorb::serialize_chunks(&chunks[..1], Compression::Lz4);
    valid.extend(xorb::serialize_chunks(&chunks[1..], Compression::None));
    let leaves: Vec<_> = chunks
        .iter()
        .map(|c| (hash::chunk_hash(c), c.len() as u64))
        .collect();
    let h = hash::xorb_hash(&leaves);
    let idx = xorb::validate(&valid, &h, &XorbLimits::default()).unwrap();
    let with_footer = xorb::stored_object(&valid, &idx);
    let mut accepted = 0;
    for i in 0..3000 {
        let base = if i % 2 == 0 { &valid } else { &with_footer };
        let body = mutate(&mut rng, base);
        if xorb::validate(&body, &h, &XorbLimits::default()).is_ok() {
            accepted += 1;
            // Only bodies that still hash to the claim pass (e.g. a mutated footer).
        }
        let _ = xorb::decode_chunks(&body);
    }
    assert!(accepted < 3000);
}

#[test]
fn fuzz_shard_parse_never_panics() {
    let mut rng = Rng(11);
    let d3 = splitmix(1, 256_000);
    let (_, x3) = xorb_of(&d3, Compression::None);
    let file = new_file(&d3, &[(&x3, 0, 4)]);
    let valid = shard::write_upload_shard(std::slice::from_ref(&file), &[&x3]);
    let dedup = shard::build_dedup_shard(
        &[shard::DedupXorb {
            index: &x3,
            file_start_chunks: &[0],
        }],
        &hash::chunk_hash(b"k"),
        1,
        2,
    );
    let stored = index_map(&[&x3]);
    let mut valid_count = 0;
    for i in 0..4000 {
        let base = if i % 3 == 0 { &dedup } else { &valid };
        let body = mutate(&mut rng, base);
        if let Ok(p) = shard::parse(&body, shard::DEFAULT_MAX_SHARD_BYTES) {
            if shard::validate(&p, &stored).is_ok() {
                valid_count += 1;
            }
        }
    }
    assert!(valid_count < 4000);
}
