//! The inference engine, usable without the control plane: load a model directory, then
//! embed, compare or classify.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use hub_worker::engine::{EmbedOptions, EngineConfig, Model};
//! let dir = std::path::PathBuf::from("/models/minilm");
//! let model = tokio::task::spawn_blocking(move || Model::load(&dir, None, &EngineConfig::default()))
//!     .await??;
//! let out = model.embed(vec!["hello".into()], EmbedOptions::default()).await?;
//! println!("{} dims, {} tokens", out.vectors[0].len(), out.prompt_tokens);
//! # Ok(()) }
//! ```
//!
//! Module map, by job:
//!
//! * [`options`]: the knobs: `--engine` ([`EnginePreference`]), [`Precision`],
//!   [`EngineConfig`], request options.
//! * [`load`]: a model directory to a [`Model`]: [`ModelFamily::inspect`] reads the
//!   snapshot ([`spec`] for encoders), [`Model::load`] dispatches on the family.
//! * [`select`]: which engines this build has (the only reader of the engine cargo
//!   features), starting their runtimes, memory estimate, replica planning and engine
//!   choice per model.
//! * [`run`]: the backend threads that run forward passes from the [`queue`].
//! * [`model`] and [`encoder`]: the loaded-model handle and the encoder family's
//!   inference API (admission, tokenizing, queueing, pooling, scores).
//! * [`backend`]: the trait each engine implements: [`candle`], and the ONNX-graph engines
//!   [`ort`] and [`openvino`] over [`feed`] and [`onnx_export`].
//! * [`error`]: [`InitError`], [`LoadError`], [`RunError`], [`EngineError`].
//!
//! * [`generate`]: the generation family (decoder LLMs): the [`generate::Generator`]
//!   interface each generation engine implements, its request and event types, and
//!   [`generate::DecoderModel`], the handle [`Model::Decoder`] holds.

pub mod backend;
pub mod candle;
pub mod encoder;
pub mod error;
#[cfg(any(feature = "engine-ort", feature = "engine-openvino"))]
pub mod feed;
pub mod generate;
pub mod load;
pub mod model;
pub mod onnx_export;
#[cfg(feature = "engine-openvino")]
pub mod openvino;
pub mod options;
#[cfg(feature = "engine-ort")]
pub mod ort;
pub mod pooling;
pub mod queue;
pub mod run;
pub mod select;
pub mod spec;
pub mod task;
pub mod threads;
pub mod tokenize;

pub use encoder::{
    scores, BatchStats, Classifications, Embeddings, EncoderModel, LabelScore,
    MAX_INPUTS_PER_REQUEST,
};
pub use error::{EngineError, InitError, LoadError, RunError, UnknownEngine};
pub use load::ModelFamily;
pub use model::{Model, ModelInfo, ModelStats};
pub use options::{
    ClassifyOptions, EmbedOptions, EngineConfig, EnginePreference, Precision, DEFAULT_FILL_WAIT_US,
};
pub use pooling::PoolingMode;
pub use select::check_precision;
pub use spec::{ModelSpec, ScoreFn};
pub use task::Task;
pub use tokenize::TextInput;
