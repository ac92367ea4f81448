//! Every vector of /work/shared/reference/xet-golden-vectors.txt (computed with the 1.8.0
//! client crates), checked against hub-xet.

mod common;

use common::*;
use hub_xet::chunker;
use hub_xet::hash::{self, hash_string};
use hub_xet::shard;
use hub_xet::xorb::{self, Compression, XorbLimits};
use xet_core_structures::xorb_object::XorbObject;

#[test]
fn golden_gear_table() {
    let t = chunker::gear_table();
    let bytes: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(
        sha256_hex(&bytes),
        "e1d3936666d7ae7a977c958e9afcc75f90aaca758ce5fbe4ece61dffefe1912c"
    );
    assert_eq!(
        (t[0], t[1], t[255]),
        (0xb088d3a9e840f559, 0x5652c7f739ed20d6, 0x63c7a906c1dd187b)
    );
}

#[test]
fn golden_hash_string_and_simple_hashes() {
    let raw: [u8; 32] = std::array::from_fn(|i| i as u8);
    assert_eq!(
        hash_string(&hash::hash_from_raw(raw)),
        "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    );
    assert_eq!(
        hash_string(&hash::chunk_hash(b"")),
        "e0f2cf784e7e5f10c34f84af150e9a5ff9664216debad915364d741049870f67"
    );
    let hw = hash::chunk_hash(b"hello world");
    assert_eq!(
        hash_string(&hw),
        "4e39378b9d359f118190557a1f44130219a54e5fcfa07bd96cf50b466fe651b1"
    );
    assert_eq!(
        hex::encode(hash::hash_raw(&hw)),
        "119f359d8b37394e0213441f7a559081d97ba0cf5f4ea519b151e66f460bf56c"
    );
    // "hello world" as a file: one chunk; xorb hash == chunk hash; file hash.
    assert_eq!(chunker::chunk_boundaries(b"hello world"), vec![11]);
    let leaves = [(hw, 11)];
    assert_eq!(hash::xorb_hash(&leaves), hw);
    assert_eq!(
        hash_string(&hash::file_hash(&leaves)),
        "f15edd43b7e85cfd25e2758ffe13b99fdd09dfa817e8d9f6548722a7a126db7f"
    );
}

struct Dataset {
    data: Vec<u8>,
    sha256: &'static str,
    boundaries: &'static [usize],
    chunk_hashes: &'static [&'static str],
    xorb: &'static str,
    file: &'static str,
    verif_all: &'static str,
    verif_2_5: Option<&'static str>,
}

fn check_dataset(d: &Dataset) {
    assert_eq!(sha256_hex(&d.data), d.sha256);
    assert_eq!(chunker::chunk_boundaries(&d.data), d.boundaries);
    let chunks = chunker::chunks(&d.data);
    let hashes: Vec<_> = chunks.iter().map(|c| hash::chunk_hash(c)).collect();
    let got: Vec<String> = hashes.iter().map(hash_string).collect();
    assert_eq!(got, d.chunk_hashes);
    // gde=false for every golden chunk.
    assert!(hashes.iter().all(|h| !hash::is_global_dedup_eligible(h)));
    let leaves: Vec<_> = chunks
        .iter()
        .zip(&hashes)
        .map(|(c, h)| (*h, c.len() as u64))
        .collect();
    assert_eq!(hash_string(&hash::xorb_hash(&leaves)), d.xorb);
    assert_eq!(hash_string(&hash::file_hash(&leaves)), d.file);
    assert_eq!(hash_string(&hash::verification_hash(&hashes)), d.verif_all);
    if let Some(v) = d.verif_2_5 {
        assert_eq!(hash_string(&hash::verification_hash(&hashes[2..5])), v);
    }
}

