//! The loaded-model handle the registry, the control loop and the HTTP routes hold,
//! whatever its family: [`Model`] dispatches each call to the family that serves it, and a
//! family that does not serve a call answers [`EngineError::WrongTask`]. Today there is
//! one family, encoders ([`EncoderModel`]); generation adds a decoder variant here and
//! in [`super::load::ModelFamily`], leaving the encoder path as it is.

use super::encoder::{Classifications, Embeddings, EncoderModel};
use super::error::EngineError;
use super::generate::DecoderModel;
use super::options::{ClassifyOptions, EmbedOptions};
use super::pooling::PoolingMode;
use super::spec::ScoreFn;
use super::task::Task;
use super::tokenize::TextInput;

/// What a loaded model serves.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub task: Task,
    pub model_type: String,
    /// `candle`, `ort` or `openvino`.
    pub engine: &'static str,
    /// Engine instances serving it (each with its own backend thread).
    pub replicas: usize,
    /// Length of an embedding (hidden size × pooling modes); hidden size for classifiers.
    pub dim: usize,
    pub labels: Vec<String>,
    pub max_input_tokens: usize,
    pub normalize: bool,
    pub pooling: Vec<PoolingMode>,
    pub score_fn: ScoreFn,
}

/// Point-in-time load of a model, for heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelStats {
    /// Inputs admitted and not yet answered.
    pub in_flight: u32,
    /// Inputs waiting in the batching queue.
    pub queue_depth: u32,
}

/// A loaded model, by family. Cheap to clone; its threads stop when the last clone is
/// dropped. Load one with [`Model::load`](super::load).
#[derive(Clone)]
pub enum Model {
    /// An encoder: embeddings, similarity, classification.
    Encoder(EncoderModel),
    /// A decoder LLM: text generation ([`super::generate`]).
    Decoder(DecoderModel),
}

impl Model {
    /// What this model serves.
    pub fn info(&self) -> ModelInfo {
        match self {
            Model::Encoder(m) => m.info(),
            Model::Decoder(m) => m.info().clone(),
        }
    }

    /// Keeps `item` for as long as the model lives (until its last clone is dropped,
    /// requests in flight included): the worker gives it the cache pin that keeps the
    /// model's files from eviction (`pull::cache::CachePin`).
    pub fn keep_alive(&self, item: Box<dyn Send + Sync>) {
        match self {
            Model::Encoder(m) => m.keep_alive(item),
            Model::Decoder(m) => m.keep_alive(item),
        }
    }

    /// The decoder, when this model generates text.
    pub fn decoder(&self) -> Option<&DecoderModel> {
        match self {
            Model::Decoder(m) => Some(m),
            Model::Encoder(_) => None,
        }
    }

    /// The encoder, or [`EngineError::WrongTask`] naming what this model serves.
    fn encoder(&self, requested: &'static str) -> Result<&EncoderModel, EngineError> {
        match self {
            Model::Encoder(m) => Ok(m),
            Model::Decoder(m) => Err(EngineError::WrongTask {
                served: m.info().task.as_str(),
                requested,
            }),
        }
    }

    /// Current load.
    pub fn stats(&self) -> ModelStats {
        match self {
            Model::Encoder(m) => m.stats(),
            Model::Decoder(m) => {
                let s = m.stats();
                ModelStats {
                    in_flight: s.active_slots + s.queued,
                    queue_depth: s.queued,
                }
            }
        }
    }

    /// Why the model can no longer serve, once it cannot (a decoder whose process could
    /// not be started again); `None` while it serves.
    pub fn failure(&self) -> Option<String> {
        match self {
            Model::Encoder(_) => None,
            Model::Decoder(m) => m.failure(),
        }
    }

    /// Batching counters, when this model is an encoder.
    pub fn batch_stats(&self) -> Option<super::BatchStats> {
        match self {
            Model::Encoder(m) => Some(m.batch_stats()),
            Model::Decoder(_) => None,
        }
    }

    /// Most inputs one request may carry on this model.
    pub fn max_inputs(&self) -> usize {
        match self {
            Model::Encoder(m) => m.max_inputs(),
            Model::Decoder(_) => 1,
        }
    }

    /// Embeds `inputs` (one vector each, input order).
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        opts: EmbedOptions,
    ) -> Result<Embeddings, EngineError> {
        self.encoder("feature-extraction")?
            .embed(inputs, opts)
            .await
    }

    /// Cosine similarity of `source` to each of `sentences`, and the tokens it cost.
    pub async fn similarity(
        &self,
        source: String,
        sentences: Vec<String>,
    ) -> Result<(Vec<f32>, usize), EngineError> {
        self.encoder("sentence-similarity")?
            .similarity(source, sentences)
            .await
    }

    /// Raw classification logits, one row per input, and the tokens they cost.
    pub async fn logits(
        &self,
        inputs: Vec<TextInput>,
        truncate: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), EngineError> {
        self.encoder("text-classification")?
            .logits(inputs, truncate)
            .await
    }

    /// Classifies `inputs`: per input, labels with scores, best first.
    pub async fn classify(
        &self,
        inputs: Vec<TextInput>,
        opts: ClassifyOptions,
    ) -> Result<Classifications, EngineError> {
        self.encoder("text-classification")?
            .classify(inputs, opts)
            .await
    }
}
