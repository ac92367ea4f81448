//! The tensor table of a safetensors file, read from its header alone: the
//! 8-byte length and the JSON header through `Storage::read_range`, never the
//! tensor data, so a 10 GB weights file costs a few kilobytes to show.

use super::text;
use crate::domain::Sha256;
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

/// Reads a stored safetensors file's header (never its data) into a table.
pub async fn tensor_table(state: &AppState, sha: &str, size: u64) -> Result<TensorTable, String> {
    let sha = Sha256::parse(sha).map_err(|e| e.to_string())?;
    let first8 = state
        .storage
        .read_range(&sha, 0..8u64.min(size))
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
    let header = state
        .storage
        .read_range(&sha, 8..8 + n)
        .await
        .map_err(|e| e.to_string())?;
    parse_table(&header)
}

/// Builds the table from header JSON.
pub fn parse_table(header: &[u8]) -> Result<TensorTable, String> {
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("the header is not a JSON object: {e}"))?;
    let mut tensors = Vec::new();
    let mut metadata = Vec::new();
    let mut total: u128 = 0;
    let mut by_dtype: std::collections::BTreeMap<String, u128> = Default::default();
    for (name, t) in &v {
        if name == "__metadata__" {
            if let Some(m) = t.as_object() {
                for (k, val) in m {
                    metadata.push((k.clone(), val.as_str().unwrap_or_default().to_string()));
                }
            }
            continue;
        }
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .unwrap_or("?")
            .to_string();
        let dims: Vec<u64> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .unwrap_or_default();
        // Saturating: a hostile shape's product overflows even u128.
        let n: u128 = dims.iter().fold(1, |n, d| n.saturating_mul(*d as u128));
        total = total.saturating_add(n);
        let by = by_dtype.entry(dtype.clone()).or_default();
        *by = by.saturating_add(n);
        tensors.push(Tensor {
            name: name.clone(),
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
