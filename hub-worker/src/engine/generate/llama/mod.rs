//! GGUF decoders on llama.cpp (`llama-cpp-2`): [`load`] maps the model, creates one
//! context with a slot (sequence) per concurrent stream, each its own KV stream, and starts
//! the model's scheduler thread ([`scheduler`]); [`LlamaGenerator`] is the
//! [`Generator`] the HTTP routes talk to.
//!
//! Numbers chosen at load: per-slot context = min(`--gen-context`, the training
//! context); the context holds slots × that; a step's batch holds one token per slot plus
//! `--gen-prefill-chunk` prompt tokens; compute threads = the physical cores (or
//! `--gen-threads`); the prompt cache holds up to `--gen-prompt-cache-mib` of saved
//! sequences in host memory.

pub mod host;
mod offthread;
pub mod probe;
mod prompt_cache;
mod sampler;
mod scheduler;

use super::template::repo_templates;
use super::{
    DecoderInfo, DecoderModel, DecoderStats, Finish, FinishReason, GenEvent, GenStream,
    GenerateRequest, Generator, Prompt, Usage,
};
use crate::engine::error::{EngineError, LoadError};
use crate::engine::model::ModelInfo;
use crate::engine::options::EngineConfig;
use crate::engine::spec::ScoreFn;
use crate::engine::task::Task;
use hub_types::memory::{decoder_bytes, kv_cache_bytes, DecoderShape};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::gguf::GgufContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use scheduler::{Limits, Pending, Scheduler, Shared};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// The process's llama.cpp backend (initialised once; llama.cpp's logs go to tracing).
fn backend() -> Result<&'static LlamaBackend, LoadError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LoadError::Decoder(format!("llama.cpp backend: {e}")))
}

/// What the GGUF header says about the model (read before the weights are mapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufMeta {
    pub architecture: String,
    pub shape: DecoderShape,
    /// `<arch>.context_length`: the training context.
    pub context_length: Option<u64>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// GGUF value types llama.cpp can read as an integer here.
const GGUF_TYPE_UINT32: u32 = 4;
const GGUF_TYPE_INT32: u32 = 5;
const GGUF_TYPE_UINT64: u32 = 10;
const GGUF_TYPE_STRING: u32 = 8;

fn gguf_uint(g: &GgufContext, key: &str) -> Option<u64> {
    let at = g.find_key(key);
    if at < 0 {
        return None;
    }
    // Reading a value as the wrong type aborts inside llama.cpp: check the type first.
    match g.kv_type(at) {
        GGUF_TYPE_UINT32 => Some(u64::from(g.val_u32(at))),
        GGUF_TYPE_INT32 => u64::try_from(g.val_i32(at)).ok(),
        GGUF_TYPE_UINT64 => Some(g.val_u64(at)),
        _ => None,
    }
}

fn gguf_str(g: &GgufContext, key: &str) -> Option<String> {
    let at = g.find_key(key);
    if at < 0 || g.kv_type(at) != GGUF_TYPE_STRING {
        return None;
    }
    g.val_str(at).map(str::to_string)
}

/// llama.cpp's `LLAMA_MAX_LAYERS` and `LLAMA_MAX_EXPERTS`.
const MAX_LAYERS: u64 = 512;
const MAX_EXPERTS: u64 = 1024;
const GGUF_TYPE_ARRAY: u32 = 9;

