//! Reconstruction plans (§7.6-§7.8): range trimming at and inside chunk boundaries, across
//! terms, merged fetch ranges, 416, and the bytes a client would reassemble from the answer.

mod common;

use std::collections::HashMap;

use common::*;
use hub_xet::hash::{self, XetHash};
use hub_xet::reconstruct::{self, ByteRange, Plan, RangeRequest, ReconstructError};
use hub_xet::shard::FileTerm;
use hub_xet::xorb::{self, Compression, XorbIndex};

struct Fx {
    data: Vec<u8>,
    /// Chunk end offsets in the file.
    ends: Vec<usize>,
    xorbs: HashMap<XetHash, XorbIndex>,
    stored: HashMap<XetHash, Vec<u8>>,
    terms: Vec<FileTerm>,
}

/// D1 in two xorbs: X1 = chunks 0..10 (LZ4), X2 = chunks 10..19 (none); the file is
/// X1[0..3) X2[0..9) X1[3..10): X1 is used twice, so its fetch ranges must merge.
fn fx() -> Fx {
    let d = d1();
    let chunks = hub_xet::chunker::chunks(&d);
    let mk = |cs: &[&[u8]], s| {
        let body = xorb::serialize_chunks(cs, s);
        let leaves: Vec<_> = cs
            .iter()
            .map(|c| (hash::chunk_hash(c), c.len() as u64))
            .collect();
        let idx = xorb::validate(&body, &hash::xorb_hash(&leaves), &Default::default()).unwrap();
        (xorb::stored_object(&body, &idx), idx)
    };
    let (s1, x1) = mk(&chunks[..10], Compression::Lz4);
    let (s2, x2) = mk(&chunks[10..], Compression::None);
    let term = |x: &XorbIndex, s: u32, e: u32| FileTerm {
        xorb: x.hash,
        chunk_start: s,
        chunk_end: e,
        unpacked_bytes: x.chunks[s as usize..e as usize]
            .iter()
            .map(|c| c.uncompressed_len)
            .sum(),
    };
    let terms = vec![term(&x1, 0, 3), term(&x2, 0, 9), term(&x1, 3, 10)];
    let order: Vec<&[u8]> = chunks[..3]
        .iter()
        .chain(&chunks[10..])
        .chain(&chunks[3..10])
        .copied()
        .collect();
    let data: Vec<u8> = order.concat();
    let mut ends = Vec::new();
    let mut pos = 0;
    for c in &order {
        pos += c.len();
        ends.push(pos);
    }
    let stored = [(x1.hash, s1), (x2.hash, s2)].into_iter().collect();
    let xorbs = index_map(&[&x1, &x2]);
    Fx {
        data,
        ends,
        xorbs,
        stored,
        terms,
    }
}

/// What the client does with an answer: fetch each term's bytes through `fetch` ranges,
/// decode, concatenate, skip `offset_into_first_range`, keep `len` bytes.
fn reassemble(fx: &Fx, p: &Plan, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for t in &p.terms {
        let h = hash::parse_hash(&t.hash).unwrap();
        let fr = p
            .fetch
            .iter()
            .find(|(x, _)| *x == h)
            .unwrap()
            .1
            .iter()
            .find(|r| r.chunks.start <= t.range.start && t.range.end <= r.chunks.end)
            .expect("every term lies inside one fetch range");
        let obj = &fx.stored[&h];
        let block =
            xorb::decode_chunks(&obj[fr.bytes.start as usize..=fr.bytes.end as usize]).unwrap();
        let skip = (t.range.start - fr.chunks.start) as usize;
        let n = (t.range.end - t.range.start) as usize;
        let bytes: Vec<u8> = block[skip..skip + n].concat();
        assert_eq!(bytes.len(), t.unpacked_length as usize);
        out.extend(bytes);
    }
    out.drain(..p.offset_into_first_range as usize);
    out.truncate(len);
    out
}

fn plan(fx: &Fx, r: Option<RangeRequest>) -> Result<Plan, ReconstructError> {
    reconstruct::plan(&fx.terms, &fx.xorbs, r)
}