#[test]
fn golden_d1_chunks_and_hashes() {
    let data = d1();
    assert_eq!((data[0], data[127], data[111111]), (175, 132, 118));
    check_dataset(&Dataset {
        data,
        sha256: "b3d0a1f7938cd4d8413a4dcffd4313e2e8ac0cb61cb1090eb140ea8e9154befb",
        boundaries: &[
            84493, 134421, 144853, 243318, 271793, 336457, 467529, 494581, 582000, 596735, 616815,
            653164, 678202, 724510, 815591, 827760, 958832, 991092, 1000000,
        ],
        chunk_hashes: &[
            "6eca1e7dadaf08cca5d82d318c800f07c2ddcec115a7e8627e5edd9605b94b8d",
            "624ea34d72a06e5d43a1b8dd10763f0d22f165992c397ed97563899b27fdd88a",
            "4411d2ec847c6e3f451a7451ff3933adb4f1c31587421b9f730b698a78313b47",
            "6342bde97433e29e0779ad33eb8040d986679040361b3cc3a06230fe60dd6c9b",
            "405253fcf15bba751adc4f507d3453273daff81ed4d8acd71c521aa1cbddc0b5",
            "4482374af7f8bebfdb5c5df0299f80128d6c58886ad7b218c562b1d74064e4cb",
            "80acc8d39c853b4b8a8c6ad7b63bf2ea68f62c2226b92f06349f92cc84d213cc",
            "a7076d7d343f711fb20fe6cd023248d8d051e8fe7d44172596cd5c7ea7edaf65",
            "44755217bbb4dadc81ea7695765230a34a2e6cb3b55f373f1de35aeba79ae92c",
            "001adc1d302d5f039278325dcbd5ec3b194f4794f1629d6f962f9f4bb78a7bff",
            "f8460a337c186f07c2e225bb287a1d3d3d686dc69d0828e99640f7d8852c5b90",
            "c9bc3da29025dc1ba562d303d815151d9a937367abb766ae842a165e8493d9fe",
            "5044339dfd65e8163bdfe642614a6be604b04d6aeacf222cf219ad287bfc5cf1",
            "163622db0fe0da93f2ef964eed4c485f3c7a9c312f8e8e8a312ab4bb8141f13e",
            "e1730534a858aa0258ad8904ef12b829b8a123a1c611250275c9ca9471e4c650",
            "1fbc6854f9185caba1e1f55393f41f83b895b18f9c99245c029025ca48f1e14b",
            "8a27b66ccf05b864b6bef6fb5c970fe894f73d2330e8e98fe7841dcdbd9e9576",
            "bc70a33e7a9ec820cac24b87023469a57bdae1bf91cc3961b95806c64a525221",
            "03e5b5f5a088269ec4b329f1e04debfac4cb54b9c0facf038f7e8e0f054be7e2",
        ],
        xorb: "6f2ce16ca5e317f0100ff0e7e5bf40a0de9032e9ee1ad04b6b8ff4e36cdfbf6c",
        file: "3d17b2d7d64a0e011b6717a52d9a16bd2c3f05b743fa8adf52a7d75dafab6d89",
        verif_all: "6daf15a7ed258b91f607e8f5e6723a8564292d12c8104c156f7bad9c255a0180",
        verif_2_5: Some("f68d916f71d08376f61f59634cb94badddff25585bd22cce0b30ffb34f840137"),
    });
}

#[test]
fn golden_d2_const_data() {
    const C: &str = "d3b528b30528f3ad802a015cdf93c531d4da754a1f8c0d341a8f111fd8b6f04e";
    check_dataset(&Dataset {
        data: vec![59u8; 1_000_000],
        sha256: "38e3191a3db93a2016bdd9e5e8b0a98b50876f88450fa740685670651678c92d",
        boundaries: &[
            131072, 262144, 393216, 524288, 655360, 786432, 917504, 1000000,
        ],
        chunk_hashes: &[
            C,
            C,
            C,
            C,
            C,
            C,
            C,
            "99d04e49b71237231d47669f3eec84c90eb6b6be12b364ce326c05c6d71c3a9f",
        ],
        xorb: "a6b5a7f0bb38b6fd5fb39031eb7564e18ea0e7a0b7bea87de54ed1db8bc85884",
        file: "53f845640fcd1c7440befff65bd93434c83a30c6559a705597d61f2ef64e2f88",
        verif_all: "966713ec6609aa2aa74c90a2fa7771f6068114b4ea12cf569142b436d6e3676c",
        verif_2_5: Some("5c9fd391664510ea4130a15cd833e2f683f1e6c7bad5cfaa05c681bfdb4cf837"),
    });
}

