//! The dataset viewer (issue 16): what the Hugging Face dataset viewer
//! (<https://huggingface.co/docs/dataset-viewer>) answers about a dataset
//! repo, served by the hub itself.
//!
//! - **Jobs** (`jobs`): every commit that moves a dataset's default branch
//!   queues a conversion job in the commit's transaction (`db::refs`); the
//!   API queues one on demand for a revision not converted yet. Each replica
//!   runs one job at a time, off the request path, claimed with
//!   `FOR UPDATE SKIP LOCKED` and a lease that a running job renews.
//! - **Discovery** (`discover`): configs and splits from the README's
//!   `configs:` block, else from file and folder names.
//! - **Conversion** (`convert`): each CSV, TSV, JSON Lines (or JSON array)
//!   file is streamed from the object store through a bounded channel into
//!   arrow's readers (schema inferred from its first records, as pyarrow
//!   does) and written batch by batch with `ArrowWriter` (row groups of
//!   [`convert::ROW_GROUP`] rows) to a scratch file, then stored under
//!   `viewer/<repo id>/<commit>/` in the object store, beside the hub's other
//!   data and outside the repo's commits. Parquet files of the repo are read
//!   in place. A file the readers refuse makes the revision's "cannot show"
//!   reason (which file, which line, why); the commit itself never fails.
//! - **Reads** (`read`): pages of rows, search and filter read the Parquet
//!   files through ranged object-store reads (footer, then the row groups a
//!   page needs), never a whole file.
//! - **API** (`routes::viewer`): `/api/datasets-server/...` in the HF
//!   viewer's shapes, gated exactly like file downloads.

pub mod convert;
pub mod csv_split;
pub mod discover;
pub mod filter;
pub mod jobs;
pub mod read;

use arrow_schema::{DataType, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where a split's Parquet file is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Location {
    /// A Parquet file of the repo, read in place.
    Repo { sha256: String },
    /// A converted file in the object store (`StorageKey::Derived`).
    Derived { key: String },
}

/// One Parquet file of a split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shard {
    /// The repo file it holds the rows of.
    pub source: String,
    pub location: Location,
    /// Bytes of the Parquet file.
    pub size: u64,
    pub num_rows: u64,
}

impl Shard {
    pub fn key(&self) -> crate::error::ApiResult<crate::storage::StorageKey> {
        Ok(match &self.location {
            Location::Repo { sha256 } => {
                crate::storage::StorageKey::Blob(crate::domain::Sha256::parse(sha256)?)
            }
            Location::Derived { key } => crate::storage::StorageKey::Derived(key.clone()),
        })
    }
}

/// A column: its name and its HF `datasets` feature type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitManifest {
    pub name: String,
    pub num_rows: u64,
    /// Bytes of the source files.
    pub num_bytes_original: u64,
    /// Bytes of the Parquet files.
    pub num_bytes_parquet: u64,
    pub features: Vec<Feature>,
    pub shards: Vec<Shard>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigManifest {
    pub name: String,
    pub splits: Vec<SplitManifest>,
}

/// What a finished job found: `viewer_jobs.result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub configs: Vec<ConfigManifest>,
}

impl Manifest {
    pub fn split(&self, config: &str, split: &str) -> Option<&SplitManifest> {
        self.configs
            .iter()
            .find(|c| c.name == config)?
            .splits
            .iter()
            .find(|s| s.name == split)
    }
}

/// The HF `datasets` feature type of an arrow type
/// (`{"dtype": "int64", "_type": "Value"}`, `Sequence`, nested dicts).
pub fn hf_type(dt: &DataType) -> Value {
    let value = |d: &str| json!({"dtype": d, "_type": "Value"});
    match dt {
        DataType::Null => value("null"),
        DataType::Boolean => value("bool"),
        DataType::Int8 => value("int8"),
        DataType::Int16 => value("int16"),
        DataType::Int32 => value("int32"),
        DataType::Int64 => value("int64"),
        DataType::UInt8 => value("uint8"),
        DataType::UInt16 => value("uint16"),
        DataType::UInt32 => value("uint32"),
        DataType::UInt64 => value("uint64"),
        DataType::Float16 => value("float16"),
        DataType::Float32 => value("float32"),
        DataType::Float64 => value("float64"),
        DataType::Utf8 | DataType::Utf8View => value("string"),
        DataType::LargeUtf8 => value("large_string"),
        DataType::Binary | DataType::BinaryView | DataType::FixedSizeBinary(_) => value("binary"),
        DataType::LargeBinary => value("large_binary"),
        DataType::Date32 => value("date32"),
        DataType::Date64 => value("date64"),
        DataType::Timestamp(unit, tz) => {
            let u = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            match tz {
                Some(tz) => value(&format!("timestamp[{u}, tz={tz}]")),
                None => value(&format!("timestamp[{u}]")),
            }
        }
        DataType::Decimal128(p, s) => value(&format!("decimal128({p}, {s})")),
        DataType::Decimal256(p, s) => value(&format!("decimal256({p}, {s})")),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => {
            json!({"feature": hf_type(f.data_type()), "_type": "Sequence"})
        }
        DataType::Struct(fields) => {
            let mut m = serde_json::Map::new();
            for f in fields {
                m.insert(f.name().clone(), hf_type(f.data_type()));
            }
            Value::Object(m)
        }
        DataType::Dictionary(_, v) => hf_type(v),
        other => value(&other.to_string().to_ascii_lowercase()),
    }
}

/// The features of a schema, in column order.
pub fn features(schema: &Schema) -> Vec<Feature> {
    schema
        .fields()
        .iter()
        .map(|f| Feature {
            name: f.name().clone(),
            ty: hf_type(f.data_type()),
        })
        .collect()
}
