//! The inference engine, usable without the control plane: load a model directory, then
//! embed, compare or classify. Per loaded model: tokenizer threads, a batching queue
//! thread and one backend thread (TEI's shape), behind a semaphore that refuses work
//! with `EngineError::Overloaded` instead of queueing without bound.
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

pub mod backend;
pub mod candle;
pub mod error;
#[cfg(any(feature = "engine-ort", feature = "engine-openvino"))]
pub mod feed;
pub mod onnx_export;
#[cfg(feature = "engine-openvino")]
pub mod openvino;
#[cfg(feature = "engine-ort")]
pub mod ort;
pub mod pooling;
pub mod queue;
pub mod spec;
pub mod task;
pub mod threads;
pub mod tokenize;

pub use error::{EngineError, LoadError};
pub use pooling::PoolingMode;
pub use spec::{ModelSpec, ScoreFn};
pub use task::Task;
pub use tokenize::TextInput;

use backend::{Backend, Batch};
use queue::{BatchLimits, Entry, EntryResult, Queue};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use tokenize::{Encoded, TokenizerPool};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Most inputs one request may carry.
pub const MAX_INPUTS_PER_REQUEST: usize = 256;

/// Which engine to use when several could serve a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnginePreference {
    /// The fastest engine this worker has: OpenVINO (`engine-openvino`, initialised), then
    /// ONNX Runtime (`engine-ort`, initialised), on the repo's `model.onnx` or a graph
    /// derived from its safetensors; candle when neither is there or both fail.
    #[default]
    Auto,
    Candle,
    Ort,
    OpenVino,
}

/// Arithmetic an engine may use for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Full fp32 (every engine; results as PyTorch's fp32 to ~1e-6).
    #[default]
    F32,
    /// bfloat16 with fp32 accumulation where the CPU has it (AMX / AVX512-BF16; fp32
    /// elsewhere). OpenVINO only; the other engines refuse it.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Knobs of one loaded model.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Token budget per forward pass (padding counted on CPU).
    pub max_batch_tokens: usize,
    /// Inputs taken from the queue at once; they are sorted by length and run in
    /// forward passes of at most `forward_batch_size`, spread over the replicas.
    pub max_batch_size: usize,
    /// Inputs per forward pass; 0 takes the engine's preference.
    pub forward_batch_size: usize,
    /// Engine instances of the model, each with its own backend thread taking passes from
    /// the model's queue; the compute threads are divided among them. 0: automatic (ONNX
    /// Runtime: one single-threaded replica per compute thread while the weights are small
    /// enough to hold that many copies; candle: 1).
    pub replicas: usize,
    /// Inputs admitted at once (queued or running); more is answered `Overloaded`.
    pub max_concurrent: usize,
    /// Tokenizer threads for this model.
    pub tokenizer_threads: usize,
    pub engine: EnginePreference,
    /// Arithmetic (`Bf16` needs the OpenVINO engine).
    pub precision: Precision,
    /// Memory the model may use; `None` reads `MemAvailable` from the host.
    pub memory_available_bytes: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch_tokens: 16384,
            max_batch_size: 32,
            forward_batch_size: 0,
            replicas: 0,
            max_concurrent: 512,
            tokenizer_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            engine: EnginePreference::Auto,
            precision: Precision::F32,
            memory_available_bytes: None,
        }
    }
}

/// What a loaded model serves.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub task: Task,
    pub model_type: String,
    /// `candle` or `ort`.
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

/// Options of an embedding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// L2-normalise; `None` follows the model (sentence-transformers `Normalize`).
    pub normalize: Option<bool>,
    /// Cut inputs over the model's limit (default) instead of failing.
    pub truncate: bool,
    /// Keep only the first N dimensions (Matryoshka), re-normalised when normalising.
    pub dimensions: Option<usize>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            normalize: None,
            truncate: true,
            dimensions: None,
        }
    }
}

/// Embeddings of a request, in input order, with the tokens they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// One label and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// Options of a classification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// `softmax`, `sigmoid` or `none`; `None` follows the config's `problem_type`.
    pub score_fn: Option<ScoreFn>,
    /// Keep the best N labels; `None` keeps all.
    pub top_k: Option<usize>,
    pub truncate: bool,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            score_fn: None,
            top_k: None,
            truncate: true,
        }
    }
}

/// Classification results: per input, labels sorted by descending score.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifications {
    pub labels: Vec<Vec<LabelScore>>,
    pub prompt_tokens: usize,
}

