//! safetensors header validation: the header length is capped, the header is
//! a JSON object without duplicate names, every tensor's dtype and shape match
//! its byte range, and the ranges tile the data section exactly (no overlap,
//! no gap, no trailing bytes).
//!
//! The header is read as a stream and deserialized into typed entries, never
//! into a `serde_json::Value` tree (which costs ten times the header in
//! memory): what is kept is each tensor's name (for duplicates) and range.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;

/// Largest accepted header: the cap of the `huggingface_hub` client
/// (`SAFETENSORS_MAX_HEADER_LENGTH`); the format itself allows 100 MB.
pub const MAX_HEADER: u64 = 25_000_000;
/// Most tensors in one file (real checkpoints hold thousands per shard).
pub const MAX_TENSORS: usize = 100_000;
/// Most dimensions of one tensor.
pub const MAX_DIMS: usize = 64;

/// What a valid file contains: parameter counts per dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub parameters: BTreeMap<String, u64>,
    pub total: u64,
    pub tensors: usize,
}

/// Bits per element of each dtype the format defines.
fn dtype_bits(d: &str) -> Option<u64> {
    Some(match d {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Reads the header length from the first 8 bytes and checks it fits the file.
pub fn header_len(first8: &[u8], file_size: u64) -> Result<u64, String> {
    if first8.len() < 8 || file_size < 8 {
        return Err("file is shorter than the 8-byte header length".into());
    }
    let n = u64::from_le_bytes(first8[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(format!(
            "header length {n} is over the limit of {MAX_HEADER} bytes"
        ));
    }
    if n > file_size - 8 {
        return Err(format!(
            "header length {n} runs past the end of the file ({file_size} bytes)"
        ));
    }
    if n < 2 {
        return Err("header is too short to be a JSON object".into());
    }
    Ok(n)
}

/// One tensor entry as the format defines it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorInfo {
    dtype: String,
    shape: Shape,
    data_offsets: [u64; 2],
}

/// A shape, read without keeping more than [`MAX_DIMS`] dimensions.
struct Shape(Vec<u64>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of dimensions")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Shape, A::Error> {
                let mut dims = Vec::new();
                while let Some(d) = s.next_element::<u64>()? {
                    if dims.len() == MAX_DIMS {
                        return Err(de::Error::custom(format!(
                            "a shape has more than {MAX_DIMS} dimensions"
                        )));
                    }
                    dims.push(d);
                }
                Ok(Shape(dims))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `__metadata__`: strings to strings, checked and dropped.
struct Metadata;

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("__metadata__ mapping strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Metadata, A::Error> {
                while m.next_key::<IgnoredAny>()?.is_some() {
                    m.next_value::<StrOnly>()?;
                }
                Ok(Metadata)
            }
        }
        d.deserialize_map(V)
    }
}

struct StrOnly;

impl<'de> Deserialize<'de> for StrOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOnly;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (__metadata__ must map strings to strings)")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StrOnly, E> {
                Ok(StrOnly)
            }
        }
        d.deserialize_str(V)
    }
}

/// The state of one check while the header streams through.
struct Check {
    data_len: u64,
    seen: HashSet<String>,
    ranges: Vec<(u64, u64)>,
    parameters: BTreeMap<String, u64>,
    total: u64,
    /// The first semantic error, with its own message.
    error: Option<String>,
}