/// Refuses, before llama.cpp sees the file, the header values that llama.cpp's
/// loader checks with `GGML_ASSERT` (`llama_model::load_hparams`): an assert
/// is an `abort()`, not an error, and would take every replica of the shared
/// worker (and a single-node hub running it in process) down with one crafted
/// repo. Also refuses per-layer (array) head counts and lengths, which the
/// memory estimate cannot read: taken as one KV head, an array of 64 made the
/// real KV cache dozens of times what was reserved.
fn check_hparams(g: &GgufContext, arch: &str) -> Result<(), LoadError> {
    let key = |k: &str| format!("{arch}.{k}");
    let bad = |m: String| Err(LoadError::Weights(format!("unsupported GGUF header: {m}")));
    let present = |k: &str| g.find_key(k) >= 0;
    let is_array = |k: &str| {
        let at = g.find_key(k);
        at >= 0 && g.kv_type(at) == GGUF_TYPE_ARRAY
    };
    // A present key of another type than an unsigned integer counts as
    // missing to `gguf_uint`; llama.cpp would refuse it with an error (not an
    // abort), but it is simpler to say so here.
    let scalar = |k: &str| -> Result<Option<u64>, LoadError> {
        match (present(k), gguf_uint(g, k)) {
            (false, _) => Ok(None),
            (true, Some(v)) => Ok(Some(v)),
            (true, None) => Err(LoadError::Weights(format!(
                "unsupported GGUF header: {k} is not an unsigned integer"
            ))),
        }
    };
    for k in [
        "attention.head_count",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
        "expert_used_count",
    ] {
        if is_array(&key(k)) {
            return bad(format!("per-layer values of {} are not supported", key(k)));
        }
    }
    let layers = scalar(&key("block_count"))?.unwrap_or(0);
    if !(1..=MAX_LAYERS).contains(&layers) {
        return bad(format!(
            "{} is {layers}, not 1 to {MAX_LAYERS}",
            key("block_count")
        ));
    }
    if scalar(&key("nextn_predict_layers"))?.unwrap_or(0) > layers {
        return bad(format!(
            "{} exceeds the block count",
            key("nextn_predict_layers")
        ));
    }
    let experts = scalar(&key("expert_count"))?.unwrap_or(0);
    let used = scalar(&key("expert_used_count"))?.unwrap_or(0);
    let groups = scalar(&key("expert_group_count"))?.unwrap_or(0);
    let groups_used = scalar(&key("expert_group_used_count"))?.unwrap_or(0);
    let experts_ok = experts <= MAX_EXPERTS
        && used <= experts
        && if experts > 0 {
            used > 0
                && groups < experts
                && (groups <= 1
                    || (experts % groups == 0 && groups_used > 0 && groups_used < groups))
        } else {
            used == 0 && groups == 0
        };
    if !experts_ok {
        return bad(format!(
            "inconsistent experts: {experts} experts (at most {MAX_EXPERTS}), {used} used, {groups} groups, {groups_used} groups used"
        ));
    }
    let rope = key("rope.scaling.type");
    if present(&rope) {
        match gguf_str(g, &rope).as_deref() {
            Some("none" | "linear" | "yarn" | "longrope") => {}
            other => {
                return bad(format!(
                    "{rope} is {other:?}, not none, linear, yarn or longrope"
                ))
            }
        }
    }
    Ok(())
}

/// Reads the metadata of the GGUF file at `path`, refusing what would make
/// llama.cpp abort ([`check_hparams`]).
pub fn read_meta(path: &Path) -> Result<GgufMeta, LoadError> {
    let g = GgufContext::from_file(path).ok_or_else(|| {
        LoadError::Weights(format!("{} is not a readable GGUF file", path.display()))
    })?;
    let architecture = gguf_str(&g, "general.architecture").ok_or_else(|| {
        LoadError::Weights("the GGUF file has no general.architecture".to_string())
    })?;
    check_hparams(&g, &architecture)?;
    let key = |k: &str| format!("{architecture}.{k}");
    let layers = gguf_uint(&g, &key("block_count")).ok_or_else(|| {
        LoadError::Weights(format!("the GGUF file has no {}", key("block_count")))
    })?;
    let heads = gguf_uint(&g, &key("attention.head_count"));
    let kv_heads = gguf_uint(&g, &key("attention.head_count_kv"))
        .or(heads)
        .unwrap_or(1);
    // K and V may differ in length: the larger bounds the cache.
    let head_dim = gguf_uint(&g, &key("attention.key_length"))
        .or_else(|| {
            let embd = gguf_uint(&g, &key("embedding_length"))?;
            Some(embd / heads.filter(|&h| h > 0)?)
        })
        .unwrap_or(128)
        .max(gguf_uint(&g, &key("attention.value_length")).unwrap_or(0));
    Ok(GgufMeta {
        shape: DecoderShape {
            layers,
            kv_heads,
            head_dim,
        },
        context_length: gguf_uint(&g, &key("context_length")),
        chat_template: gguf_str(&g, "tokenizer.chat_template"),
        architecture,
    })
}