#[test]
fn golden_d3() {
    check_dataset(&Dataset {
        data: splitmix(1, 256_000),
        sha256: "22d3f39abfecb364ec41629211c7671d633359667fa2b2395f2eb583c80ad374",
        boundaries: &[25125, 104497, 235569, 256000],
        chunk_hashes: &[
            "2520f307e75abcb6555d51e9019c4fb6eaa48883cb20c6fb5841450e5192f8b1",
            "a541447b277c431354bad0237cb08349615a92601f57815c7125dd1e5185e55b",
            "60c902ab8da4775301965d815987a8b521a9b7ce40626c9466b150e781acf55f",
            "b85030719f9ba26a7443374c4ee8a6dbb1fc24952ffbc62e58d255dd505c2f4b",
        ],
        xorb: "335db8e272cac859dec35783bbc12c7f433bbcea50528d154cb07bf36888a51f",
        file: "116cd39641ee392863a30c2a5bd6ab04676177a75604729bb98cfc4052fc3131",
        verif_all: "db0e3fdc8c0a0b63ce07b032b785022faa8f6a4eea1e6aebdac3a77dc8471fb3",
        verif_2_5: None,
    });
}

#[test]
fn golden_hmac_and_sha256_byte_order() {
    let key_raw: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let key = hash::hash_from_raw(key_raw);
    assert_eq!(
        hash_string(&key),
        "0807060504030201100f0e0d0c0b0a091817161514131211201f1e1d1c1b1a19"
    );
    let c0 = h("6eca1e7dadaf08cca5d82d318c800f07c2ddcec115a7e8627e5edd9605b94b8d");
    assert_eq!(
        hash_string(&hash::hmac_chunk_hash(&c0, &key)),
        "e25d7bb867245ca015c7517182f3b0db34fa74d33f3dc6f858f34083216e1b70"
    );
    let s = hash::sha256_of(&d1());
    assert_eq!(
        hex::encode(hash::hash_raw(&s)),
        "d8d48c93f7a1d0b3e21343fdcf4d3a410e09b11cb60cace8fbbe54918eea40b1"
    );
    assert_eq!(
        hash::sha256_hex_from_xet(&s),
        "b3d0a1f7938cd4d8413a4dcffd4313e2e8ac0cb61cb1090eb140ea8e9154befb"
    );
}

#[test]
fn golden_d1_xorb_body_and_stored_object() {
    let data = d1();
    let (body, idx) = xorb_of(&data, Compression::None);
    assert_eq!(body.len(), 1_000_152);
    assert_eq!(
        sha256_hex(&body),
        "89012d6b736b38afb75e9ba73683c55bfdfc468600e54da28aeb759f0cf10069"
    );
    assert_eq!(hex::encode(&body[..16]), "000d4a01000d4a01afcd1d7b39a820e2");
    assert_eq!(
        hash_string(&idx.hash),
        "6f2ce16ca5e317f0100ff0e7e5bf40a0de9032e9ee1ad04b6b8ff4e36cdfbf6c"
    );
    assert_eq!(idx.uncompressed_bytes(), 1_000_000);
    assert_eq!(
        (idx.chunks[0].byte_start, idx.chunks[0].byte_end),
        (0, 84_501)
    );
    assert_eq!(idx.chunks[1].byte_start, 84_501);

    let stored = xorb::stored_object(&body, &idx);
    assert_eq!(stored.len(), 1_001_008);
    assert_eq!(stored.len() as u64, idx.stored_len());
    assert_eq!(
        sha256_hex(&stored),
        "d553ff5163ed6b729b14878f333ef6fc5b98505be75cad12681ed29be0d0dc42"
    );
    assert_eq!(
        hex::encode(&stored[stored.len() - 24..]),
        "c00000000000000000000000000000000000000054030000"
    );
    assert_eq!(
        u32::from_le_bytes(stored[stored.len() - 4..].try_into().unwrap()),
        852
    );
    // The client library accepts what we store.
    let ok =
        XorbObject::validate_xorb_object(&mut std::io::Cursor::new(&stored), &idx.hash).unwrap();
    assert!(ok.is_some(), "validate_xorb_object ok=true");
    // An old client's upload (with footer) validates to the same index.
    assert_eq!(
        xorb::validate(&stored, &idx.hash, &XorbLimits::default()).unwrap(),
        idx
    );
}