impl Check {
    fn tensor(&mut self, name: &str, t: TensorInfo) -> Result<(), String> {
        let dtype = t.dtype.as_str();
        let bits = dtype_bits(dtype)
            .ok_or_else(|| format!("tensor {name:?} has unknown dtype {dtype:?}"))?;
        let mut count: u64 = 1;
        for d in &t.shape.0 {
            count = count
                .checked_mul(*d)
                .ok_or_else(|| format!("tensor {name:?}: shape overflows"))?;
        }
        let [begin, end] = t.data_offsets;
        if end < begin {
            return Err(format!("tensor {name:?}: offsets are reversed"));
        }
        if end > self.data_len {
            return Err(format!(
                "tensor {name:?}: offsets end at {end}, past the data section of {} bytes",
                self.data_len
            ));
        }
        let bits_total = count
            .checked_mul(bits)
            .ok_or_else(|| format!("tensor {name:?}: size overflows"))?;
        if bits_total % 8 != 0 {
            return Err(format!(
                "tensor {name:?}: {count} elements of {dtype} is not a whole number of bytes"
            ));
        }
        if bits_total / 8 != end - begin {
            return Err(format!(
                "tensor {name:?}: dtype {dtype} and shape {:?} need {} bytes but the offsets span {}",
                t.shape.0,
                bits_total / 8,
                end - begin
            ));
        }
        self.ranges.push((begin, end));
        match self.parameters.get_mut(dtype) {
            Some(n) => *n += count,
            None => {
                self.parameters.insert(t.dtype, count);
            }
        }
        self.total = self.total.saturating_add(count);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Check {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Check {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while let Some(name) = m.next_key::<String>()? {
            if self.seen.contains(&name) {
                self.error = Some(format!("duplicate entry {name:?}"));
                return Err(de::Error::custom("duplicate entry"));
            }
            if name == "__metadata__" {
                m.next_value::<Metadata>()?;
            } else {
                if self.ranges.len() >= MAX_TENSORS {
                    self.error = Some(format!("more than {MAX_TENSORS} tensors"));
                    return Err(de::Error::custom("too many tensors"));
                }
                let t = m.next_value::<TensorInfo>().map_err(|e| {
                    self.error = Some(format!("tensor {name:?}: {e}"));
                    e
                })?;
                if let Err(msg) = self.tensor(&name, t) {
                    self.error = Some(msg);
                    return Err(de::Error::custom("invalid tensor"));
                }
            }
            self.seen.insert(name);
        }
        Ok(())
    }
}

/// Validates a header of `n` bytes (the bytes after the length) read from
/// `r`, of a file of `file_size` bytes. Reads exactly the header.
pub fn check_reader(r: &mut dyn Read, n: u64, file_size: u64) -> Result<Summary, String> {
    let mut limited = std::io::BufReader::with_capacity(64 * 1024, r.take(n));
    let mut first = [0u8; 1];
    limited
        .read_exact(&mut first)
        .map_err(|_| "header is truncated".to_string())?;
    if first[0] != b'{' {
        return Err("header does not start with '{'".into());
    }
    let mut check = Check {
        data_len: file_size - 8 - n,
        seen: HashSet::new(),
        ranges: Vec::new(),
        parameters: BTreeMap::new(),
        total: 0,
        error: None,
    };
    {
        let mut de =
            serde_json::Deserializer::from_reader(std::io::Cursor::new(first).chain(&mut limited));
        if let Err(e) = (&mut check).deserialize(&mut de) {
            return Err(check
                .error
                .take()
                .unwrap_or_else(|| format!("header is not a JSON object: {e}")));
        }
    }
    // Only padding spaces may follow the object (and the header must be whole).
    let mut rest = [0u8; 8192];
    loop {
        let k = limited
            .read(&mut rest)
            .map_err(|e| format!("header could not be read: {e}"))?;
        if k == 0 {
            break;
        }
        if !rest[..k].iter().all(|b| *b == b' ') {
            return Err("header has trailing bytes after the JSON object".into());
        }
    }
    drop(check.seen);
    let mut ranges = check.ranges;
    ranges.sort_unstable();
    let mut cursor = 0u64;
    for (b, e) in &ranges {
        if *b < cursor {
            return Err(format!(
                "the tensor at data offsets [{b}, {e}] overlaps the previous tensor"
            ));
        }
        if *b > cursor {
            return Err(format!(
                "gap before the tensor at data offsets [{b}, {e}] (bytes {cursor}..{b} are unused)"
            ));
        }
        cursor = *e;
    }
    if cursor != check.data_len {
        return Err(format!(
            "the data section is {} bytes but the tensors cover {cursor}",
            check.data_len
        ));
    }
    Ok(Summary {
        parameters: check.parameters,
        total: check.total,
        tensors: ranges.len(),
    })
}

/// Validates a header (the `n` bytes after the length) of a file of `file_size` bytes.
pub fn check_header(header: &[u8], file_size: u64) -> Result<Summary, String> {
    let mut r = header;
    check_reader(&mut r, header.len() as u64, file_size)
}

/// Validates a file read from `r` (the length, then the header; the data is
/// not read), of `file_size` bytes.
pub fn check_stream(r: &mut dyn Read, file_size: u64) -> Result<Summary, String> {
    let mut first8 = [0u8; 8];
    let got = read_up_to(r, &mut first8).map_err(|e| format!("could not read the file: {e}"))?;
    let n = header_len(&first8[..got], file_size)?;
    check_reader(r, n, file_size)
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let k = r.read(&mut buf[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    Ok(got)
}

/// Validates a complete file held in memory.
pub fn check_file(bytes: &[u8]) -> Result<Summary, String> {
    let n = header_len(bytes, bytes.len() as u64)?;
    check_header(&bytes[8..8 + n as usize], bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn valid() {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"I64","shape":[1],"data_offsets":[16,24]}}"#;
        let s = check_file(&file(h, 24)).unwrap();
        assert_eq!(s.total, 5);
        assert_eq!(s.parameters["F32"], 4);
        // Padding spaces are fine.
        let padded = format!("{h}   ");
        assert!(check_file(&file(&padded, 24)).is_ok());
    }

    #[test]
    fn invalid() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "shorter"),
            (
                {
                    let mut v = u64::MAX.to_le_bytes().to_vec();
                    v.extend([0; 10]);
                    v
                },
                "limit",
            ),
            (
                {
                    let mut v = 1000u64.to_le_bytes().to_vec();
                    v.extend(b"{}");
                    v
                },
                "past the end",
            ),
            (file("[1]", 0), "start"),
            (file("{not json}", 0), "JSON"),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    8,
                ),
                "duplicate",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "need 8 bytes",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
                    6,
                ),
                "overlaps",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    8,
                ),
                "gap",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    8,
                ),
                "cover",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}"#,
                    4,
                ),
                "past the data",
            ),
            (
                file(
                    r#"{"a":{"dtype":"X9","shape":[1],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "unknown dtype",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "overflow",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                    4,
                ),
                "reversed",
            ),
            (file("{}x", 0), "trailing"),
        ];
        for (bytes, want) in cases {
            let err = check_file(&bytes).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    /// The attack of issue 13: a 99 MB declared header is refused from its
    /// 8-byte length, before anything else is read.
    #[test]
    fn big_declared_header_is_refused_up_front() {
        let e = header_len(&99_000_000u64.to_le_bytes(), 200_000_000).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
        assert!(header_len(&MAX_HEADER.to_le_bytes(), MAX_HEADER + 8).is_ok());
    }

    /// Streaming: the data section is never read, only the header.
    #[test]
    fn stream_reads_the_header_only() {
        let h = r#"{"a":{"dtype":"U8","shape":[100000000],"data_offsets":[0,100000000]}}"#;
        let mut head = (h.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(h.as_bytes());
        let size = head.len() as u64 + 100_000_000;
        struct Counting<R>(R, u64);
        impl<R: Read> Read for Counting<R> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(b)?;
                self.1 += n as u64;
                Ok(n)
            }
        }
        let mut r = Counting(
            std::io::Cursor::new(head.clone()).chain(std::io::repeat(0).take(100_000_000)),
            0,
        );
        let s = check_stream(&mut r, size).unwrap();
        assert_eq!(s.total, 100_000_000);
        assert_eq!(r.1, head.len() as u64);
    }

    #[test]
    fn tensor_and_dims_bounds() {
        let dims = vec!["1"; MAX_DIMS + 1].join(",");
        let h = format!(r#"{{"a":{{"dtype":"U8","shape":[{dims}],"data_offsets":[0,1]}}}}"#);
        let e = check_file(&file(&h, 1)).unwrap_err();
        assert!(e.contains("dimensions"), "{e}");
        let mut h = String::from("{");
        for i in 0..=MAX_TENSORS {
            h.push_str(&format!(
                r#""t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}},"#
            ));
        }
        h.pop();
        h.push('}');
        let e = check_file(&file(&h, 0)).unwrap_err();
        assert!(e.contains("tensors"), "{e}");
    }

    /// Differential check against the reference implementation on mutated files.
    #[test]
    fn agrees_with_reference_crate() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}"#;
        let base = file(h, 11);
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut f = base.clone();
            for _ in 0..(1 + next() % 3) {
                let i = (next() as usize) % f.len();
                match next() % 4 {
                    0 => f[i] = (next() % 256) as u8,
                    1 => f[i] = b"0123456789,[]{}\" "[(next() % 17) as usize],
                    2 if f.len() > 9 => {
                        f.remove(i);
                    }
                    _ => f.insert(i, b"0123456789"[(next() % 10) as usize]),
                }
            }
            let ours = check_file(&f).is_ok();
            let reference = safetensors::SafeTensors::deserialize(&f).is_ok();
            if ours && !reference {
                panic!(
                    "we accept what the reference refuses: {:?}",
                    String::from_utf8_lossy(&f)
                );
            }
        }
    }
}