/// The physical cores this process may use (hyper-threads share a core's units; llama.cpp
/// runs fastest with one thread per core).
fn physical_cores() -> usize {
    let logical = crate::host::cores();
    let mut cores = std::collections::HashSet::new();
    let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return logical;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("cpu") || !name[3..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let topo = e.path().join("topology");
        let read = |f: &str| std::fs::read_to_string(topo.join(f)).ok();
        if let (Some(pkg), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((pkg.trim().to_string(), core.trim().to_string()));
        }
    }
    match cores.len() {
        0 => logical,
        n => n.min(logical).max(1),
    }
}

/// A loaded GGUF decoder: the [`Generator`] over its scheduler thread.
pub struct LlamaGenerator {
    info: DecoderInfo,
    model: Arc<LlamaModel>,
    shared: Arc<Shared>,
    queue_limit: usize,
    penalty_last_n: i32,
    /// Where constrained requests' sampling threads send their tokens (the scheduler
    /// holds the receiver; [`offthread`]).
    sampled: std::sync::mpsc::Sender<offthread::Sampled>,
    /// Tickets of constrained requests.
    tickets: std::sync::atomic::AtomicU64,
}

impl Drop for LlamaGenerator {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        let _guard = self.shared.queue.lock();
        self.shared.wake.notify_all();
    }
}

/// Loads the GGUF decoder `file` of the repo `dir` and starts its scheduler: in a decoder
/// host process of its own when a host executable is known ([`host`]), else here.
pub fn load(dir: &Path, file: &Path, cfg: &EngineConfig) -> Result<DecoderModel, LoadError> {
    match host::host_exe() {
        Some(exe) => host::load(&exe, dir, file, cfg),
        None => load_here(dir, file, cfg, true),
    }
}

/// Sizes of a load of a GGUF file with `cfg` ([`memory_needed`]).
struct Need {
    weight_bytes: u64,
    /// Tokens per slot.
    context: usize,
    kv_bytes: u64,
    /// All the memory the load needs.
    bytes: u64,
}

/// Sizes of a load of `file` with `cfg`; [`LoadError::TooBig`] when it needs more memory
/// than is available.
fn memory_needed(file: &Path, meta: &GgufMeta, cfg: &EngineConfig) -> Result<Need, LoadError> {
    let weight_bytes = std::fs::metadata(file)
        .map_err(|source| LoadError::Io {
            path: file.to_path_buf(),
            source,
        })?
        .len();
    let train = meta.context_length.unwrap_or(cfg.gen_context as u64) as usize;
    let context = cfg.gen_context.min(train).max(16);
    let slots = cfg.gen_slots.max(1);
    let kv_bytes = kv_cache_bytes(meta.shape, (slots * context) as u64);
    // The prompt cache fills up to its budget under chat traffic: part of the need, as
    // the hub's placement counts it (`hub_types::decoder::default_gguf_decoder_bytes`).
    let cache_bytes = (cfg.gen_prompt_cache_mib as u64).saturating_mul(1 << 20);
    let needed = decoder_bytes(weight_bytes, kv_bytes).saturating_add(cache_bytes);
    if let Some(available) = cfg
        .memory_available_bytes
        .or_else(crate::host::mem_available_bytes)
    {
        if needed > available {
            return Err(LoadError::TooBig {
                needed_bytes: needed,
                available_bytes: available,
            });
        }
    }
    Ok(Need {
        weight_bytes,
        context,
        kv_bytes,
        bytes: needed,
    })
}

