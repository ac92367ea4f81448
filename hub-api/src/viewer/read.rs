//! Reading rows back from a split's Parquet files: a page of rows by offset
//! (only the row groups that hold it are fetched and decoded), and scans
//! for `/search` and `/filter`. Parquet bytes come through ranged reads of
//! the object store ([`ObjectReader`]); nothing reads a whole file.

use super::{Shard, SplitManifest};
use crate::error::{ApiError, ApiResult};
use crate::gating::Download;
use crate::storage::{Storage, StorageKey};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde_json::{Map, Value};
use std::ops::Range;
use std::sync::Arc;

/// A Parquet file in the object store, read by ranges.
pub struct ObjectReader {
    storage: Storage,
    key: StorageKey,
    size: u64,
}

impl ObjectReader {
    pub fn new(storage: Storage, key: StorageKey, size: u64) -> Self {
        Self { storage, key, size }
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.storage
                .object_range(&self.key, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let md = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}

fn perr(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(anyhow::anyhow!("reading Parquet: {e}"))
}

async fn builder(
    storage: &Storage,
    shard: &Shard,
) -> ApiResult<ParquetRecordBatchStreamBuilder<ObjectReader>> {
    let r = ObjectReader::new(storage.clone(), shard.key()?, shard.size);
    ParquetRecordBatchStreamBuilder::new(r).await.map_err(perr)
}

/// The schema and row count of a Parquet file (a repo's own, read in place).
pub async fn inspect(
    storage: &Storage,
    key: StorageKey,
    size: u64,
) -> Result<(arrow_schema::SchemaRef, u64), String> {
    let r = ObjectReader::new(storage.clone(), key, size);
    let b = ParquetRecordBatchStreamBuilder::new(r)
        .await
        .map_err(|e| e.to_string())?;
    let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
    Ok((b.schema().clone(), rows))
}

/// Rows `offset..offset + length` of a split, as batches in order. `_proof`:
/// the caller may read the repo's files (`gating`).
pub async fn page(
    _proof: &Download,
    storage: &Storage,
    split: &SplitManifest,
    offset: u64,
    length: usize,
) -> ApiResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let end = offset + length as u64;
    let mut start = 0u64;
    for shard in &split.shards {
        let (s, e) = (start, start + shard.num_rows);
        start = e;
        if e <= offset || s >= end || shard.num_rows == 0 {
            continue;
        }
        let (from, to) = (offset.max(s) - s, end.min(e) - s);
        let b = builder(storage, shard).await?;
        // The row groups holding rows from..to, and the selection within them.
        let mut groups = Vec::new();
        let mut first_row = None;
        let mut at = 0u64;
        for (i, rg) in b.metadata().row_groups().iter().enumerate() {
            let n = rg.num_rows().max(0) as u64;
            if at + n > from && at < to {
                groups.push(i);
                first_row.get_or_insert(at);
            }
            at += n;
        }
        let Some(base) = first_row else { continue };
        let sel = RowSelection::from(vec![
            RowSelector::skip((from - base) as usize),
            RowSelector::select((to - from) as usize),
        ]);
        let mut stream = b
            .with_row_groups(groups)
            .with_row_selection(sel)
            .with_batch_size(length.max(1))
            .build()
            .map_err(perr)?;
        while let Some(batch) = stream.next().await {
            out.push(batch.map_err(perr)?);
        }
    }
    Ok(out)
}

/// Scans a split's rows in order, calling `f(row_idx, batch, row)`; stops
/// after `limit` rows (answers whether it stopped early).
pub async fn scan(
    _proof: &Download,
    storage: &Storage,
    split: &SplitManifest,
    limit: u64,
    mut f: impl FnMut(u64, &RecordBatch, usize),
) -> ApiResult<bool> {
    let mut idx = 0u64;
    for shard in &split.shards {
        let mut stream = builder(storage, shard)
            .await?
            .with_batch_size(4096)
            .build()
            .map_err(perr)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(perr)?;
            for r in 0..batch.num_rows() {
                if idx >= limit {
                    return Ok(true);
                }
                f(idx, &batch, r);
                idx += 1;
            }
        }
    }
    Ok(false)
}

/// Streams one Parquet file of a split whole (`/parquet/...` downloads).
pub async fn stream_shard(
    proof: &Download,
    state: &crate::state::AppState,
    shard: &Shard,
) -> ApiResult<futures::stream::BoxStream<'static, Result<Bytes, crate::storage::StorageError>>> {
    match shard.key()? {
        StorageKey::Blob(sha) => proof.stream(state, &sha, None).await,
        key => Ok(state.storage.derived_stream(&key).await?),
    }
}

/// Longest string cell returned whole; longer ones are cut and listed in
/// the row's `truncated_cells`.
pub const MAX_CELL_CHARS: usize = 16 * 1024;

/// A row as JSON (columns in order) and the cells that were cut.
pub fn row_json(batch: &RecordBatch, r: usize) -> (Value, Vec<String>) {
    let mut m = Map::new();
    let mut cut = Vec::new();
    for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let mut v = cell(col.as_ref(), r);
        if let Value::String(s) = &v {
            if s.chars().count() > MAX_CELL_CHARS {
                v = Value::String(s.chars().take(MAX_CELL_CHARS).collect());
                cut.push(f.name().clone());
            }
        }
        m.insert(f.name().clone(), v);
    }
    (Value::Object(m), cut)
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One cell as JSON: numbers, strings and booleans as themselves, lists as
/// arrays, structs as objects, anything else as arrow's display text.
pub fn cell(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float16 => num(a.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => num(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => num(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::List(_) => {
            let v = a.as_list::<i32>().value(i);
            Value::Array((0..v.len()).map(|j| cell(v.as_ref(), j)).collect())
        }
        DataType::LargeList(_) => {
            let v = a.as_list::<i64>().value(i);
            Value::Array((0..v.len()).map(|j| cell(v.as_ref(), j)).collect())
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), cell(c.as_ref(), i));
            }
            Value::Object(m)
        }
        _ => {
            let opts = arrow_cast::display::FormatOptions::default();
            match arrow_cast::display::ArrayFormatter::try_new(a, &opts) {
                Ok(f) => Value::String(f.value(i).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}