#[test]
fn golden_compressed_chunk_headers_and_bg4() {
    let c59 = vec![59u8; 131072];
    let body = xorb::serialize_chunks(&[&c59], Compression::Lz4);
    assert_eq!(body.len(), 548);
    assert_eq!(hex::encode(&body[..8]), "001c020001000002");
    let idx = xorb::validate(&body, &hash::chunk_hash(&c59), &XorbLimits::default()).unwrap();
    assert_eq!(idx.chunks[0].uncompressed_len, 131072);

    let random = &d1()[..65536];
    let body = xorb::serialize_chunks(&[random], Compression::Bg4Lz4);
    assert_eq!(hex::encode(&body[..8]), "0000000100000001");

    let v: Vec<u8> = (0..10).collect();
    assert_eq!(
        xet_core_structures::xorb_object::byte_grouping::bg4::bg4_split(&v),
        vec![0, 4, 8, 1, 5, 9, 2, 6, 3, 7]
    );
}

fn d1_upload_shard() -> (Vec<u8>, hub_xet::xorb::XorbIndex, shard::NewFile) {
    let data = d1();
    let (_, idx) = xorb_of(&data, Compression::None);
    let n = idx.chunks.len() as u32;
    let file = new_file(&data, &[(&idx, 0, n)]);
    (
        shard::write_upload_shard(std::slice::from_ref(&file), &[&idx]),
        idx,
        file,
    )
}

#[test]
fn golden_upload_form_shard() {
    let (bytes, idx, _) = d1_upload_shard();
    assert_eq!(bytes.len(), 1296);
    assert_eq!(
        sha256_hex(&bytes),
        "b1df68df95db5bb6fa8c1ab30fb79018325220270eeb48532a44ecb5f2adbed9"
    );
    let row = |i: usize| hex::encode(&bytes[i * 48..(i + 1) * 48]);
    assert_eq!(row(0), "48465265706f4d6574614461746100556967456a7b815783a5bdd95ccdd14aa902000000000000000000000000000000");
    assert_eq!(row(1), "010e4ad6d7b2173dbd169a2da517671bdf8afa43b7053f2c896dabaf5dd7a752000000c0010000000000000000000000");
    assert_eq!(row(2), "f017e3a56ce12c6fa040bfe5e7f00f104bd01aeee93290de6cbfdf6ce3f48f6b0000000040420f000000000013000000");
    assert_eq!(row(3), "918b25eda715af6d853a72e6f5e807f6154c10c8122d296480015a259cad7b6f00000000000000000000000000000000");
    assert_eq!(row(4), "d8d48c93f7a1d0b3e21343fdcf4d3a410e09b11cb60cace8fbbe54918eea40b100000000000000000000000000000000");
    assert_eq!(row(5), "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000000000000000000000000000");
    assert_eq!(row(6), "f017e3a56ce12c6fa040bfe5e7f00f104bd01aeee93290de6cbfdf6ce3f48f6b000000001300000040420f0000000000");
    assert_eq!(row(7), "cc08afad7d1eca6e070f808c312dd8a562e8a715c1ceddc28d4bb90596dd5e7e000000000d4a01000000000000000000");
    assert_eq!(row(8), "5d6ea0724da34e620d3f7610ddb8a143d97e392c9965f1228ad8fd279b8963750d4a010008c300000000000000000000");

    // Parsed and validated: files=1 xorbs=1 global_dedup_eligible=[chunk 0].
    let parsed = shard::parse(&bytes, shard::DEFAULT_MAX_SHARD_BYTES).unwrap();
    assert_eq!((parsed.files.len(), parsed.xorbs.len()), (1, 1));
    let summary = shard::validate(&parsed, &index_map(&[&idx])).unwrap();
    let eligible: Vec<String> = summary.dedup_eligible.iter().map(hash_string).collect();
    assert_eq!(
        eligible,
        ["6eca1e7dadaf08cca5d82d318c800f07c2ddcec115a7e8627e5edd9605b94b8d"]
    );
    let f = &summary.files[0];
    assert_eq!(
        hash_string(&f.hash),
        "3d17b2d7d64a0e011b6717a52d9a16bd2c3f05b743fa8adf52a7d75dafab6d89"
    );
    assert_eq!(
        f.sha256.as_deref(),
        Some("b3d0a1f7938cd4d8413a4dcffd4313e2e8ac0cb61cb1090eb140ea8e9154befb")
    );
    assert_eq!(f.size, 1_000_000);
}