/// Loads the GGUF decoder in this process and starts its scheduler; `probed`: check the
/// file in a probe child first (not in a decoder host, which is the child).
pub(crate) fn load_here(
    dir: &Path,
    file: &Path,
    cfg: &EngineConfig,
    probed: bool,
) -> Result<DecoderModel, LoadError> {
    let meta = read_meta(file)?;
    let Need {
        context,
        kv_bytes,
        bytes: needed,
        ..
    } = memory_needed(file, &meta, cfg)?;
    let train = meta.context_length.unwrap_or(cfg.gen_context as u64) as usize;
    let slots = cfg.gen_slots.max(1);
    let chunk = cfg.gen_prefill_chunk.max(1);
    let threads = match cfg.gen_threads {
        0 => physical_cores(),
        n => n,
    };

    // A file llama.cpp would abort on is found in a child process, not here: the load
    // waits for the child to have loaded the file, the context for its whole verdict.
    let mut probe = if probed {
        probe::start(file, slots)?
    } else {
        None
    };
    if let Some(probe) = probe.as_mut() {
        probe.loaded()?;
    }
    let backend = backend()?;
    let model =
        LlamaModel::load_from_file(backend, file, &LlamaModelParams::default()).map_err(|e| {
            LoadError::Weights(format!("llama.cpp cannot load {}: {e}", file.display()))
        })?;
    if let Some(probe) = probe {
        probe.finish()?;
    }
    let model = Arc::new(model);

    let tokenizer_config = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let templates = repo_templates(dir, &tokenizer_config)?;
    let vocab = model.vocab();
    let piece = |t: LlamaToken| {
        (t.0 >= 0 && t.0 < model.n_vocab())
            .then(|| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned())
            .filter(|s| !s.is_empty())
    };
    let info = DecoderInfo {
        architecture: meta.architecture.clone(),
        engine: "llama.cpp",
        context_length: context,
        train_context_length: train,
        slots,
        vocab_size: model.n_vocab().max(0) as usize,
        chat_template: templates.default.or(meta.chat_template.clone()),
        tool_use_template: templates.tool_use,
        bos_token: templates.bos_token.or_else(|| piece(vocab.bos())),
        eos_token: templates.eos_token.or_else(|| piece(vocab.eos())),
    };

    // One KV stream per slot (not one unified cache): a decode token attends over its own
    // sequence's cells only. A batch may carry every waiting prompt at once (`n_batch`),
    // which llama.cpp runs as ubatches of the prefill chunk.
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new((slots * context) as u32))
        .with_n_batch((chunk * slots + slots) as u32)
        .with_n_ubatch((chunk + slots) as u32)
        .with_n_seq_max(slots as u32)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32)
        .with_kv_unified(false)
        // Sliding-window layers keep every token, so a cached prefix stays reusable.
        .with_swa_full(true);
    let limits = Limits {
        slots,
        context,
        prefill_chunk: chunk,
        mixed_chunk: cfg.gen_mixed_chunk.clamp(1, chunk),
        prompt_cache_bytes: cfg.gen_prompt_cache_mib.saturating_mul(1 << 20),
        sliding_window: model
            .meta_val_str(&format!("{}.attention.sliding_window", meta.architecture))
            .ok()
            .and_then(|w| w.trim().parse().ok())
            .filter(|&w: &usize| w > 0),
        grammar_token_limit: std::time::Duration::from_millis(cfg.gen_grammar_token_ms.max(1)),
        grammar_request_limit: std::time::Duration::from_millis(cfg.gen_grammar_request_ms.max(1)),
    };
    let shared = Arc::new(Shared::default());
    let (sampled, sampled_rx) = std::sync::mpsc::channel();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(8).collect::<String>())
        .unwrap_or_default();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    {
        let model = model.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("gen-{name}"))
            .spawn(move || {
                let ctx = match model.new_context(backend, params) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                Scheduler::new(&model, ctx, limits, shared, sampled_rx).run();
            })
            .map_err(LoadError::Spawn)?;
    }
    ready_rx
        .recv()
        .map_err(|_| LoadError::Decoder("the scheduler thread died at start".to_string()))?
        .map_err(|e| LoadError::Decoder(format!("llama.cpp cannot create a context: {e}")))?;

    tracing::info!(
        model.dir = %dir.display(),
        model.engine = "llama.cpp",
        model.architecture = %meta.architecture,
        gen.slots = slots,
        gen.context = context,
        gen.train_context = train,
        gen.prefill_chunk = chunk,
        gen.mixed_chunk = limits.mixed_chunk,
        gen.prompt_cache_bytes = limits.prompt_cache_bytes,
        gen.sliding_window = limits.sliding_window,
        gen.queue = cfg.gen_queue,
        gen.threads = threads,
        gen.kv_cache_bytes = kv_bytes,
        gen.memory_bytes = needed,
        gen.chat_template = info.chat_template.is_some(),
        "decoder loaded"
    );
    let model_info = ModelInfo {
        task: Task::TextGeneration,
        model_type: meta.architecture.clone(),
        engine: "llama.cpp",
        replicas: 1,
        dim: model.n_embd().max(0) as usize,
        labels: Vec::new(),
        max_input_tokens: context,
        normalize: false,
        pooling: Vec::new(),
        score_fn: ScoreFn::None,
    };
    let generator = LlamaGenerator {
        info,
        model,
        shared,
        queue_limit: cfg.gen_queue.max(1),
        penalty_last_n: context as i32,
        sampled,
        tickets: Default::default(),
    };
    Ok(DecoderModel::new(model_info, Arc::new(generator)))
}

