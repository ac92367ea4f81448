//! safetensors header validation: the header length is capped, the header is
//! a JSON object without duplicate names, every tensor's dtype and shape match
//! its byte range, and the ranges tile the data section exactly (no overlap,
//! no gap, no trailing bytes).

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Largest accepted header (the limit of the reference `safetensors` crate).
pub const MAX_HEADER: u64 = 100_000_000;

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

/// A JSON object read as a list, so duplicate keys can be refused.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Validates a header (the `n` bytes after the length) of a file of `file_size` bytes.
pub fn check_header(header: &[u8], file_size: u64) -> Result<Summary, String> {
    let text = std::str::from_utf8(header).map_err(|_| "header is not UTF-8".to_string())?;
    if !text.starts_with('{') {
        return Err("header does not start with '{'".into());
    }
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Entries>();
    let entries = match stream.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(format!("header is not a JSON object: {e}")),
        None => return Err("header is empty".into()),
    };
    // Only padding spaces may follow the object.
    let rest = &text[stream.byte_offset()..];
    if !rest.bytes().all(|b| b == b' ') {
        return Err("header has trailing bytes after the JSON object".into());
    }
    let data_len = file_size - 8 - header.len() as u64;
    let mut seen = std::collections::HashSet::new();
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    let mut parameters: BTreeMap<String, u64> = BTreeMap::new();
    let mut total: u64 = 0;
    for (name, v) in &entries.0 {
        if !seen.insert(name.as_str()) {
            return Err(format!("duplicate entry {name:?}"));
        }
        if name == "__metadata__" {
            let ok = v
                .as_object()
                .is_some_and(|m| m.values().all(|x| x.is_string()));
            if !ok {
                return Err("__metadata__ must map strings to strings".into());
            }
            continue;
        }
        let obj = v
            .as_object()
            .ok_or_else(|| format!("tensor {name:?} is not an object"))?;
        for k in obj.keys() {
            if !matches!(k.as_str(), "dtype" | "shape" | "data_offsets") {
                return Err(format!("tensor {name:?} has an unknown field {k:?}"));
            }
        }
        let dtype = obj
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor {name:?} has no dtype"))?;
        let bits = dtype_bits(dtype)
            .ok_or_else(|| format!("tensor {name:?} has unknown dtype {dtype:?}"))?;
        let shape = obj
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("tensor {name:?} has no shape"))?;
        let mut count: u64 = 1;
        for d in shape {
            let d = d
                .as_u64()
                .ok_or_else(|| format!("tensor {name:?} has a non-integer dimension"))?;
            count = count
                .checked_mul(d)
                .ok_or_else(|| format!("tensor {name:?}: shape overflows"))?;
        }
        let offsets = obj
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| format!("tensor {name:?} needs data_offsets [begin, end]"))?;
        let (begin, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
            (Some(b), Some(e)) => (b, e),
            _ => return Err(format!("tensor {name:?} has non-integer offsets")),
        };
        if end < begin {
            return Err(format!("tensor {name:?}: offsets are reversed"));
        }
        if end > data_len {
            return Err(format!(
                "tensor {name:?}: offsets end at {end}, past the data section of {data_len} bytes"
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
                "tensor {name:?}: dtype {dtype} and shape {shape:?} need {} bytes but the offsets span {}",
                bits_total / 8,
                end - begin
            ));
        }
        ranges.push((begin, end, name.clone()));
        *parameters.entry(dtype.to_string()).or_default() += count;
        total = total.saturating_add(count);
    }
    ranges.sort();
    let mut cursor = 0u64;
    for (b, e, name) in &ranges {
        if *b < cursor {
            return Err(format!("tensor {name:?} overlaps the previous tensor"));
        }
        if *b > cursor {
            return Err(format!(
                "gap before tensor {name:?} (bytes {cursor}..{b} are unused)"
            ));
        }
        cursor = *e;
    }
    if cursor != data_len {
        return Err(format!(
            "the data section is {data_len} bytes but the tensors cover {cursor}"
        ));
    }
    Ok(Summary {
        parameters,
        total,
        tensors: ranges.len(),
    })
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
