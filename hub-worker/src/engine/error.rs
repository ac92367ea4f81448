//! Engine errors: why a model cannot be served (`LoadError`, shown on a failed endpoint)
//! and why one request failed (`EngineError`, mapped to HTTP in `http::error`).

use std::path::PathBuf;
use thiserror::Error;

/// Why a model directory cannot be served. The message is what the endpoint shows as
/// `failed`, so each variant names the reason and, where it helps, what to do.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("config.json is missing: the worker needs the model's config.json")]
    MissingConfig,
    #[error("config.json is not valid: {0}")]
    BadConfig(String),
    #[error(
        "tokenizer.json is missing: the worker needs a fast tokenizer file (tokenizer.json); \
         save the tokenizer with transformers' save_pretrained to produce one"
    )]
    MissingTokenizer,
    #[error("tokenizer.json cannot be loaded: {0}")]
    BadTokenizer(String),
    #[error(
        "only pickle weights ({file}) in the repo: the worker never unpickles; \
         upload model.safetensors instead"
    )]
    PickleOnly { file: String },
    #[error("no model weights in the repo (expected model.safetensors{onnx_hint})")]
    NoWeights { onnx_hint: &'static str },
    #[error(
        "unsupported architecture: model_type {model_type:?} (supported: bert, roberta, \
         xlm-roberta, camembert, distilbert)"
    )]
    UnknownArchitecture { model_type: String },
    #[error("task {task} is not supported for this model: {reason}")]
    UnsupportedTask { task: String, reason: String },
    #[error("sentence-transformers module {module:?} is not supported (supported: Transformer, Pooling, Normalize)")]
    UnsupportedModule { module: String },
    #[error("sentence-transformers pooling config is not supported: {0}")]
    UnsupportedPooling(String),
    #[error(
        "model is too big for this worker: needs about {needed_bytes} bytes of memory, \
         {available_bytes} available"
    )]
    TooBig {
        needed_bytes: u64,
        available_bytes: u64,
    },
    #[error("weights cannot be loaded: {0}")]
    Weights(String),
    #[error("the ONNX graph engine cannot load the model: {0}")]
    Onnx(String),
    /// The precision asked for cannot be served here.
    #[error("{0}")]
    Precision(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start engine threads: {0}")]
    Spawn(std::io::Error),
}

/// Why one inference request failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("input is empty: send at least one non-empty string")]
    EmptyInput,
    #[error("input {index} is an empty string")]
    EmptyString { index: usize },
    #[error("too many inputs: {count} in one request, at most {max}")]
    TooManyInputs { count: usize, max: usize },
    #[error("the model is overloaded: {in_flight} inputs in flight (limit {limit}); retry later")]
    Overloaded { in_flight: usize, limit: usize },
    #[error("this model serves {served}, not {requested}")]
    WrongTask {
        served: &'static str,
        requested: &'static str,
    },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    #[error("input {index} has {tokens} tokens, more than the model's limit of {max}; send truncate=true or a shorter input")]
    InputTooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    #[error("tokenization failed: {0}")]
    Tokenization(String),
    #[error("inference failed: {0}")]
    Backend(String),
    #[error("the model is shutting down")]
    Unavailable,
}
