//! Loading a model snapshot: read the directory into its family's spec
//! ([`ModelFamily::inspect`]), then load that family ([`Model::load`]). For encoders:
//! check the memory, pick and load the engine instances ([`super::select`]), warm them up
//! and start the tokenizer, queue and backend threads ([`super::run`]).
//!
//! Generation (decoder LLMs on llama.cpp or candle) plugs in here: a `Decoder(..)` variant
//! of [`ModelFamily`] recognised by `inspect` (a GGUF file, or a `config.json` whose
//! architecture is a causal LM) and a match arm in [`Model::load`] that builds a
//! `Model::Decoder`; the encoder path below stays untouched.

use super::encoder::EncoderModel;
use super::error::LoadError;
use super::generate::DecoderModel;
use super::model::{Model, ModelInfo};
use super::options::EngineConfig;
use super::queue::{BatchLimits, Queue};
use super::run::{self, Mode};
use super::select;
use super::spec::{self, ModelSpec};
use super::task::Task;
use super::tokenize::TokenizerPool;
use std::path::{Path, PathBuf};

/// What a model snapshot holds, by family: what [`Model::load`] dispatches on.
#[derive(Debug, Clone)]
// Built once per model load and matched at once: boxing the spec would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ModelFamily {
    /// A BERT-style encoder: embeddings, similarity, classification.
    Encoder(ModelSpec),
    /// A decoder LLM: text generation.
    Decoder(DecoderSpec),
}

/// The weights of a decoder, by format: which generation engine loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderSpec {
    /// One GGUF file (llama.cpp).
    Gguf { file: PathBuf },
    /// A transformers causal LM (`config.json` + safetensors; candle).
    Safetensors {
        /// `config.json` `model_type`.
        model_type: String,
    },
}

/// `config.json` `model_type`s of the causal LMs the generation engines serve, for
/// configs whose `architectures` do not say `...ForCausalLM`.
const CAUSAL_LM_TYPES: [&str; 6] = [
    "llama",
    "qwen2",
    "qwen3",
    "gemma3",
    "gemma3_text",
    "mistral",
];

impl ModelFamily {
    /// Reads `dir` (config, weights, tokenizer) into its family's spec, or says why no
    /// family here can serve it. A GGUF file makes a decoder (whatever else is there);
    /// so does a `config.json` naming a causal LM; anything else is read as an encoder.
    pub fn inspect(dir: &Path) -> Result<ModelFamily, LoadError> {
        if let Some(spec) = inspect_decoder(dir)? {
            return Ok(ModelFamily::Decoder(spec));
        }
        spec::inspect(dir).map(ModelFamily::Encoder)
    }
}

/// The decoder in `dir`, if it holds one: the single `*.gguf` file (multimodal
/// projectors, `mmproj*.gguf`, do not count), or a `config.json` whose `architectures`
/// end in `ForCausalLM` (or whose `model_type` is a known causal LM).
fn inspect_decoder(dir: &Path) -> Result<Option<DecoderSpec>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut ggufs: Vec<PathBuf> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.to_ascii_lowercase().ends_with(".gguf")
            && !name.to_ascii_lowercase().starts_with("mmproj")
            && entry.path().is_file()
        {
            ggufs.push(entry.path());
        }
    }
    ggufs.sort();
    match ggufs.len() {
        0 => {}
        1 => {
            return Ok(Some(DecoderSpec::Gguf {
                file: ggufs.remove(0),
            }))
        }
        _ => {
            return Err(LoadError::SeveralGguf {
                files: ggufs
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect(),
            })
        }
    }
    let config = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&config) else {
        return Ok(None);
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        // The encoder path reports a broken config.json.
        return Ok(None);
    };
    let causal_arch = value
        .get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .any(|s| s.ends_with("ForCausalLM"))
        });
    let model_type = value
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if causal_arch || CAUSAL_LM_TYPES.contains(&model_type.as_str()) {
        return Ok(Some(DecoderSpec::Safetensors { model_type }));
    }
    Ok(None)
}