#[test]
fn reconstruct_whole_file_merges_repeated_xorb_ranges() {
    let f = fx();
    let p = plan(&f, None).unwrap();
    assert_eq!(p.file_size, 1_000_000);
    assert_eq!(p.offset_into_first_range, 0);
    assert_eq!(p.terms.len(), 3);
    let x1 = &f.terms[0].xorb;
    let x1_ranges = &p.fetch.iter().find(|(h, _)| h == x1).unwrap().1;
    assert_eq!(
        x1_ranges.len(),
        1,
        "[0,3) and [3,10) are adjacent and merge"
    );
    assert_eq!(
        (x1_ranges[0].chunks.start, x1_ranges[0].chunks.end),
        (0, 10)
    );
    let stored_len = f.stored[x1].len() as u64;
    assert_eq!(x1_ranges[0].bytes.start, 0);
    assert_eq!(
        x1_ranges[0].bytes.end,
        f.xorbs[x1].chunks[9].byte_end as u64 - 1
    );
    assert!(
        x1_ranges[0].bytes.end < stored_len - 4,
        "the footer is never fetched"
    );
    assert_eq!(reassemble(&f, &p, usize::MAX), f.data);
}

#[test]
fn reconstruct_range_at_chunk_boundaries() {
    let f = fx();
    // Exactly chunks 1..=2 of the file (both in term 0).
    let (a, b) = (f.ends[0] as u64, f.ends[2] as u64 - 1);
    let p = plan(&f, Some(RangeRequest::FromTo(a, b))).unwrap();
    assert_eq!(p.offset_into_first_range, 0);
    assert_eq!(p.terms.len(), 1);
    assert_eq!((p.terms[0].range.start, p.terms[0].range.end), (1, 3));
    assert_eq!(p.terms[0].unpacked_length as usize, f.ends[2] - f.ends[0]);
    assert_eq!(
        reassemble(&f, &p, (b - a + 1) as usize),
        &f.data[a as usize..=b as usize]
    );
}

#[test]
fn reconstruct_range_inside_chunks() {
    let f = fx();
    let (a, b) = (100_000u64, 150_000u64); // inside file chunk 1 .. inside file chunk 3
    let p = plan(&f, Some(RangeRequest::FromTo(a, b))).unwrap();
    assert_eq!(p.offset_into_first_range, a - f.ends[0] as u64);
    assert_eq!(p.terms.len(), 2, "chunks 1-2 of term 0, chunk 0 of term 1");
    assert_eq!((p.terms[0].range.start, p.terms[0].range.end), (1, 3));
    assert_eq!((p.terms[1].range.start, p.terms[1].range.end), (0, 1));
    assert_eq!(
        reassemble(&f, &p, (b - a + 1) as usize),
        &f.data[a as usize..=b as usize]
    );
    // A range inside a single chunk.
    let p = plan(&f, Some(RangeRequest::FromTo(10, 20))).unwrap();
    assert_eq!((p.terms.len(), p.offset_into_first_range), (1, 10));
    assert_eq!((p.terms[0].range.start, p.terms[0].range.end), (0, 1));
    assert_eq!(reassemble(&f, &p, 11), &f.data[10..=20]);
}

#[test]
fn reconstruct_range_across_all_terms_and_clamped_end() {
    let f = fx();
    let a = 5u64;
    let p = plan(&f, Some(RangeRequest::FromTo(a, 10_000_000))).unwrap();
    assert_eq!(p.terms.len(), 3);
    assert_eq!(reassemble(&f, &p, usize::MAX), &f.data[5..]);
    let p = plan(&f, Some(RangeRequest::From(999_999))).unwrap();
    assert_eq!(
        p.offset_into_first_range as usize,
        999_999 - f.ends[f.ends.len() - 2]
    );
    assert_eq!(reassemble(&f, &p, usize::MAX), &f.data[999_999..]);
    let p = plan(&f, Some(RangeRequest::Suffix(3))).unwrap();
    assert_eq!(reassemble(&f, &p, usize::MAX), &f.data[1_000_000 - 3..]);
}