#[test]
fn golden_full_shard_from_the_client_writer_parses() {
    use xet_core_structures::metadata_shard::file_structs::*;
    use xet_core_structures::metadata_shard::shard_in_memory::MDBInMemoryShard;
    use xet_core_structures::metadata_shard::xorb_structs::*;
    let (upload, idx, file) = d1_upload_shard();
    // The client's own in-memory shard writer (an independent producer of the full form).
    let mut mem = MDBInMemoryShard::default();
    let mut off = 0u32;
    let chunks = idx
        .chunks
        .iter()
        .map(|c| {
            let e = XorbChunkSequenceEntry::new(c.hash, c.uncompressed_len, off);
            off += c.uncompressed_len;
            e
        })
        .collect();
    mem.add_xorb_block(MDBXorbInfo {
        metadata: XorbChunkSequenceHeader::new(idx.hash, idx.chunks.len(), 1_000_000u32),
        chunks,
    })
    .unwrap();
    let t = file.terms[0];
    mem.add_file_reconstruction_info(MDBFileInfo {
        metadata: FileDataSequenceHeader::new(file.hash, 1, true, true),
        segments: vec![FileDataSequenceEntry::new(
            t.xorb,
            t.unpacked_bytes,
            t.chunk_start,
            t.chunk_end,
        )],
        verification: vec![FileVerificationEntry::new(file.verification[0])],
        metadata_ext: Some(FileMetadataExt::new(file.sha256.unwrap())),
    })
    .unwrap();
    let full = mem.to_bytes().unwrap();
    assert_eq!(full.len(), 1824);
    assert_eq!(
        sha256_hex(&full),
        "38338e5b5d288873429386f73eee53fd647925538fa267d3138c8c3ff5623ca9"
    );
    assert_eq!(&full[48..1296], &upload[48..]);

    // All three §6.5 forms parse to the same shard.
    let a = shard::parse(&upload, usize::MAX).unwrap();
    let b = shard::parse(&full, usize::MAX).unwrap();
    let mut stale = upload.clone();
    stale[40] = 200; // 1.1.6-1.2.x: footer_size says 200, no footer follows
    let c = shard::parse(&stale, usize::MAX).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn golden_dedup_response_shard() {
    let data = d1();
    let (_, idx) = xorb_of(&data, Compression::None);
    let zero = hash::XetHash::default();
    let bytes = shard::build_dedup_shard(
        &[shard::DedupXorb {
            index: &idx,
            file_start_chunks: &[0],
        }],
        &zero,
        1_900_000_000,
        2_000_000_000,
    );
    assert_eq!(bytes.len(), 1304);
    assert_eq!(
        sha256_hex(&bytes),
        "718f745c619be4990500923e15937f2f102e901df472fe751d7f26443a9c1a6b"
    );
    assert_eq!(
        hex::encode(&bytes[bytes.len() - 200..]),
        "010000000000000030000000000000006000000000000000500400000000000000000000000000005004000000000000000000000000000050040000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000b33f710000000000943577000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000040420f00000000005004000000000000"
    );
}