impl Model {
    /// Loads `dir` for `task` (default: inferred from the repo files). Blocking: reads and
    /// maps weights and runs a warm-up forward pass; call it from `spawn_blocking`.
    pub fn load(dir: &Path, task: Option<Task>, cfg: &EngineConfig) -> Result<Model, LoadError> {
        match ModelFamily::inspect(dir)? {
            ModelFamily::Encoder(spec) => load_encoder(dir, spec, task, cfg).map(Model::Encoder),
            ModelFamily::Decoder(spec) => {
                if let Some(task) = task.filter(|t| !t.is_generation()) {
                    return Err(LoadError::UnsupportedTask {
                        task: task.to_string(),
                        reason: "this repo holds a decoder LLM, which serves text-generation"
                            .to_string(),
                    });
                }
                load_decoder(dir, spec, cfg).map(Model::Decoder)
            }
        }
    }
}

/// Loads a decoder on the generation engine its format needs.
fn load_decoder(
    dir: &Path,
    spec: DecoderSpec,
    cfg: &EngineConfig,
) -> Result<DecoderModel, LoadError> {
    match spec {
        #[cfg(feature = "engine-llama")]
        DecoderSpec::Gguf { file } => super::generate::llama::load(dir, &file, cfg),
        #[cfg(not(feature = "engine-llama"))]
        DecoderSpec::Gguf { .. } => Err(LoadError::Decoder(
            "GGUF models need the llama.cpp engine: this worker was built without the \
             engine-llama feature"
                .to_string(),
        )),
        DecoderSpec::Safetensors { .. } => super::generate::candle::load(dir, cfg),
    }
}

/// Loads an encoder: its engine instances (warmed up), tokenizer threads, batching queue
/// and backend threads.
fn load_encoder(
    dir: &Path,
    spec: ModelSpec,
    task: Option<Task>,
    cfg: &EngineConfig,
) -> Result<EncoderModel, LoadError> {
    let task = task.unwrap_or(spec.default_task);
    let available = cfg
        .memory_available_bytes
        .or_else(crate::host::mem_available_bytes);
    let needed = select::estimate_memory(&spec);
    if let Some(available) = available {
        if needed > available {
            return Err(LoadError::TooBig {
                needed_bytes: needed,
                available_bytes: available,
            });
        }
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&spec.tokenizer)
        .map_err(|e| LoadError::BadTokenizer(e.to_string()))?;
    let replicas = select::plan_replicas(cfg, &spec, needed, available);
    let mut backends = select::load_backends(&spec, task, cfg, replicas)?;
    let mode = if task.is_embedding() {
        Mode::Embed {
            pooling: spec.pooling(),
        }
    } else {
        Mode::Predict
    };
    let pad_id = spec.encoder.pad_token_id;
    run::warm_up(&mut backends, &mode, pad_id).map_err(LoadError::WarmUp)?;

    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(8).collect::<String>())
        .unwrap_or_default();
    let tokenizers = TokenizerPool::start(
        tokenizer,
        cfg.tokenizer_threads,
        spec.max_input_tokens,
        &name,
    )
    .map_err(LoadError::Spawn)?;
    let limits = BatchLimits {
        max_batch_tokens: cfg.max_batch_tokens.max(spec.max_input_tokens),
        max_batch_size: cfg.max_batch_size.max(1),
        padded: backends[0].is_padded(),
        max_pass: match cfg.forward_batch_size {
            0 => backends[0].preferred_forward_batch().max(1),
            n => n,
        },
        replicas: backends.len(),
        wide: backends[0].can_run_wide(),
        wide_window: backends[0].wide_window().max(1),
        packs: backends[0].packs() && task.is_embedding(),
    };
    let queue = Queue::start(limits, &name).map_err(LoadError::Spawn)?;
    let engine = backends[0].name();
    let dim = match &mode {
        Mode::Embed { pooling } => spec.encoder.hidden_size * pooling.len(),
        Mode::Predict => spec.encoder.hidden_size,
    };
    let replicas = backends.len();
    run::spawn_backend_threads(backends, &queue, &mode, pad_id, &name).map_err(LoadError::Spawn)?;
    let info = ModelInfo {
        task,
        model_type: spec.model_type.clone(),
        engine,
        replicas,
        dim,
        labels: spec.labels.clone(),
        max_input_tokens: spec.max_input_tokens,
        normalize: spec.normalize,
        pooling: spec.pooling(),
        score_fn: spec.score_fn,
    };
    tracing::info!(
        model.dir = %dir.display(),
        model.task = %task,
        model.engine = engine,
        model.type = %info.model_type,
        model.replicas = replicas,
        model.forward_batch = limits.max_pass,
        "model loaded"
    );
    Ok(EncoderModel::new(
        info,
        tokenizers,
        queue,
        cfg.max_concurrent,
    ))
}
