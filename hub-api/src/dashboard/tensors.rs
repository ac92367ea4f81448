//! The tensor table of a safetensors file, read from its header alone: the
//! 8-byte length and the JSON header through `gating::Download::read_range`, never the
//! tensor data, so a 10 GB weights file costs a few kilobytes to show.

use super::text;
use crate::domain::Sha256;
use crate::heavy::Tenant;
use crate::state::AppState;
use crate::validate::safetensors as st;

/// Largest safetensors header the page reads (the format allows 100 MB).
pub const MAX_HEADER_SHOWN: u64 = 16 * 1024 * 1024;
/// Most tensor rows shown.
pub const MAX_TENSOR_ROWS: usize = 5_000;

/// A tensor of a safetensors header.
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: String,
    pub params: String,
}

/// What a safetensors header says.
pub struct TensorTable {
    pub tensors: Vec<Tensor>,
    pub total: String,
    pub total_exact: String,
    pub count: usize,
    pub shown: usize,
    pub by_dtype: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
}

/// Reads a stored safetensors file's header (never its data) into a table,
/// streamed into a typed parse on a blocking thread (heavy work of `tenant`);
/// only for a viewer who passed the read-and-gate decision (`dl`).
pub async fn tensor_table(
    dl: &crate::gating::Download,
    state: &AppState,
    tenant: Tenant,
    sha: &str,
    size: u64,
) -> Result<TensorTable, String> {
    let sha = Sha256::parse(sha).map_err(|e| e.to_string())?;
    let first8 = dl
        .read_range(state, &sha, 0..8u64.min(size))
        .await
        .map_err(|e| e.to_string())?;
    let n = st::header_len(&first8, size)?;
    if n > MAX_HEADER_SHOWN {
        return Err(format!(
            "the header is {} long; the page shows headers up to {}",
            text::size(n as i64),
            text::size(MAX_HEADER_SHOWN as i64)
        ));
    }
    state
        .tenancy
        .heavy
        .run_reading(tenant, &state.storage, &sha, 8..8 + n, |r| {
            parse_table_from(std::io::BufReader::new(r))
        })
        .await
        .map_err(|e| e.to_string())?
}

/// A tensor entry as the page reads it (lenient: missing fields show as `?`).
#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    shape: Vec<u64>,
}

/// A `__metadata__` value: shown when it is a string.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum MetaValue {
    S(String),
    Other(serde::de::IgnoredAny),
}

struct Header {
    tensors: Vec<(String, Entry)>,
    metadata: Vec<(String, String)>,
}

impl<'de> serde::Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Header, A::Error> {
                let mut h = Header {
                    tensors: Vec::new(),
                    metadata: Vec::new(),
                };
                while let Some(k) = m.next_key::<String>()? {
                    if k == "__metadata__" {
                        let meta: Vec<(String, MetaValue)> = m
                            .next_value::<std::collections::BTreeMap<String, MetaValue>>()?
                            .into_iter()
                            .collect();
                        for (key, v) in meta {
                            let v = match v {
                                MetaValue::S(s) => s,
                                MetaValue::Other(_) => String::new(),
                            };
                            h.metadata.push((key, v));
                        }
                    } else {
                        let e = m.next_value::<Entry>()?;
                        h.tensors.push((k, e));
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(V)
    }
}

/// Builds the table from header JSON.
pub fn parse_table(header: &[u8]) -> Result<TensorTable, String> {
    parse_table_from(header)
}

/// Builds the table from header JSON read from `r`.
fn parse_table_from(r: impl std::io::Read) -> Result<TensorTable, String> {
    let h: Header =
        serde_json::from_reader(r).map_err(|e| format!("the header is not a JSON object: {e}"))?;
    let mut tensors = Vec::new();
    let metadata = h.metadata;
    let mut total: u128 = 0;
    let mut by_dtype: std::collections::BTreeMap<String, u128> = Default::default();
    for (name, t) in h.tensors {
        let dtype = t.dtype.unwrap_or_else(|| "?".to_string());
        let dims = t.shape;
        // Saturating: a hostile shape's product overflows even u128.
        let n: u128 = dims.iter().fold(1, |n, d| n.saturating_mul(*d as u128));
        total = total.saturating_add(n);
        let by = by_dtype.entry(dtype.clone()).or_default();
        *by = by.saturating_add(n);
        tensors.push(Tensor {
            name,
            shape: format!(
                "[{}]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            params: text::count(n.min(i64::MAX as u128) as i64),
            dtype,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let count = tensors.len();
    tensors.truncate(MAX_TENSOR_ROWS);
    let t = total.min(i64::MAX as u128) as i64;
    Ok(TensorTable {
        shown: tensors.len(),
        tensors,
        total: text::params(t),
        total_exact: text::count(t),
        count,
        by_dtype: by_dtype
            .into_iter()
            .map(|(d, n)| (d, text::count(n.min(i64::MAX as u128) as i64)))
            .collect(),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_from_header() {
        let t = super::parse_table(
            br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"a":{"dtype":"I64","shape":[],"data_offsets":[24,32]}}"#,
        )
        .unwrap();
        assert_eq!(t.count, 2);
        assert_eq!(t.tensors[0].name, "a");
        assert_eq!(t.tensors[0].params, "1");
        assert_eq!(t.tensors[1].shape, "[2, 3]");
        assert_eq!(t.total_exact, "7");
        assert_eq!(t.metadata, vec![("format".to_string(), "pt".to_string())]);
    }
}