/// Point-in-time load of a model, for heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelStats {
    /// Inputs admitted and not yet answered.
    pub in_flight: u32,
    /// Inputs waiting in the batching queue.
    pub queue_depth: u32,
}

/// A loaded model. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

struct Inner {
    info: ModelInfo,
    tokenizers: TokenizerPool,
    queue: Queue,
    admission: Arc<Semaphore>,
    max_concurrent: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.shutdown();
    }
}

/// What the backend thread does with each batch.
#[derive(Clone)]
enum Mode {
    Embed { pooling: Vec<PoolingMode> },
    Predict,
}

impl Model {
    /// Loads `dir` for `task` (default: inferred from the repo files). Blocking: reads and
    /// maps weights and runs a warm-up forward pass; call it from `spawn_blocking`.
    pub fn load(dir: &Path, task: Option<Task>, cfg: &EngineConfig) -> Result<Model, LoadError> {
        let spec = spec::inspect(dir)?;
        let task = task.unwrap_or(spec.default_task);
        let available = cfg
            .memory_available_bytes
            .or_else(crate::host::mem_available_bytes);
        let needed = estimate_memory(&spec);
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
        let replicas = plan_replicas(cfg, &spec, needed, available);
        let mut backends = load_backends(&spec, task, cfg, replicas)?;
        let mode = if task.is_embedding() {
            Mode::Embed {
                pooling: spec.pooling(),
            }
        } else {
            Mode::Predict
        };
        // Warm-up: one tiny forward pass so the first request does not pay for it and a
        // broken model fails here, at load time.
        let warm = Batch::pad(&[(&[1, 2], &[0, 0])], spec.encoder.pad_token_id);
        for backend in &mut backends {
            // Every session of the replica: its own, and the all-threads one if it has it.
            for wide in [false, true] {
                if wide && !backend.can_run_wide() {
                    continue;
                }
                backend.set_wide(wide);
                let warm_result = threads::compute_pool().install(|| match &mode {
                    Mode::Embed { .. } => backend.embed(&warm).map(|_| ()),
                    Mode::Predict => backend.predict(&warm).map(|_| ()),
                });
                warm_result.map_err(LoadError::Weights)?;
            }
            backend.set_wide(false);
        }

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
        let pad_id = spec.encoder.pad_token_id;
        let dim = match &mode {
            Mode::Embed { pooling } => spec.encoder.hidden_size * pooling.len(),
            Mode::Predict => spec.encoder.hidden_size,
        };
        let replicas = backends.len();
        for (i, backend) in backends.into_iter().enumerate() {
            let thread_mode = mode.clone();
            let backend_queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("backend-{name}-{i}"))
                .spawn(move || backend_thread(backend, i, &backend_queue, &thread_mode, pad_id))
                .map_err(LoadError::Spawn)?;
        }
        let max_concurrent = cfg.max_concurrent.max(1);
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
        Ok(Model {
            inner: Arc::new(Inner {
                info,
                tokenizers,
                queue,
                admission: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
            }),
        })
    }

    /// What this model serves.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Current load.
    pub fn stats(&self) -> ModelStats {
        let available = self.inner.admission.available_permits();
        ModelStats {
            in_flight: self.inner.max_concurrent.saturating_sub(available) as u32,
            queue_depth: self
                .inner
                .queue
                .stats()
                .depth
                .load(std::sync::atomic::Ordering::Relaxed) as u32,
        }
    }

    /// Most inputs one request may carry on this model.
    pub fn max_inputs(&self) -> usize {
        MAX_INPUTS_PER_REQUEST.min(self.inner.max_concurrent)
    }

    fn admit(&self, count: usize) -> Result<OwnedSemaphorePermit, EngineError> {
        if count == 0 {
            return Err(EngineError::EmptyInput);
        }
        if count > self.max_inputs() {
            return Err(EngineError::TooManyInputs {
                count,
                max: self.max_inputs(),
            });
        }
        self.inner
            .admission
            .clone()
            .try_acquire_many_owned(count as u32)
            .map_err(|_| EngineError::Overloaded {
                in_flight: self.stats().in_flight as usize,
                limit: self.inner.max_concurrent,
            })
    }

    fn require_embedding(&self, requested: &'static str) -> Result<(), EngineError> {
        if self.inner.info.task.is_embedding() {
            Ok(())
        } else {
            Err(EngineError::WrongTask {
                served: self.inner.info.task.as_str(),
                requested,
            })
        }
    }

    /// Tokenizes, queues and waits for the backend. Inputs are queued shortest first so a
    /// large request batches like sentence-transformers' length-sorted `encode`.
    async fn run(&self, encoded: Vec<Encoded>) -> Result<Vec<Vec<f32>>, EngineError> {
        let n = encoded.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        let mut slots: Vec<Option<Encoded>> = encoded.into_iter().map(Some).collect();
        let mut receivers: Vec<Option<oneshot::Receiver<EntryResult>>> =
            (0..n).map(|_| None).collect();
        let mut entries = Vec::with_capacity(n);
        for i in order {
            let enc = slots[i].take().expect("each index once");
            let (reply, rx) = oneshot::channel();
            receivers[i] = Some(rx);
            entries.push(Entry {
                ids: enc.ids,
                type_ids: enc.type_ids,
                reply,
            });
        }
        self.inner.queue.append(entries)?;
        let mut out = Vec::with_capacity(n);
        for rx in receivers.into_iter().flatten() {
            out.push(rx.await.map_err(|_| EngineError::Unavailable)??);
        }
        Ok(out)
    }

    /// Embeds `inputs` (one vector each, input order).
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        opts: EmbedOptions,
    ) -> Result<Embeddings, EngineError> {
        self.require_embedding("feature-extraction")?;
        let _permit = self.admit(inputs.len())?;
        let dim = self.inner.info.dim;
        if let Some(d) = opts.dimensions {
            if d == 0 || d > dim {
                return Err(EngineError::InvalidParameter {
                    name: "dimensions",
                    reason: format!("must be between 1 and {dim}"),
                });
            }
        }
        let encoded = self
            .inner
            .tokenizers
            .encode(
                inputs.into_iter().map(TextInput::Single).collect(),
                opts.truncate,
            )
            .await?;
        let prompt_tokens = encoded.iter().map(|e| e.ids.len()).sum();
        let mut vectors = self.run(encoded).await?;
        let normalize = opts.normalize.unwrap_or(self.inner.info.normalize);
        for v in &mut vectors {
            if let Some(d) = opts.dimensions {
                v.truncate(d);
            }
            if normalize {
                pooling::l2_normalize(v);
            }
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    /// Cosine similarity of `source` to each of `sentences`, and the tokens it cost.
    pub async fn similarity(
        &self,
        source: String,
        sentences: Vec<String>,
    ) -> Result<(Vec<f32>, usize), EngineError> {
        self.require_embedding("sentence-similarity")?;
        if sentences.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        // The source sentence takes a permit too.
        let max = self
            .max_inputs()
            .min(self.inner.max_concurrent.saturating_sub(1))
            .max(1);
        if sentences.len() > max {
            return Err(EngineError::TooManyInputs {
                count: sentences.len(),
                max,
            });
        }
        let mut all = Vec::with_capacity(sentences.len() + 1);
        all.push(source);
        all.extend(sentences);
        let _permit = self
            .inner
            .admission
            .clone()
            .try_acquire_many_owned(all.len() as u32)
            .map_err(|_| EngineError::Overloaded {
                in_flight: self.stats().in_flight as usize,
                limit: self.inner.max_concurrent,
            })?;
        let encoded = self
            .inner
            .tokenizers
            .encode(all.into_iter().map(TextInput::Single).collect(), true)
            .await?;
        let tokens = encoded.iter().map(|e| e.ids.len()).sum();
        let vectors = self.run(encoded).await?;
        let scores = vectors[1..]
            .iter()
            .map(|v| pooling::cosine(&vectors[0], v))
            .collect();
        Ok((scores, tokens))
    }

    /// Raw classification logits, one row per input, and the tokens they cost.
    pub async fn logits(
        &self,
        inputs: Vec<TextInput>,
        truncate: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), EngineError> {
        if self.inner.info.task != Task::TextClassification {
            return Err(EngineError::WrongTask {
                served: self.inner.info.task.as_str(),
                requested: "text-classification",
            });
        }
        let _permit = self.admit(inputs.len())?;
        let encoded = self.inner.tokenizers.encode(inputs, truncate).await?;
        let tokens = encoded.iter().map(|e| e.ids.len()).sum();
        Ok((self.run(encoded).await?, tokens))
    }

    /// Classifies `inputs`: per input, labels with scores, best first.
    pub async fn classify(
        &self,
        inputs: Vec<TextInput>,
        opts: ClassifyOptions,
    ) -> Result<Classifications, EngineError> {
        let (logits, prompt_tokens) = self.logits(inputs, opts.truncate).await?;
        let score_fn = opts.score_fn.unwrap_or(self.inner.info.score_fn);
        let labels = logits
            .iter()
            .map(|row| {
                let mut scored: Vec<LabelScore> = scores(row, score_fn)
                    .into_iter()
                    .enumerate()
                    .map(|(i, score)| LabelScore {
                        label: self
                            .inner
                            .info
                            .labels
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("LABEL_{i}")),
                        score,
                    })
                    .collect();
                scored.sort_by(|a, b| b.score.total_cmp(&a.score));
                if let Some(k) = opts.top_k {
                    scored.truncate(k);
                }
                scored
            })
            .collect();
        Ok(Classifications {
            labels,
            prompt_tokens,
        })
    }
}

