//! GGUF header validation with explicit bounds on every count, length,
//! dimension and offset (the shapes of the llama.cpp loader CVEs), so a
//! hostile file is refused at commit time instead of reaching a worker.

use std::io::Read;

/// How much of a file the header may occupy (metadata + tensor infos). The
/// header is read as a stream, so only the bytes it really takes are read.
pub const MAX_HEADER_BYTES: u64 = 64 * 1024 * 1024;
const MAX_TENSORS: u64 = 100_000;
const MAX_KV: u64 = 65_536;
const MAX_STRING: u64 = 16 * 1024 * 1024;
const MAX_ARRAY: u64 = 1 << 26;
const MAX_DIMS: u32 = 4;

/// What a valid header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub version: u32,
    pub tensors: u64,
    pub architecture: Option<String>,
    /// Bytes of the file the header and alignment padding take.
    pub data_offset: u64,
    /// Metadata of unsigned (or non-negative signed) integer scalar type, by key
    /// (`gemma3.block_count`, ...): what sizes a decoder's KV cache.
    pub integers: std::collections::BTreeMap<String, u64>,
}

/// A bounded reader of the header: `pos` bytes read so far, never past `max`.
struct Reader<'a> {
    r: &'a mut dyn Read,
    pos: u64,
    max: u64,
}

impl Reader<'_> {
    fn claim(&mut self, n: u64) -> Result<(), String> {
        let end = self.pos.checked_add(n).ok_or("length overflows")?;
        if end > self.max {
            return Err(format!(
                "header is truncated or larger than the limit of {MAX_HEADER_BYTES} bytes"
            ));
        }
        self.pos = end;
        Ok(())
    }
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.claim(buf.len() as u64)?;
        self.r
            .read_exact(buf)
            .map_err(|_| "header is truncated".to_string())
    }
    /// Reads and drops `n` bytes.
    fn skip(&mut self, n: u64) -> Result<(), String> {
        self.claim(n)?;
        let got = std::io::copy(&mut (&mut *self.r).take(n), &mut std::io::sink())
            .map_err(|_| "header is truncated".to_string())?;
        if got != n {
            return Err("header is truncated".into());
        }
        Ok(())
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn string(&mut self) -> Result<String, String> {
        self.string_max(MAX_STRING)
    }
    /// A string of at most `max` bytes (checked before it is read).
    fn string_max(&mut self, max: u64) -> Result<String, String> {
        let n = self.u64()?;
        if n > max {
            return Err(format!("string length {n} is over the limit of {max}"));
        }
        if self.pos.saturating_add(n) > self.max {
            return Err(format!(
                "header is truncated or larger than the limit of {MAX_HEADER_BYTES} bytes"
            ));
        }
        let mut v = vec![0u8; n as usize];
        self.fill(&mut v)?;
        String::from_utf8(v).map_err(|_| "string is not UTF-8".to_string())
    }
}

/// Size of a scalar metadata value type, or None for string/array.
fn scalar_size(t: u32) -> Result<Option<u64>, String> {
    Ok(match t {
        0 | 1 | 7 => Some(1), // u8, i8, bool
        2 | 3 => Some(2),     // u16, i16
        4..=6 => Some(4),     // u32, i32, f32
        10..=12 => Some(8),   // u64, i64, f64
        8 | 9 => None,        // string, array
        other => return Err(format!("unknown metadata value type {other}")),
    })
}

fn skip_value(r: &mut Reader<'_>, t: u32, depth: u32) -> Result<Option<String>, String> {
    match scalar_size(t)? {
        Some(n) => {
            r.skip(n)?;
            Ok(None)
        }
        None if t == 8 => r.string().map(Some),
        None => {
            if depth > 0 {
                return Err("nested arrays are not allowed".into());
            }
            let et = r.u32()?;
            let n = r.u64()?;
            if n > MAX_ARRAY {
                return Err(format!("array length {n} is over the limit"));
            }
            match scalar_size(et)? {
                Some(sz) => {
                    r.skip(n.checked_mul(sz).ok_or("array size overflows")?)?;
                }
                None => {
                    for _ in 0..n {
                        skip_value(r, et, depth + 1)?;
                    }
                }
            }
            Ok(None)
        }
    }
}

