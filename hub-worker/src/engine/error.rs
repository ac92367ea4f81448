//! Engine errors, one enum per question:
//!
//! * [`InitError`]: why an engine runtime library (ONNX Runtime, OpenVINO) cannot start
//!   (fatal for `--engine ort|openvino`, logged for `auto`).
//! * [`LoadError`]: why a model cannot be served; its message is the failed endpoint's
//!   reason sent to the hub.
//! * [`RunError`]: why a forward pass failed (the [`Backend`](super::backend::Backend)
//!   trait's error), reaching the caller as [`EngineError::Backend`] or, during the
//!   load-time warm-up, as [`LoadError::WarmUp`].
//! * [`EngineError`]: why one inference request failed, mapped to an HTTP status and
//!   `error_type` in `http::error`.

use super::options::Precision;
use std::path::PathBuf;
use thiserror::Error;

/// Why an engine runtime library could not be initialised at worker start.
#[derive(Debug, Error)]
pub enum InitError {
    #[error("no {library}: pass --{flag} or set {env} ({script} fetches one)")]
    NoLibrary {
        library: &'static str,
        flag: &'static str,
        env: &'static str,
        script: &'static str,
    },
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("cannot list {}: {source}", .path.display())]
    ListDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {library} in {}", .dir.display())]
    NotInDir { library: &'static str, dir: PathBuf },
    #[error("cannot load {}: {message}", .path.display())]
    Library { path: PathBuf, message: String },
    /// The library loaded but would not start (its own message).
    #[error("cannot create {what}: {message}")]
    Runtime { what: &'static str, message: String },
    #[error("cannot list OpenVINO devices: {0}")]
    Devices(String),
    #[error("OpenVINO at {} has no CPU device (plugins beside the library?)", .0.display())]
    NoCpuDevice(PathBuf),
}

/// Why a forward pass failed: the [`Backend`](super::backend::Backend) trait's error.
/// The engine variants carry the engine library's own words.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RunError {
    #[error("{0}")]
    Candle(String),
    #[error("{0}")]
    Ort(String),
    #[error("OpenVINO: {0}")]
    OpenVino(String),
    #[error("llama.cpp: {0}")]
    Llama(String),
    /// A classification pass on a model loaded for embeddings.
    #[error("model was loaded without a classification head")]
    NoClassifier,
    /// The graph lacks the output this pass reads (`hidden-state` or `logits`).
    #[error("the graph has no {0} output")]
    MissingOutput(&'static str),
    #[error("scalar output")]
    ScalarOutput,
    /// A packed pass on a repo's own graph (only the derived graph packs).
    #[error("this graph cannot run packed inputs")]
    CannotPack,
    #[error("the engine panicked on this batch")]
    Panicked,
    #[error("engine returned {rows} rows for {inputs} inputs")]
    RowCount { rows: usize, inputs: usize },
}

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
    /// The load-time forward pass failed: the model is broken for this engine.
    #[error("weights cannot be loaded: {0}")]
    WarmUp(#[source] RunError),
    #[error("the ONNX graph engine cannot load the model: {0}")]
    Onnx(String),
    /// `--engine` names an engine this build lacks.
    #[error("the ONNX graph engine cannot load the model: this worker was built without the {feature} feature")]
    NotBuilt { feature: &'static str },
    /// The engine is built in but its library was not initialised at start.
    #[error("the ONNX graph engine cannot load the model: {engine} is not initialised")]
    NotInitialised { engine: &'static str },
    /// The precision asked for cannot be served here; `why` completes "which ...".
    #[error("precision {precision} needs the OpenVINO engine, which {why}")]
    Precision {
        precision: Precision,
        why: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start engine threads: {0}")]
    Spawn(std::io::Error),
    /// More than one GGUF model file in a repo: which one to serve is not guessed.
    #[error("several GGUF files in the repo ({}): a repo served as an endpoint must hold exactly one (multimodal projectors mmproj*.gguf aside)", .files.join(", "))]
    SeveralGguf { files: Vec<String> },
    /// A decoder LLM that the generation engines cannot load (their own words).
    #[error("the decoder cannot be loaded: {0}")]
    Decoder(String),
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
    Backend(#[from] RunError),
    #[error("the model is shutting down")]
    Unavailable,
    /// A generation request that cannot fit the sequence context: refused before it
    /// runs, never truncated.
    #[error("this model's context is {context} tokens; the prompt has {prompt_tokens} tokens{}; shorten the prompt or lower max_tokens",
        .max_tokens.map(|m| format!(" and {m} more were requested")).unwrap_or_default())]
    ContextLengthExceeded {
        prompt_tokens: usize,
        max_tokens: Option<usize>,
        context: usize,
    },
    /// A chat request to a model without a chat template.
    #[error("this model has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json, none in the GGUF): use /v1/completions, or add chat_template.jinja to the repo")]
    NoChatTemplate,
    /// The chat template failed to render (its own `raise_exception`, or an error).
    #[error("the chat template failed: {0}")]
    Template(String),
    /// `response_format` / a grammar the engine cannot compile, or one too costly to
    /// enforce (a token took longer than `--gen-grammar-token-ms`).
    #[error("invalid response_format: {0}")]
    Grammar(String),
    /// Constrained generation is refused for now: grammars of requests that went away
    /// are still being computed (`engine::generate::llama::offthread`).
    #[error("constrained generation (response_format, forced tool calls) is refused for now: {abandoned} grammars of earlier requests are still being computed; retry in a few seconds")]
    GrammarBusy { abandoned: usize },
    /// The process a decoder runs in stopped and is being started again
    /// (`engine::generate::llama::host`).
    #[error(
        "the model's process stopped ({0}) and is being started again; retry in a few seconds"
    )]
    Restarting(String),
    /// The process a decoder runs in ended and could not be started again
    /// (`llama::host::START_ATTEMPTS` attempts in a row): the model is not restarted
    /// any more, and the worker reports its replica failed to the hub.
    #[error("the model's process ended and could not be started again: {0}")]
    Failed(String),
}

/// A `--engine` / `HUB_WORKER_ENGINE` value that names no engine.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown engine {given:?}: expected one of {expected}")]
pub struct UnknownEngine {
    pub given: String,
    /// The valid spellings, comma-separated.
    pub expected: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failed-endpoint reasons the hub shows, and the start-up errors, read as they
    /// did when they were strings.
    #[test]
    fn reasons_read_as_before() {
        let cases: [(Box<dyn std::error::Error>, &str); 6] = [
            (
                Box::new(LoadError::WarmUp(RunError::Candle("shape mismatch".into()))),
                "weights cannot be loaded: shape mismatch",
            ),
            (
                Box::new(LoadError::NotBuilt {
                    feature: "engine-ort",
                }),
                "the ONNX graph engine cannot load the model: this worker was built without \
                 the engine-ort feature",
            ),
            (
                Box::new(LoadError::NotInitialised {
                    engine: "ONNX Runtime",
                }),
                "the ONNX graph engine cannot load the model: ONNX Runtime is not initialised",
            ),
            (
                Box::new(LoadError::Precision {
                    precision: Precision::Bf16,
                    why: "this worker was built without",
                }),
                "precision bf16 needs the OpenVINO engine, which this worker was built without",
            ),
            (
                Box::new(InitError::NoLibrary {
                    library: "libonnxruntime.so",
                    flag: "ort-dylib",
                    env: "ORT_DYLIB_PATH",
                    script: "scripts/worker/fetch-onnxruntime.sh",
                }),
                "no libonnxruntime.so: pass --ort-dylib or set ORT_DYLIB_PATH \
                 (scripts/worker/fetch-onnxruntime.sh fetches one)",
            ),
            (
                Box::new(InitError::Runtime {
                    what: "an OpenVINO core",
                    message: "boom".into(),
                }),
                "cannot create an OpenVINO core: boom",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
        let warm = LoadError::WarmUp(RunError::Panicked);
        assert!(
            std::error::Error::source(&warm).is_some(),
            "the pass's error is the source"
        );
    }
}