/// Applies the score function to one row of logits.
pub fn scores(logits: &[f32], f: ScoreFn) -> Vec<f32> {
    match f {
        ScoreFn::None => logits.to_vec(),
        ScoreFn::Sigmoid => logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
        ScoreFn::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        }
    }
}

/// Rough resident size of a loaded model: the estimate the hub's scheduler places by.
fn estimate_memory(spec: &ModelSpec) -> u64 {
    hub_types::memory::model_bytes(spec.weight_bytes)
}

/// How many engine instances to load: `cfg.replicas`, or automatically one per compute
/// thread for ONNX Runtime (measured: two single-threaded sessions on two cores run
/// 1.1-1.2x the sentences per second of one two-threaded session, see
/// `docs/BENCHMARKS.md`), as long as the weights are under 512 MiB and the copies (one per
/// replica, plus replica 0's session on every thread; each session holds about 1.1x the
/// weights) fit in half the available memory. candle always gets one ([`load_backends`]).
fn plan_replicas(
    cfg: &EngineConfig,
    spec: &ModelSpec,
    needed: u64,
    available: Option<u64>,
) -> usize {
    if cfg.replicas > 0 {
        return cfg.replicas;
    }
    let threads = graph_engine_threads();
    if spec.weight_bytes > 512 << 20 {
        return 1;
    }
    let mut replicas = threads.max(1);
    if let Some(available) = available {
        while replicas > 1 && needed.saturating_mul(replicas as u64 + 1) > available / 2 {
            replicas -= 1;
        }
    }
    replicas
}