impl LlamaGenerator {
    fn tokens(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>, EngineError> {
        match prompt {
            Prompt::Text { text, add_special } => {
                Ok(self
                    .model
                    .vocab()
                    .tokenize(text.as_bytes(), *add_special, true))
            }
            Prompt::Tokens(ids) => {
                let n = self.info.vocab_size;
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= n) {
                    return Err(EngineError::InvalidParameter {
                        name: "prompt",
                        reason: format!("token id {bad} is outside the vocabulary (0..{n})"),
                    });
                }
                Ok(ids.iter().map(|&id| LlamaToken(id as i32)).collect())
            }
        }
    }
}

impl Generator for LlamaGenerator {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn stats(&self) -> DecoderStats {
        self.shared.stats()
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let vocab = self.model.vocab();
        let n = self.info.vocab_size;
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if id as usize >= n {
                return Err(EngineError::InvalidParameter {
                    name: "ids",
                    reason: format!("token id {id} is outside the vocabulary (0..{n})"),
                });
            }
            vocab.token_to_piece_into(LlamaToken(id as i32), &mut bytes, true, None);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn submit(&self, req: GenerateRequest) -> Result<GenStream, EngineError> {
        let tokens = self.tokens(&req.prompt)?;
        if tokens.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        let context = self.info.context_length;
        if tokens.len() + req.max_tokens.unwrap_or(1) > context {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens: tokens.len(),
                max_tokens: req.max_tokens,
                context,
            });
        }
        if let Some(k) = req.logprobs.filter(|&k| k > 20) {
            return Err(EngineError::InvalidParameter {
                name: "top_logprobs",
                reason: format!("{k} alternatives asked, at most 20"),
            });
        }
        let abandoned = offthread::abandoned();
        if req.constraint != super::Constraint::None && abandoned > offthread::MAX_ABANDONED {
            return Err(EngineError::GrammarBusy { abandoned });
        }
        let mut sampling = sampler::Sampling::build(
            &self.model,
            &req.sampling,
            &req.constraint,
            self.penalty_last_n,
        )?;
        // A grammar samples on a thread of its own (see `offthread`).
        let off = if sampling.is_constrained() {
            let constrained = std::mem::replace(&mut sampling, sampler::Sampling::plain());
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            Some(
                offthread::OffThread::start(
                    constrained,
                    self.model.clone(),
                    ticket,
                    self.sampled.clone(),
                )
                .map_err(|e| {
                    EngineError::Backend(crate::engine::error::RunError::Llama(format!(
                        "cannot start the sampling thread: {e}"
                    )))
                })?,
            )
        } else {
            None
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let prompt_tokens = tokens.len();
        if req.max_tokens == Some(0) {
            let _ = tx.send(GenEvent::Done(Finish {
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens,
                    completion_tokens: 0,
                    cached_tokens: 0,
                },
                stop_string: None,
                tail: String::new(),
            }));
            return Ok(GenStream { prompt_tokens, rx });
        }
        let pending = Pending {
            tokens,
            max_tokens: req.max_tokens,
            stop: req.stop,
            sampling,
            off,
            logprobs: req.logprobs,
            ignore_eos: req.ignore_eos,
            tx,
        };
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.queue_limit {
                let active = self.shared.active.load(Ordering::Relaxed) as usize;
                return Err(EngineError::Overloaded {
                    in_flight: active + q.len(),
                    limit: self.info.slots + self.queue_limit,
                });
            }
            q.push_back(pending);
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
        }
        self.shared.wake.notify_one();
        Ok(GenStream { prompt_tokens, rx })
    }
}

