//! Loading a model snapshot: read the directory into its family's spec
//! ([`ModelFamily::inspect`]), then load that family ([`Model::load`]). For encoders:
//! check the memory, pick and load the engine instances ([`super::select`]), warm them up
//! and start the tokenizer, queue and backend threads ([`super::run`]).
//!
//! Generation (decoder LLMs on llama.cpp or candle) plugs in here: a `Decoder(..)` variant
//! of [`ModelFamily`] recognised by `inspect` (a GGUF file, or a `config.json` whose
//! architecture is a causal LM) and a match arm in [`Model::load`] that builds a
//! `Model::Decoder`; the encoder path below stays untouched.

use super::backend::Backend;
use super::encoder::{EncoderModel, WeakEncoder};
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
use std::time::Instant;

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

/// Whether a file of a model directory, by its name, is a decoder's GGUF weights (not a
/// multimodal projector).
fn is_decoder_gguf(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with(".gguf") && !name.starts_with("mmproj")
}

/// Starts what the load of a model would begin with on one of its files, as soon as the
/// pull has downloaded it and before its digest is checked (`pull::PullRequest::on_download`):
/// for the single GGUF file of a decoder, the probe child
/// ([`probe::start_early`](super::generate::llama::probe::start_early)), which the load
/// takes over. `file` holds the downloaded bytes now, `blob` will once they are verified;
/// `files` are the repo paths the model directory will hold. Dropping what this returns
/// stops the work. `None` when there is nothing to start.
pub fn on_download(
    repo_path: &str,
    files: &[String],
    file: &Path,
    blob: &Path,
    cfg: &EngineConfig,
) -> Option<impl std::any::Any + Send + Sync> {
    let top_level_gguf = |p: &str| !p.contains('/') && is_decoder_gguf(p);
    if !top_level_gguf(repo_path) || files.iter().filter(|p| top_level_gguf(p)).count() != 1 {
        return None;
    }
    #[cfg(feature = "engine-llama")]
    {
        use super::generate::llama::probe;
        match probe::start_early(file, blob, cfg.gen_slots.max(1)) {
            Ok(early) => early,
            Err(e) => {
                // The load probes the file itself, and reports what fails.
                tracing::debug!(file = %repo_path, error = %e, "no early GGUF probe");
                None
            }
        }
    }
    #[cfg(not(feature = "engine-llama"))]
    {
        let _ = (file, blob, cfg);
        None::<()>
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
        if is_decoder_gguf(&entry.file_name().to_string_lossy()) && entry.path().is_file() {
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
/// and backend threads. The tokenizer loads on its own thread while the engine loads.
/// With a fast start ([`select::starts_fast`]) the model serves on candle at once and a
/// background thread moves it to the graph engine once that has compiled
/// ([`spawn_switch`]). Each phase's duration is logged (`model loaded`).
fn load_encoder(
    dir: &Path,
    spec: ModelSpec,
    task: Option<Task>,
    cfg: &EngineConfig,
) -> Result<EncoderModel, LoadError> {
    let started = Instant::now();
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
    let tokenizer_file = spec.tokenizer.clone();
    let tokenizer_load = std::thread::Builder::new()
        .name("tokenizer-load".into())
        .spawn(move || {
            let t = Instant::now();
            let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_file)
                .map_err(|e| LoadError::BadTokenizer(e.to_string()))
                .and_then(|t| {
                    super::tokenize::check_tokenizer(&t).map_err(LoadError::BadTokenizer)?;
                    Ok(t)
                });
            (tokenizer, t.elapsed())
        })
        .map_err(LoadError::Spawn)?;
    let replicas = select::plan_replicas(cfg, &spec, needed, available);
    let fast = select::starts_fast(&spec, cfg);
    let t = Instant::now();
    let loaded = if fast {
        select::load_candle(&spec, task, cfg)
    } else {
        select::load_backends(&spec, task, cfg, replicas)
    };
    let engine_time = t.elapsed();
    let (tokenizer, tokenizer_time) = tokenizer_load
        .join()
        .map_err(|_| LoadError::BadTokenizer("the tokenizer loader panicked".into()))?;
    let mut backends = loaded?;
    let tokenizer = tokenizer?;
    let mode = if task.is_embedding() {
        Mode::Embed {
            pooling: spec.pooling(),
        }
    } else {
        Mode::Predict
    };
    let pad_id = spec.encoder.pad_token_id;
    let t = Instant::now();
    run::warm_up(&mut backends, &mode, pad_id).map_err(LoadError::WarmUp)?;
    let warm_up_time = t.elapsed();

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
    let limits = batch_limits(&backends, cfg, &spec, task);
    let queue = Queue::start(limits, &name).map_err(LoadError::Spawn)?;
    let engine = backends[0].name();
    let from_cache = backends[0].compiled_from_cache();
    let dim = match &mode {
        Mode::Embed { pooling } => spec.encoder.hidden_size * pooling.len(),
        Mode::Predict => spec.encoder.hidden_size,
    };
    let n_backends = backends.len();
    run::spawn_backend_threads(backends, &queue, &mode, pad_id, &name).map_err(LoadError::Spawn)?;
    let info = ModelInfo {
        task,
        model_type: spec.model_type.clone(),
        engine,
        replicas: n_backends,
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
        model.replicas = n_backends,
        model.forward_batch = limits.max_pass,
        cache.hit = ?from_cache,
        tokenizer_ms = tokenizer_time.as_millis() as u64,
        engine_ms = engine_time.as_millis() as u64,
        warm_up_ms = warm_up_time.as_millis() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let model = EncoderModel::new(info, tokenizers, queue, cfg.max_concurrent);
    if fast {
        spawn_switch(
            model.downgrade(),
            Switch {
                spec,
                task,
                cfg: cfg.clone(),
                replicas,
                mode,
                pad_id,
                name,
            },
        );
    }
    Ok(model)
}

/// The queue's limits for `backends` (the first one speaks for all).
fn batch_limits(
    backends: &[Box<dyn Backend>],
    cfg: &EngineConfig,
    spec: &ModelSpec,
    task: Task,
) -> BatchLimits {
    BatchLimits {
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
        fill_wait: std::time::Duration::from_micros(cfg.fill_wait_us),
    }
}

/// What a fast-started model needs to move to its graph engine.
struct Switch {
    spec: ModelSpec,
    task: Task,
    cfg: EngineConfig,
    replicas: usize,
    mode: Mode,
    pad_id: u32,
    name: String,
}

/// Loads and warms the graph engine on a thread of its own (`switch-<name>`), then moves
/// the model to it ([`EncoderModel::switch`]): new requests go to the new engine's queue,
/// the ones queued on candle's are still answered there. A model unloaded meanwhile is
/// left alone; an engine that fails leaves the model on candle, with a warning.
fn spawn_switch(model: WeakEncoder, sw: Switch) {
    let name = format!("switch-{}", sw.name);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let started = Instant::now();
        let mut backends =
            match select::load_graph_backends(&sw.spec, sw.task, &sw.cfg, sw.replicas) {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "no graph engine for this model; it stays on candle");
                    return;
                }
            };
        let compile_time = started.elapsed();
        if model.upgrade().is_none() {
            return;
        }
        let t = Instant::now();
        if let Err(e) = run::warm_up(&mut backends, &sw.mode, sw.pad_id) {
            tracing::warn!(error = %e, "graph engine failed its warm-up; the model stays on candle");
            return;
        }
        let warm_up_time = t.elapsed();
        let limits = batch_limits(&backends, &sw.cfg, &sw.spec, sw.task);
        let engine = backends[0].name();
        let from_cache = backends[0].compiled_from_cache();
        let n = backends.len();
        let queue = match Queue::start(limits, &sw.name) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the graph engine's queue");
                return;
            }
        };
        if let Err(e) = run::spawn_backend_threads(backends, &queue, &sw.mode, sw.pad_id, &sw.name)
        {
            tracing::warn!(error = %e, "cannot start the graph engine's threads");
            queue.shutdown();
            return;
        }
        match model.upgrade() {
            Some(m) => m.switch(queue, engine, n),
            None => return queue.shutdown(),
        }
        tracing::info!(
            model.engine = engine,
            model.replicas = n,
            cache.hit = ?from_cache,
            compile_ms = compile_time.as_millis() as u64,
            warm_up_ms = warm_up_time.as_millis() as u64,
            duration_ms = started.elapsed().as_millis() as u64,
            "switched from candle"
        );
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the engine switch; the model stays on candle");
    }
}