/// Compute threads of the ONNX-graph engines (the most any initialised one was given; 1
/// without them).
fn graph_engine_threads() -> usize {
    #[allow(unused_mut)]
    let mut threads = 1;
    #[cfg(feature = "engine-ort")]
    if ort::is_available() {
        threads = threads.max(ort::threads());
    }
    #[cfg(feature = "engine-openvino")]
    if openvino::is_available() {
        threads = threads.max(openvino::threads());
    }
    threads
}

/// Whether this worker can serve `cfg.precision` with `cfg.engine` (checked before any
/// weights are pulled): bf16 needs OpenVINO, built in and loaded.
pub fn check_precision(cfg: &EngineConfig) -> Result<(), LoadError> {
    if cfg.precision == Precision::F32 {
        return Ok(());
    }
    let why = match cfg.engine {
        EnginePreference::Candle | EnginePreference::Ort => {
            "this worker's engine setting (--engine) excludes"
        }
        _ if !cfg!(feature = "engine-openvino") => "this worker was built without",
        #[cfg(feature = "engine-openvino")]
        _ if openvino::is_available() => return Ok(()),
        _ => {
            "this worker has not loaded (its libopenvino_c.so: --openvino-lib or \
             PADDOCK_OPENVINO_LIB, scripts/worker/fetch-openvino.sh)"
        }
    };
    Err(LoadError::Precision(format!(
        "precision {} needs the OpenVINO engine, which {why}",
        cfg.precision
    )))
}

#[allow(dead_code)]
fn boxed<B: Backend + 'static>(v: Vec<B>) -> Vec<Box<dyn Backend>> {
    v.into_iter()
        .map(|b| Box::new(b) as Box<dyn Backend>)
        .collect()
}