#[cfg(test)]
mod tests {
    use super::read_meta;

    use crate::fixtures::GgufValue as V;

    /// A GGUF v3 file with `general.architecture = llama`, `kv` and no tensors.
    fn gguf(kv: &[(&str, V)]) -> tempfile::NamedTempFile {
        let mut all = vec![("general.architecture", V::Str("llama".into()))];
        all.extend(kv.iter().map(|(k, v)| (*k, v.clone())));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), crate::fixtures::gguf_header(&all)).unwrap();
        f
    }

    fn base(extra: Vec<(&'static str, V)>) -> Vec<(&'static str, V)> {
        let mut kv = vec![
            ("llama.block_count", V::U32(2)),
            ("llama.attention.head_count", V::U32(4)),
            ("llama.attention.head_count_kv", V::U32(2)),
            ("llama.embedding_length", V::U32(64)),
            ("llama.context_length", V::U32(128)),
        ];
        for (k, v) in extra {
            kv.retain(|(have, _)| *have != k);
            kv.push((k, v));
        }
        kv
    }

    #[test]
    fn a_plain_header_is_read() {
        let m = read_meta(gguf(&base(vec![])).path()).unwrap();
        assert_eq!(m.architecture, "llama");
        assert_eq!(
            (m.shape.layers, m.shape.kv_heads, m.shape.head_dim),
            (2, 2, 16)
        );
        // K and V of different lengths: the larger bounds the cache.
        let m = read_meta(
            gguf(&base(vec![
                ("llama.attention.key_length", V::U32(128)),
                ("llama.attention.value_length", V::U32(512)),
            ]))
            .path(),
        )
        .unwrap();
        assert_eq!(m.shape.head_dim, 512);
        // MoE headers that llama.cpp accepts pass.
        read_meta(
            gguf(&base(vec![
                ("llama.expert_count", V::U32(8)),
                ("llama.expert_used_count", V::U32(2)),
                ("llama.rope.scaling.type", V::Str("yarn".into())),
            ]))
            .path(),
        )
        .unwrap();
    }

    /// Each of these made llama.cpp's loader `abort()` the worker process
    /// (a `GGML_ASSERT` in `load_hparams`), or hid the KV cache's size from
    /// the memory estimate; each is now a load error naming what is wrong.
    #[test]
    fn headers_llama_cpp_would_abort_on_are_refused() {
        for (extra, says) in [
            (vec![("llama.block_count", V::U32(0))], "block_count"),
            (vec![("llama.block_count", V::U32(513))], "block_count"),
            (
                vec![("llama.block_count", V::Str("2".into()))],
                "block_count",
            ),
            (
                vec![("llama.rope.scaling.type", V::Str("x".into()))],
                "rope.scaling.type",
            ),
            (
                vec![("llama.rope.scaling.type", V::U32(1))],
                "rope.scaling.type",
            ),
            (
                vec![
                    ("llama.expert_count", V::U32(2000)),
                    ("llama.expert_used_count", V::U32(2)),
                ],
                "experts",
            ),
            (vec![("llama.expert_count", V::U32(8))], "experts"),
            (
                vec![
                    ("llama.expert_count", V::U32(4)),
                    ("llama.expert_used_count", V::U32(5)),
                ],
                "experts",
            ),
            (vec![("llama.expert_used_count", V::U32(1))], "experts"),
            (
                vec![
                    ("llama.expert_count", V::U32(8)),
                    ("llama.expert_used_count", V::U32(2)),
                    ("llama.expert_group_count", V::U32(3)),
                ],
                "experts",
            ),
            (
                vec![("llama.nextn_predict_layers", V::U32(3))],
                "nextn_predict_layers",
            ),
            (
                vec![("llama.attention.head_count_kv", V::U32s(vec![64, 64]))],
                "per-layer",
            ),
            (
                vec![("llama.attention.head_count", V::U32s(vec![4, 4]))],
                "per-layer",
            ),
        ] {
            let f = gguf(&base(extra));
            let err = read_meta(f.path()).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