#[test]
fn reconstruct_416_when_start_at_or_past_end() {
    let f = fx();
    for r in [
        RangeRequest::FromTo(1_000_000, 1_000_100),
        RangeRequest::From(2_000_000),
        RangeRequest::Suffix(0),
    ] {
        assert_eq!(
            plan(&f, Some(r)),
            Err(ReconstructError::NotSatisfiable { size: 1_000_000 })
        );
    }
    // The unknown-size probing of §7.8: the first block answers, the later ones are 416.
    assert!(plan(&f, Some(RangeRequest::FromTo(0, 255_999_999))).is_ok());
    assert!(plan(&f, Some(RangeRequest::FromTo(256_000_000, 767_999_999))).is_err());
}

#[test]
fn reconstruct_random_ranges_reassemble_exactly() {
    let f = fx();
    let r = splitmix(42, 8 * 200);
    for w in r.chunks(8).take(200) {
        let x = u64::from_le_bytes(w.try_into().unwrap());
        let a = x % 1_000_000;
        let b = a + (x >> 32) % 300_000;
        let p = plan(&f, Some(RangeRequest::FromTo(a, b))).unwrap();
        let end = (b + 1).min(1_000_000) as usize;
        assert_eq!(
            reassemble(&f, &p, end - a as usize),
            &f.data[a as usize..end],
            "{a}-{b}"
        );
    }
}

#[test]
fn reconstruct_json_bodies() {
    let f = fx();
    let p = plan(&f, Some(RangeRequest::FromTo(100_000, 150_000))).unwrap();
    let calls = std::cell::RefCell::new(Vec::new());
    let url = |h: &XetHash, r: &[ByteRange]| {
        calls.borrow_mut().push((hash::hash_string(h), r.len()));
        format!(
            "https://cas.test/fetch/{}?n={}",
            hash::hash_string(h),
            r.len()
        )
    };
    let v2 = serde_json::to_value(p.to_v2(&url)).unwrap();
    let x1 = hash::hash_string(&f.terms[0].xorb);
    assert_eq!(v2["offset_into_first_range"], 100_000 - f.ends[0] as u64);
    assert_eq!(v2["terms"][0]["hash"], x1.as_str());
    assert_eq!(
        v2["terms"][0]["range"],
        serde_json::json!({"start": 1, "end": 3})
    );
    let e = &v2["xorbs"][x1.as_str()][0];
    assert_eq!(e["url"], format!("https://cas.test/fetch/{x1}?n=1"));
    let c1 = &f.xorbs[&f.terms[0].xorb].chunks;
    assert_eq!(
        e["ranges"][0],
        serde_json::json!({"chunks": {"start": 1, "end": 3}, "bytes": {"start": c1[1].byte_start, "end": c1[2].byte_end - 1}})
    );
    let v1 = serde_json::to_value(p.to_v1(&url)).unwrap();
    assert_eq!(v1["terms"], v2["terms"]);
    let fi = &v1["fetch_info"][x1.as_str()][0];
    assert_eq!(fi["range"], serde_json::json!({"start": 1, "end": 3}));
    assert_eq!(fi["url_range"], e["ranges"][0]["bytes"]);
    assert_eq!(
        calls.borrow().len(),
        4,
        "v2: one URL per xorb; v1: one per fetch entry"
    );
}

#[test]
fn reconstruct_reports_index_inconsistencies() {
    let f = fx();
    let mut terms = f.terms.clone();
    terms[1].chunk_end = 99;
    assert!(matches!(
        reconstruct::plan(&terms, &f.xorbs, None),
        Err(ReconstructError::BadTerm { .. })
    ));
    let only: HashMap<_, _> = f
        .xorbs
        .iter()
        .take(1)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert!(matches!(
        reconstruct::plan(&f.terms, &only, None),
        Err(ReconstructError::MissingXorb(_))
    ));
}