/// Loads the engine instances of a model: `replicas` OpenVINO or ONNX Runtime backends of
/// one graph, or one candle backend, whose kernels already use every compute thread.
/// `Auto` tries the engines fastest first (see [`EnginePreference::Auto`]); a graph engine
/// that cannot serve a model with safetensors (an op it lacks, say) falls through to the
/// next, with a warning.
fn load_backends(
    spec: &ModelSpec,
    task: Task,
    cfg: &EngineConfig,
    replicas: usize,
) -> Result<Vec<Box<dyn Backend>>, LoadError> {
    let (pref, precision) = (cfg.engine, cfg.precision);
    let _ = replicas;
    let fall_through = |engine: &str, e: LoadError| -> Result<(), LoadError> {
        match spec.safetensors.is_empty() {
            false => {
                tracing::warn!(error = %e, "{engine} cannot serve this model; trying the next engine");
                Ok(())
            }
            true => Err(e),
        }
    };
    let missing = |feature: &str| {
        LoadError::Onnx(format!(
            "this worker was built without the {feature} feature"
        ))
    };
    match pref {
        #[cfg(feature = "engine-openvino")]
        EnginePreference::OpenVino => {
            return Ok(boxed(openvino::OvBackend::load(
                spec, task, replicas, precision,
            )?))
        }
        #[cfg(not(feature = "engine-openvino"))]
        EnginePreference::OpenVino => return Err(missing("engine-openvino")),
        #[cfg(feature = "engine-ort")]
        EnginePreference::Ort if precision == Precision::F32 => {
            return Ok(boxed(ort::OrtBackend::load(spec, task, replicas)?))
        }
        #[cfg(not(feature = "engine-ort"))]
        EnginePreference::Ort if precision == Precision::F32 => return Err(missing("engine-ort")),
        EnginePreference::Ort => {}
        EnginePreference::Candle => {}
        EnginePreference::Auto => {
            #[cfg(feature = "engine-openvino")]
            if openvino::is_available() {
                match openvino::OvBackend::load(spec, task, replicas, precision) {
                    Ok(b) => return Ok(boxed(b)),
                    // Only OpenVINO computes in bf16: its reason is the endpoint's.
                    Err(e) if precision != Precision::F32 => return Err(e),
                    Err(e) => fall_through("OpenVINO", e)?,
                }
            }
            #[cfg(feature = "engine-ort")]
            if ort::is_available() && precision == Precision::F32 {
                match ort::OrtBackend::load(spec, task, replicas) {
                    Ok(b) => return Ok(boxed(b)),
                    Err(e) => fall_through("ONNX Runtime", e)?,
                }
            }
        }
    }
    let _ = (&fall_through, &missing);
    check_precision(cfg)?;
    if spec.safetensors.is_empty() {
        return Err(LoadError::NoWeights {
            onnx_hint: " (this repo has only ONNX weights and no ONNX engine is available)",
        });
    }
    Ok(vec![Box::new(candle::CandleBackend::load(spec, task)?)])
}

fn backend_thread(
    mut backend: Box<dyn Backend>,
    replica: usize,
    queue: &Queue,
    mode: &Mode,
    pad_id: u32,
) {
    while let Some(pass) = queue.next_batch(replica) {
        backend.set_wide(pass.wide);
        run_pass(backend.as_mut(), pass.entries, mode, pad_id);
    }
}

fn run_pass(backend: &mut dyn Backend, entries: Vec<Entry>, mode: &Mode, pad_id: u32) {
    let rows: Vec<(&[u32], &[u32])> = entries
        .iter()
        .map(|e| (e.ids.as_slice(), e.type_ids.as_slice()))
        .collect();
    let batch = Batch::pad(&rows, pad_id);
    let pool = threads::compute_pool();
    let result = catch_unwind(AssertUnwindSafe(|| {
        pool.install(|| match mode {
            Mode::Embed { pooling } => backend.embed(&batch).map(|hidden| {
                (0..batch.size())
                    .map(|i| {
                        pooling::pool(
                            hidden.row(i, batch.max_len),
                            batch.lengths[i],
                            hidden.dim,
                            pooling,
                        )
                    })
                    .collect::<Vec<_>>()
            }),
            Mode::Predict => backend.predict(&batch),
        })
    }))
    .unwrap_or_else(|_| Err("the engine panicked on this batch".to_string()));
    match result {
        Ok(outputs) if outputs.len() == entries.len() => {
            for (e, out) in entries.into_iter().zip(outputs) {
                let _ = e.reply.send(Ok(out));
            }
        }
        Ok(outputs) => {
            let msg = format!(
                "engine returned {} rows for {} inputs",
                outputs.len(),
                entries.len()
            );
            for e in entries {
                let _ = e.reply.send(Err(EngineError::Backend(msg.clone())));
            }
        }
        Err(msg) => {
            tracing::error!(error = %msg, "forward pass failed");
            for e in entries {
                let _ = e.reply.send(Err(EngineError::Backend(msg.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_functions() {
        let s = scores(&[1.0, 1.0], ScoreFn::Softmax);
        assert_eq!(s, vec![0.5, 0.5]);
        let s = scores(&[0.0], ScoreFn::Sigmoid);
        assert_eq!(s, vec![0.5]);
        assert_eq!(scores(&[2.0, -1.0], ScoreFn::None), vec![2.0, -1.0]);
    }
}