/// Reads a value of an integer scalar type: `Some(Some(v))`, or `Some(None)` for a
/// negative one; `None` (nothing read) for other types.
fn integer_value(r: &mut Reader<'_>, t: u32) -> Result<Option<Option<u64>>, String> {
    let n: u64 = match t {
        0 | 1 => 1,
        2 | 3 => 2,
        4 | 5 => 4,
        10 | 11 => 8,
        _ => return Ok(None),
    };
    let mut b = [0u8; 8];
    r.fill(&mut b[..n as usize])?;
    let raw = u64::from_le_bytes(b);
    let signed = matches!(t, 1 | 3 | 5 | 11);
    let negative = signed && (raw >> (n * 8 - 1)) & 1 == 1;
    Ok(Some((!negative).then_some(raw)))
}

/// (block size in elements, bytes per block) of ggml tensor types.
fn ggml_type(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

/// Validates the header of a GGUF file of `file_size` bytes, given its first bytes.
pub fn check(prefix: &[u8], file_size: u64) -> Result<Summary, String> {
    let mut r = prefix;
    check_stream(&mut r, file_size)
}

/// Validates the header of a GGUF file of `file_size` bytes read from `r`;
/// reads the header only (never the tensor data).
pub fn check_stream(r: &mut dyn Read, file_size: u64) -> Result<Summary, String> {
    let mut r = Reader {
        r,
        pos: 0,
        max: file_size.min(MAX_HEADER_BYTES),
    };
    let mut magic = [0u8; 4];
    r.fill(&mut magic)?;
    if &magic != b"GGUF" {
        return Err("missing GGUF magic".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version}"));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    if n_tensors > MAX_TENSORS {
        return Err(format!("tensor count {n_tensors} is over the limit"));
    }
    if n_kv > MAX_KV {
        return Err(format!("metadata count {n_kv} is over the limit"));
    }
    let mut keys = std::collections::HashSet::new();
    let mut alignment: u64 = 32;
    let mut architecture = None;
    let mut integers = std::collections::BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string_max(65535)?;
        if key.is_empty() || key.len() > 65535 {
            return Err("metadata key length is invalid".into());
        }
        if !keys.insert(key.clone()) {
            return Err(format!("duplicate metadata key {key:?}"));
        }
        let t = r.u32()?;
        if key == "general.alignment" {
            if t != 4 {
                return Err("general.alignment must be a u32".into());
            }
            let a = r.u32()? as u64;
            if a == 0 || !a.is_power_of_two() || a > 1 << 16 {
                return Err(format!("alignment {a} is not a power of two up to 65536"));
            }
            alignment = a;
            continue;
        }
        if let Some(v) = integer_value(&mut r, t)? {
            if let Some(v) = v {
                integers.insert(key, v);
            }
            continue;
        }
        let v = skip_value(&mut r, t, 0)?;
        if key == "general.architecture" {
            architecture = v;
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string_max(1024)?;
        if name.len() > 1024 {
            return Err("tensor name is too long".into());
        }
        if !names.insert(name.clone()) {
            return Err(format!("duplicate tensor {name:?}"));
        }
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {name:?} has {n_dims} dimensions (1..=4 allowed)"
            ));
        }
        let mut count: u64 = 1;
        let mut first_dim = 0;
        for i in 0..n_dims {
            let d = r.u64()?;
            if d == 0 {
                return Err(format!("tensor {name:?} has a zero dimension"));
            }
            if i == 0 {
                first_dim = d;
            }
            count = count
                .checked_mul(d)
                .filter(|c| *c <= i64::MAX as u64)
                .ok_or_else(|| format!("tensor {name:?}: dimensions overflow"))?;
        }
        let t = r.u32()?;
        let (block, bytes) =
            ggml_type(t).ok_or_else(|| format!("tensor {name:?} has unknown type {t}"))?;
        if first_dim % block != 0 {
            return Err(format!(
                "tensor {name:?}: row of {first_dim} is not a multiple of the block size {block}"
            ));
        }
        let size = (count / block)
            .checked_mul(bytes)
            .ok_or_else(|| format!("tensor {name:?}: size overflows"))?;
        let offset = r.u64()?;
        if offset % alignment != 0 {
            return Err(format!(
                "tensor {name:?}: offset {offset} is not aligned to {alignment}"
            ));
        }
        tensors.push((offset, size));
    }
    drop(names);
    let header_end = r.pos;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    if data_offset > file_size {
        return Err("the data section starts past the end of the file".into());
    }
    let data_len = file_size - data_offset;
    tensors.sort();
    let mut cursor = 0u64;
    for (off, size) in &tensors {
        if *off < cursor {
            return Err(format!(
                "the tensor at data offset {off} overlaps the previous tensor"
            ));
        }
        let end = off.checked_add(*size).ok_or("offset overflows")?;
        if end > data_len {
            return Err(format!(
                "the tensor at data offset {off} ({size} bytes) ends past the end of the file"
            ));
        }
        cursor = end;
    }
    Ok(Summary {
        version,
        tensors: n_tensors,
        architecture,
        data_offset,
        integers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    fn build(n_dims: u32, dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "b");
        s(&mut b, "w");
        b.extend(n_dims.to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    #[test]
    fn valid() {
        let f = build(2, &[4, 2], 0, 0, 32);
        let s = check(&f, f.len() as u64).unwrap();
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        assert!(s.integers.is_empty());
    }

    #[test]
    fn integer_metadata() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(22u32.to_le_bytes());
        s(&mut b, "llama.context_length");
        b.extend(10u32.to_le_bytes());
        b.extend(4096u64.to_le_bytes());
        s(&mut b, "neg");
        b.extend(5u32.to_le_bytes());
        b.extend((-3i32).to_le_bytes());
        s(&mut b, "small");
        b.extend(3u32.to_le_bytes());
        b.extend(7i16.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        let got = check(&b, b.len() as u64).unwrap().integers;
        let want: Vec<(&str, u64)> = vec![
            ("llama.block_count", 22),
            ("llama.context_length", 4096),
            ("small", 7),
        ];
        assert_eq!(
            got.iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn hostile_shapes() {
        let cases = [
            (build(5, &[1, 1, 1, 1, 1], 0, 0, 32), "dimensions"),
            (build(2, &[u64::MAX, 4], 0, 0, 32), "overflow"),
            (build(1, &[8], 99, 0, 32), "unknown type"),
            (build(1, &[8], 0, 3, 32), "aligned"),
            (build(1, &[1024], 0, 0, 32), "past the end"),
            (build(1, &[8], 2, 0, 32), "block size"),
        ];
        for (f, want) in cases {
            let e = check(&f, f.len() as u64).unwrap_err();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        let mut huge = b"GGUF".to_vec();
        huge.extend(3u32.to_le_bytes());
        huge.extend((1u64 << 63).to_le_bytes());
        huge.extend(0u64.to_le_bytes());
        assert!(check(&huge, 100).unwrap_err().contains("tensor count"));
        let mut long = b"GGUF".to_vec();
        long.extend(3u32.to_le_bytes());
        long.extend(0u64.to_le_bytes());
        long.extend(1u64.to_le_bytes());
        long.extend((1u64 << 63).to_le_bytes());
        assert!(check(&long, 100).unwrap_err().contains("string length"));
        assert!(check(b"GGML", 4).is_err());
    }

    /// Counts the bytes a validator reads.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    /// A 270 MB file with a tiny header: the validator reads the header only.
    #[test]
    fn reads_only_the_header() {
        let head = build(2, &[4, 2], 0, 0, 0);
        let data = 270_000_000u64;
        // One tensor of 32 bytes declared; make the data section exactly that
        // plus a big tail the tensor table does not cover (allowed for GGUF).
        let size = head.len() as u64 + data;
        let mut r = Counting {
            inner: std::io::Cursor::new(head.clone()).chain(std::io::repeat(0).take(data)),
            read: 0,
        };
        let s = check_stream(&mut r, size).unwrap();
        assert_eq!(s.tensors, 1);
        assert!(r.read <= head.len() as u64, "read {} bytes", r.read);
    }

    /// A declared header bigger than the limit is refused without reading it.
    #[test]
    fn header_limit() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(MAX_STRING.to_le_bytes()); // a key of 16 MiB: over the key bound
        let size = 1u64 << 40;
        let mut r = Counting {
            inner: std::io::Cursor::new(b).chain(std::io::repeat(b'a').take(size)),
            read: 0,
        };
        assert!(check_stream(&mut r, size).is_err());
        assert!(r.read <= 64, "read {} bytes", r.read);
        // Array bodies are skipped without being buffered, and bounded.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        s(&mut b, "k");
        b.extend(9u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(MAX_ARRAY.to_le_bytes());
        let mut r = Counting {
            inner: std::io::Cursor::new(b).chain(std::io::repeat(0).take(size)),
            read: 0,
        };
        let e = check_stream(&mut r, size).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        assert!(r.read <= MAX_HEADER_BYTES, "read {} bytes", r.read);
    }
}
