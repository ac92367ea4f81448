//! Safetensors decoders on candle: the pure-Rust generation engine every build has.
//!
//! [`load`] reads a transformers model directory (`config.json`, `model*.safetensors`,
//! `tokenizer.json`, optional `generation_config.json`, `tokenizer_config.json`,
//! `chat_template.jinja`) into a [`DecoderModel`] served by candle-transformers' model of
//! its family: `llama` (also `mistral` with tied embeddings), `mistral`, `qwen2`,
//! `qwen3`, `gemma3`/`gemma3_text` (gemma3 on our own model, [`gemma3`], for its sliding
//! window; mistral and qwen2 windows shorter than the context are refused). Weights are
//! memory-mapped and converted to f32 (the fastest arithmetic of candle's CPU kernels);
//! pickle-only repos are refused, repo code never runs.
//!
//! candle's models keep their KV cache inside the model and run one sequence, so the
//! engine has one slot: a scheduler thread takes requests from a queue in order and
//! runs each to its end (prefill of the whole prompt, then one forward pass per token).
//! Admission is bounded by [`EngineConfig::max_concurrent`] (queued + running; more is
//! [`EngineError::Overloaded`]). Constraints (JSON mode, schemas, grammars) are enforced
//! only on GGUF models by llama.cpp; here they are refused at submit.

use super::stop::{Scan, StopScan};
use super::template::{repo_templates, special_token};
use super::{
    Constraint, DecoderInfo, DecoderModel, DecoderStats, Finish, FinishReason, GenEvent, GenStream,
    GenToken, GenerateRequest, Generator, Prompt, SamplingParams, TokenLogprob, Usage,
};
use crate::engine::error::{EngineError, LoadError, RunError};
use crate::engine::model::ModelInfo;
use crate::engine::options::EngineConfig;
use crate::engine::pooling::PoolingMode;
use crate::engine::spec::ScoreFn;
use crate::engine::task::Task;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{llama, mistral, qwen2, qwen3};
use hub_types::memory::{self, DecoderShape};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::mpsc::UnboundedSender;

mod gemma3;

/// The `model_type`s this engine serves.
const FAMILIES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3",
    "gemma3_text",
];

/// Most alternatives `logprobs` may ask for (OpenAI's `top_logprobs` limit).
const MAX_TOP_LOGPROBS: usize = 20;

/// Whether a config.json describes a decoder this engine serves (llama, mistral, qwen2,
/// qwen3, gemma3/gemma3_text) as a causal LM (not a classification head on one).
pub fn is_causal_lm(config: &Value) -> bool {
    let Some(model_type) = config.get("model_type").and_then(Value::as_str) else {
        return false;
    };
    if !FAMILIES.contains(&model_type) {
        return false;
    }
    match config.get("architectures").and_then(Value::as_array) {
        None => true,
        Some(archs) => archs
            .iter()
            .filter_map(Value::as_str)
            .any(|a| a.ends_with("ForCausalLM") || a.ends_with("ForConditionalGeneration")),
    }
}

/// Loads a safetensors decoder directory (config.json, model*.safetensors (+ index),
/// tokenizer.json, generation_config.json optional, tokenizer_config.json optional) into
/// a [`DecoderModel`]. Blocking: maps and converts the weights and runs a warm-up pass.
pub fn load(dir: &Path, cfg: &EngineConfig) -> Result<DecoderModel, LoadError> {
    let config = read_json(&dir.join("config.json"))?.ok_or(LoadError::MissingConfig)?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !is_causal_lm(&config) {
        return Err(LoadError::UnsupportedTask {
            task: Task::TextGeneration.to_string(),
            reason: format!(
                "model_type {model_type:?} is not a causal LM the candle engine serves \
                 (supported: llama, mistral, qwen2, qwen3, gemma3)"
            ),
        });
    }
    let files = weight_files(dir)?;
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(LoadError::MissingTokenizer);
    }
    let tokenizer_json = read_json(&tokenizer_path)?.ok_or(LoadError::MissingTokenizer)?;
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| LoadError::BadTokenizer(e.to_string()))?;
    crate::engine::tokenize::check_tokenizer(&tokenizer).map_err(LoadError::BadTokenizer)?;
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(json!({}));
    let generation_config = read_json(&dir.join("generation_config.json"))?;

    // gemma3 multimodal checkpoints nest the text model's config.
    let text_config = match config.get("text_config") {
        Some(t) if model_type == "gemma3" => t.clone(),
        _ => config.clone(),
    };
    let shape = Shape::of(&text_config)?;
    let train_context = shape.max_position_embeddings;
    let context = train_context.min(memory::DEFAULT_GEN_CONTEXT as usize);

    // Memory: the f32 copy of the weights (the mapped file is page cache), an f32 KV
    // cache of one slot at the full context, and the fixed overhead.
    // From the files' own headers, not config.json's `torch_dtype`, which the
    // tenant writes: an f8 checkpoint labelled float32 grows fourfold as f32.
    let mapped = map_weights(&files)?;
    let weight_bytes = f32_weight_bytes(&mapped);
    let kv = memory::kv_cache_bytes(
        DecoderShape {
            layers: shape.layers as u64,
            kv_heads: shape.kv_heads as u64,
            head_dim: shape.head_dim as u64,
        },
        context as u64,
    )
    .saturating_mul(2);
    let needed = memory::decoder_bytes(weight_bytes, kv);
    let available = cfg
        .memory_available_bytes
        .or_else(crate::host::mem_available_bytes);
    if let Some(available) = available {
        if needed > available {
            return Err(LoadError::TooBig {
                needed_bytes: needed,
                available_bytes: available,
            });
        }
    }

    let device = Device::Cpu;
    let vb = VarBuilder::from_backend(Box::new(mapped), DType::F32, device.clone());
    // candle sizes its RoPE tables (per layer, for some families) and preallocated KV
    // caches by max_position_embeddings: the served context is all a sequence can reach.
    let mut candle_config = text_config.clone();
    if let Some(obj) = candle_config.as_object_mut() {
        obj.insert("max_position_embeddings".into(), json!(context));
    }
    let mut net = Net::load(&model_type, &candle_config, vb, &device)?;

    let vocab = shape.vocab_size;
    let token_bytes = token_bytes_table(&tokenizer, &tokenizer_json, vocab);
    let eos_ids = eos_ids(
        &config,
        generation_config.as_ref(),
        &tokenizer_config,
        &tokenizer,
    );
    let templates = repo_templates(dir, &tokenizer_config)?;
    let (bos_token, eos_token) = (templates.bos_token, templates.eos_token);

    // Warm-up: one pass over one token finds broken weights at load, not per request.
    let probe = bos_token
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
        .unwrap_or(0);
    net.forward(&[probe], 0)
        .map_err(|e| LoadError::WarmUp(RunError::Candle(e.to_string())))?;
    net.reset();

    let info = DecoderInfo {
        architecture: model_type.clone(),
        engine: "candle",
        context_length: context,
        train_context_length: train_context,
        slots: 1,
        vocab_size: vocab,
        chat_template: templates.default,
        tool_use_template: templates.tool_use,
        bos_token,
        eos_token,
    };
    let model_info = ModelInfo {
        task: Task::TextGeneration,
        model_type: model_type.clone(),
        engine: "candle",
        replicas: 1,
        dim: shape.hidden_size,
        labels: Vec::new(),
        max_input_tokens: context,
        normalize: false,
        pooling: Vec::<PoolingMode>::new(),
        score_fn: ScoreFn::None,
    };
    let tokenizer = Arc::new(tokenizer);
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel::<Job>();
    let worker = Worker {
        net,
        token_bytes,
        eos_ids,
        shared: shared.clone(),
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(8).collect::<String>())
        .unwrap_or_default();
    std::thread::Builder::new()
        .name(format!("gen-{name}"))
        .spawn(move || worker.run(rx))
        .map_err(LoadError::Spawn)?;
    tracing::info!(
        model.dir = %dir.display(),
        model.type = %model_type,
        model.engine = "candle",
        model.context = context,
        "decoder loaded"
    );
    let engine = CandleGenerator {
        info,
        tokenizer,
        jobs: tx,
        shared,
        limit: cfg.max_concurrent.max(1),
    };
    Ok(DecoderModel::new(model_info, Arc::new(engine)))
}

/// Maps the weight files. The files are blobs of the worker's content-addressed cache:
/// written once, verified, renamed into place read-only and never modified afterwards,
/// which is the condition `from_mmaped_safetensors` needs.
#[allow(unsafe_code)]
fn map_weights(files: &[PathBuf]) -> Result<MmapedSafetensors, LoadError> {
    // SAFETY: see above; the mapping is read-only and the files are immutable.
    unsafe { MmapedSafetensors::multi(files) }.map_err(|e| LoadError::Weights(e.to_string()))
}

/// A JSON file, `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, LoadError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            if path.ends_with("config.json") {
                LoadError::BadConfig(e.to_string())
            } else {
                LoadError::BadConfig(format!("{}: {e}", path.display()))
            }
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The safetensors files of the model: those the index names, else `model*.safetensors`.
/// A repo with only pickle weights is refused (never unpickled), and so is an index
/// that names a file outside the model's folder (`../`, an absolute path): a repo
/// must not make the worker map another model's files.
/// Bytes of the f32 copy candle makes of the mapped tensors: every element
/// as 4 bytes, whatever its dtype on disk (the headers were validated by the
/// mapping: offsets, sizes and shapes agree).
pub(crate) fn f32_weight_bytes(mapped: &MmapedSafetensors) -> u64 {
    mapped
        .tensors()
        .iter()
        .map(|(_, t)| {
            t.shape()
                .iter()
                .fold(4u64, |acc, &d| acc.saturating_mul(d as u64))
        })
        .fold(0, u64::saturating_add)
}

pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if let Some(index) = read_json(&dir.join("model.safetensors.index.json"))? {
        let mut files: Vec<String> = index
            .get("weight_map")
            .and_then(Value::as_object)
            .map(|m| {
                m.values()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        if let Some(f) = files
            .iter()
            .find(|f| f.contains('/') || f.contains('\\') || f.starts_with('.'))
        {
            return Err(LoadError::Weights(format!(
                "model.safetensors.index.json names {f:?}, outside the model's folder"
            )));
        }
        if !files.is_empty() {
            return Ok(files.into_iter().map(|f| dir.join(f)).collect());
        }
    }
    let list = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut safetensors = Vec::new();
    let mut pickle = None;
    for entry in list.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            safetensors.push(entry.path());
        } else if [".bin", ".pt", ".pth", ".ckpt"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            pickle.get_or_insert(name);
        }
    }
    safetensors.sort();
    match (safetensors.is_empty(), pickle) {
        (false, _) => Ok(safetensors),
        (true, Some(file)) => Err(LoadError::PickleOnly { file }),
        (true, None) => Err(LoadError::NoWeights { onnx_hint: "" }),
    }
}

/// The dimensions of a decoder config the engine needs before loading it.
struct Shape {
    hidden_size: usize,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
}

impl Shape {
    fn of(c: &Value) -> Result<Shape, LoadError> {
        let get = |k: &str| {
            c.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| LoadError::BadConfig(format!("{k} is missing or not a number")))
        };
        let hidden_size = get("hidden_size")?;
        let heads = get("num_attention_heads")?;
        if heads == 0 {
            return Err(LoadError::BadConfig("num_attention_heads is 0".into()));
        }
        Ok(Shape {
            hidden_size,
            layers: get("num_hidden_layers")?,
            kv_heads: get("num_key_value_heads").unwrap_or(heads),
            head_dim: get("head_dim").unwrap_or(hidden_size / heads),
            vocab_size: get("vocab_size")?,
            max_position_embeddings: get("max_position_embeddings")?,
        })
    }
}

/// `config` with `defaults` filled in where a key is missing or null (transformers
/// leaves out what equals its class default; candle's config structs require them).
fn with_defaults(config: &Value, defaults: &[(&str, Value)]) -> Value {
    let mut c = config.clone();
    if let Some(obj) = c.as_object_mut() {
        for (k, v) in defaults {
            if obj.get(*k).is_none_or(Value::is_null) {
                obj.insert((*k).to_string(), v.clone());
            }
        }
    }
    c
}

/// The RoPE settings of `config` as candle's config structs read them (`rope_theta`,
/// llama's `rope_scaling`, gemma3's `rope_local_base_freq`), from either spelling:
/// transformers 5's `rope_parameters` or the older `rope_theta` + `rope_scaling`. A
/// scaling candle's model of this family would ignore is refused, not run wrong.
fn normalize_rope(config: &Value, family: &str) -> Result<Value, LoadError> {
    fn kind(p: &Value) -> &str {
        p.get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default")
    }
    let refuse = |kind: &str| {
        LoadError::BadConfig(format!(
            "RoPE scaling {kind:?} is not supported for {family} by the candle engine; \
             serve a GGUF of this model (llama.cpp) instead"
        ))
    };
    let allowed = |kind: &str| kind == "default" || (family == "llama" && kind == "llama3");
    let mut c = config.clone();
    let Some(obj) = c.as_object_mut() else {
        return Err(LoadError::BadConfig("config.json is not an object".into()));
    };
    let mut scaling = obj.remove("rope_scaling").filter(|v| !v.is_null());
    if let Some(params) = obj.remove("rope_parameters").filter(|v| !v.is_null()) {
        let full = params.get("full_attention").cloned();
        let sliding = params.get("sliding_attention").cloned();
        let main = full.clone().unwrap_or_else(|| params.clone());
        for p in [Some(&main), sliding.as_ref()].into_iter().flatten() {
            if !allowed(kind(p)) {
                return Err(refuse(kind(p)));
            }
        }
        if let Some(theta) = main.get("rope_theta") {
            obj.insert("rope_theta".into(), theta.clone());
        }
        if let Some(theta) = sliding.as_ref().and_then(|s| s.get("rope_theta")) {
            obj.insert("rope_local_base_freq".into(), theta.clone());
        }
        if kind(&main) == "llama3" {
            scaling = Some(main);
        }
    }
    if let Some(s) = &scaling {
        if !allowed(kind(s)) {
            return Err(refuse(kind(s)));
        }
        if kind(s) == "llama3" {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.insert("rope_type".into(), json!("llama3"));
            }
            obj.insert("rope_scaling".into(), s);
        }
    }
    Ok(c)
}

fn parse<T: serde::de::DeserializeOwned>(config: Value, family: &str) -> Result<T, LoadError> {
    serde_json::from_value(config)
        .map_err(|e| LoadError::BadConfig(format!("{family} config: {e}")))
}

/// A loaded candle model of one family, with its KV cache.
enum Net {
    /// candle's llama keeps its cache outside the model; `fresh` is an empty one.
    Llama(Box<(llama::Llama, llama::Cache, llama::Cache)>),
    Mistral(mistral::Model),
    Qwen2(qwen2::ModelForCausalLM),
    Qwen3(qwen3::ModelForCausalLM),
    /// Our own model (see `gemma3`): candle's keeps one position too many in the window.
    Gemma3(Box<gemma3::Model>),
}

impl Net {
    fn load(
        model_type: &str,
        config: &Value,
        vb: VarBuilder,
        device: &Device,
    ) -> Result<Net, LoadError> {
        let weights = |e: candle_core::Error| LoadError::Weights(e.to_string());
        let config = &match model_type {
            "mistral" | "qwen2" => without_window(model_type, config)?,
            _ => config.clone(),
        };
        let tied = config
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match model_type {
            // candle's mistral model has no tied head; a tied mistral is a llama.
            "llama" | "mistral" if model_type == "llama" || tied => {
                let c = normalize_rope(config, "llama")?;
                let c = with_defaults(&c, &[("rms_norm_eps", json!(1e-6))]);
                let lc: llama::LlamaConfig = parse(c.clone(), model_type)?;
                let heads = lc.num_attention_heads;
                if let Some(hd) = c.get("head_dim").and_then(Value::as_u64) {
                    if hd as usize * heads != lc.hidden_size {
                        return Err(LoadError::BadConfig(format!(
                            "head_dim {hd} × {heads} heads differs from hidden_size {}: \
                             not supported by candle's llama model",
                            lc.hidden_size
                        )));
                    }
                }
                let cfg = lc.into_config(false);
                let cfg = llama::Config {
                    tie_word_embeddings: tied,
                    ..cfg
                };
                let model = llama::Llama::load(vb, &cfg).map_err(weights)?;
                let fresh = llama::Cache::new(true, DType::F32, &cfg, device).map_err(weights)?;
                Ok(Net::Llama(Box::new((model, fresh.clone(), fresh))))
            }
            "mistral" => {
                let c = normalize_rope(config, model_type)?;
                let c = with_defaults(&c, &[("rope_theta", json!(10000.0))]);
                let mc: mistral::Config = parse(c, model_type)?;
                Ok(Net::Mistral(mistral::Model::new(&mc, vb).map_err(weights)?))
            }
            "qwen2" => {
                let c = normalize_rope(config, model_type)?;
                let c = with_defaults(
                    &c,
                    &[
                        ("sliding_window", json!(4096)),
                        ("max_window_layers", json!(28)),
                        ("use_sliding_window", json!(false)),
                        ("tie_word_embeddings", json!(false)),
                        ("rope_theta", json!(10000.0)),
                        ("hidden_act", json!("silu")),
                    ],
                );
                let qc: qwen2::Config = parse(c, model_type)?;
                Ok(Net::Qwen2(
                    qwen2::ModelForCausalLM::new(&qc, vb).map_err(weights)?,
                ))
            }
            "qwen3" => {
                let config = &normalize_rope(config, model_type)?;
                let heads = config
                    .get("num_attention_heads")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                let hidden = config
                    .get("hidden_size")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let c = with_defaults(
                    config,
                    &[
                        ("head_dim", json!(hidden / heads.max(1))),
                        ("attention_bias", json!(false)),
                        ("max_window_layers", json!(28)),
                        ("use_sliding_window", json!(false)),
                        ("tie_word_embeddings", json!(false)),
                        ("rope_theta", json!(10000.0)),
                        ("hidden_act", json!("silu")),
                    ],
                );
                let qc: qwen3::Config = parse(c, model_type)?;
                Ok(Net::Qwen3(
                    qwen3::ModelForCausalLM::new(&qc, vb).map_err(weights)?,
                ))
            }
            "gemma3" | "gemma3_text" => {
                let c = gemma3_config(&normalize_rope(config, "gemma3")?)?;
                let gc: candle_transformers::models::gemma3::Config = parse(c, "gemma3")?;
                // Multimodal checkpoints keep the text model under a prefix.
                let vb = if vb.contains_tensor("model.embed_tokens.weight") {
                    vb
                } else if vb.contains_tensor("language_model.model.embed_tokens.weight") {
                    vb.pp("language_model")
                } else if vb.contains_tensor("model.language_model.embed_tokens.weight") {
                    vb.rename_f(|name| match name.strip_prefix("model.") {
                        Some(rest) => format!("model.language_model.{rest}"),
                        None => name.to_string(),
                    })
                } else {
                    return Err(LoadError::Weights(
                        "no model.embed_tokens.weight in the gemma3 safetensors".into(),
                    ));
                };
                Ok(Net::Gemma3(Box::new(
                    gemma3::Model::new(&gc, vb).map_err(weights)?,
                )))
            }
            other => Err(LoadError::UnknownArchitecture {
                model_type: other.to_string(),
            }),
        }
    }

    /// Logits of the last position of `ids`, placed at `offset` in the sequence.
    fn forward(&mut self, ids: &[u32], offset: usize) -> candle_core::Result<Vec<f32>> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = match self {
            Net::Llama(l) => {
                let (model, cache, _) = &mut **l;
                model.forward(&input, offset, cache)?
            }
            Net::Mistral(m) => m.forward(&input, offset)?,
            Net::Qwen2(m) => m.forward(&input, offset)?,
            Net::Qwen3(m) => m.forward(&input, offset)?,
            Net::Gemma3(m) => m.forward(&input, offset)?,
        };
        logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
    }

    /// Empties the KV cache for the next sequence.
    fn reset(&mut self) {
        match self {
            Net::Llama(l) => l.1 = l.2.clone(),
            Net::Mistral(m) => m.clear_kv_cache(),
            Net::Qwen2(m) => m.clear_kv_cache(),
            Net::Qwen3(m) => m.clear_kv_cache(),
            Net::Gemma3(m) => m.clear_kv_cache(),
        }
    }
}

/// `config` (its `max_position_embeddings` already the served context) with the sliding
/// window taken out, or a refusal when the window is shorter than the context. candle's
/// mistral and qwen2 keep one position too many in the prefill's window (`i - j <= W`,
/// transformers `i - j < W`) and do not window the decode steps at all, and qwen2 windows
/// every layer even when `use_sliding_window` is false. A window at least as long as the
/// context never hides a position, so the model is then run with none. The window is the
/// one transformers applies: mistral's `sliding_window` (4096 when absent, none when null);
/// qwen2's only with `use_sliding_window` and on the layers `layer_types` (else
/// `max_window_layers`) marks sliding.
fn without_window(family: &str, config: &Value) -> Result<Value, LoadError> {
    let num = |k: &str| config.get(k).and_then(Value::as_u64);
    let context = num("max_position_embeddings").unwrap_or(0);
    let window = match config.get("sliding_window") {
        None => Some(4096),
        Some(w) => w.as_u64(),
    };
    let window = if family == "qwen2" {
        let enabled = config
            .get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let layers = num("num_hidden_layers").unwrap_or(0);
        let any_sliding = match config.get("layer_types").and_then(Value::as_array) {
            Some(types) => types
                .iter()
                .any(|t| t.as_str() == Some("sliding_attention")),
            None => layers > num("max_window_layers").unwrap_or(28),
        };
        window.filter(|_| enabled && any_sliding)
    } else {
        window
    };
    if let Some(w) = window.filter(|&w| w < context) {
        return Err(LoadError::BadConfig(format!(
            "{family} with a sliding window of {w} tokens, shorter than the served context \
             of {context}: candle's {family} model does not apply that window as \
             transformers does; serve a GGUF of this model (llama.cpp) instead"
        )));
    }
    let mut c = config.clone();
    if let Some(obj) = c.as_object_mut() {
        if family == "qwen2" {
            // candle's qwen2 always windows, by this many positions: the whole context.
            obj.insert("sliding_window".into(), json!(context));
            obj.insert("use_sliding_window".into(), json!(false));
        } else {
            obj.insert("sliding_window".into(), Value::Null);
        }
    }
    Ok(c)
}

/// A gemma3 text config as candle reads it: the layer pattern from `layer_types`
/// (newer transformers) when `sliding_window_pattern` is absent, HF's defaults filled.
fn gemma3_config(config: &Value) -> Result<Value, LoadError> {
    let mut c = with_defaults(
        config,
        &[
            ("attention_bias", json!(false)),
            ("head_dim", json!(256)),
            ("hidden_activation", json!("gelu_pytorch_tanh")),
            ("rope_theta", json!(1_000_000.0)),
            ("rope_local_base_freq", json!(10_000.0)),
            ("query_pre_attn_scalar", json!(256)),
            ("sliding_window", json!(4096)),
            ("rms_norm_eps", json!(1e-6)),
        ],
    );
    let layers = c
        .get("num_hidden_layers")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let types: Option<Vec<bool>> = c.get("layer_types").and_then(Value::as_array).map(|a| {
        a.iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect()
    });
    let pattern = match (
        c.get("sliding_window_pattern").and_then(Value::as_u64),
        &types,
    ) {
        (Some(p), _) => p as usize,
        (None, Some(types)) => types.iter().position(|s| !s).map_or(layers + 1, |i| i + 1),
        (None, None) => 6,
    };
    if pattern == 0 {
        return Err(LoadError::BadConfig("sliding_window_pattern is 0".into()));
    }
    if let Some(types) = &types {
        let regular = types.len() == layers
            && types
                .iter()
                .enumerate()
                .all(|(i, &sliding)| sliding == ((i + 1) % pattern > 0));
        if !regular {
            return Err(LoadError::BadConfig(
                "gemma3 layer_types is not a regular sliding/full pattern: not supported by \
                 the candle engine"
                    .into(),
            ));
        }
    }
    if let Some(obj) = c.as_object_mut() {
        obj.insert("sliding_window_pattern".into(), json!(pattern));
    }
    Ok(c)
}

/// The bytes each token id releases, for [`StopScan`]: byte-level BPE tokens mapped
/// back through GPT-2's byte alphabet, SentencePiece pieces with `▁` as a space and
/// `<0xNN>` byte-fallback tokens as their byte; added (special) tokens as their text.
fn token_bytes_table(tok: &tokenizers::Tokenizer, json: &Value, vocab: usize) -> Vec<Vec<u8>> {
    let decoder = json.get("decoder").cloned().unwrap_or(Value::Null);
    let kinds: Vec<String> = match decoder.get("type").and_then(Value::as_str) {
        Some("Sequence") => decoder
            .get("decoders")
            .and_then(Value::as_array)
            .map(|ds| {
                ds.iter()
                    .filter_map(|d| d.get("type").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        Some(t) => vec![t.to_string()],
        None => Vec::new(),
    };
    let has = |k: &str| kinds.iter().any(|x| x == k);
    let byte_level = has("ByteLevel");
    let metaspace = has("Metaspace") || has("Replace");
    let byte_fallback = has("ByteFallback");
    let unbyte: HashMap<char, u8> = gpt2_byte_alphabet()
        .into_iter()
        .map(|(b, c)| (c, b))
        .collect();
    let added = tok.get_added_tokens_decoder();
    let size = vocab.max(tok.get_vocab_size(true));
    (0..size as u32)
        .map(|id| {
            if let Some(t) = added.get(&id) {
                return t.content.as_bytes().to_vec();
            }
            let Some(piece) = tok.id_to_token(id) else {
                return Vec::new();
            };
            if byte_level {
                let bytes: Option<Vec<u8>> =
                    piece.chars().map(|c| unbyte.get(&c).copied()).collect();
                return bytes.unwrap_or_else(|| piece.into_bytes());
            }
            if byte_fallback {
                if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        return vec![b];
                    }
                }
            }
            if metaspace {
                return piece.replace('\u{2581}', " ").into_bytes();
            }
            tok.decode(&[id], false)
                .map(String::into_bytes)
                .unwrap_or_else(|_| piece.into_bytes())
        })
        .collect()
}

/// GPT-2's byte → printable-char map of byte-level BPE.
fn gpt2_byte_alphabet() -> Vec<(u8, char)> {
    let mut out = Vec::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        if printable {
            out.push((b, char::from(b)));
        } else {
            out.push((b, char::from_u32(256 + n).expect("valid char")));
            n += 1;
        }
    }
    out
}

/// Token ids of a config value that holds one id or a list of them.
pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// End-of-generation ids: generation_config.json's `eos_token_id` (else config.json's),
/// plus the tokenizer's `eos_token`.
pub(crate) fn eos_ids(
    config: &Value,
    generation_config: Option<&Value>,
    tokenizer_config: &Value,
    tok: &tokenizers::Tokenizer,
) -> Vec<u32> {
    let ids = token_ids;
    let mut out = ids(generation_config.and_then(|g| g.get("eos_token_id")));
    if out.is_empty() {
        out = ids(config.get("eos_token_id"));
        if out.is_empty() {
            out = ids(config
                .get("text_config")
                .and_then(|t| t.get("eos_token_id")));
        }
    }
    let eos = special_token(tokenizer_config, "eos_token");
    if let Some(id) = eos.and_then(|t| tok.token_to_id(&t)) {
        out.push(id);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Counters the scheduler and the submitters share.
#[derive(Default)]
struct Shared {
    /// Requests admitted and not finished (queued + running).
    in_flight: AtomicUsize,
    queued: AtomicU32,
    active: AtomicU32,
    cancelled: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
}

/// One admitted request.
struct Job {
    prompt: Vec<u32>,
    req: GenerateRequest,
    tx: UnboundedSender<GenEvent>,
    context: usize,
}

/// The engine handle: validates and queues; the scheduler thread runs.
struct CandleGenerator {
    info: DecoderInfo,
    tokenizer: Arc<tokenizers::Tokenizer>,
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    limit: usize,
}

impl Generator for CandleGenerator {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn stats(&self) -> DecoderStats {
        let s = &self.shared;
        DecoderStats {
            active_slots: s.active.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            cancelled_total: s.cancelled.load(Ordering::Relaxed),
            prompt_tokens_total: s.prompt_tokens.load(Ordering::Relaxed),
            cached_prompt_tokens_total: 0,
            generated_tokens_total: s.generated_tokens.load(Ordering::Relaxed),
            ..DecoderStats::default()
        }
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        self.tokenizer
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EngineError::Tokenization(e.to_string()))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| EngineError::Tokenization(e.to_string()))
    }

    fn submit(&self, req: GenerateRequest) -> Result<GenStream, EngineError> {
        let what = match &req.constraint {
            Constraint::None => None,
            Constraint::JsonObject => Some("JSON mode (response_format json_object)"),
            Constraint::JsonSchema(_) => Some("a JSON schema (response_format json_schema)"),
            Constraint::Grammar(_) => Some("a grammar"),
        };
        if let Some(what) = what {
            return Err(EngineError::Grammar(format!(
                "{what} is enforced on GGUF models (llama.cpp); this model runs on candle, \
                 which cannot constrain its output: serve a GGUF of it, or drop \
                 response_format"
            )));
        }
        if let Some(k) = req.logprobs {
            if k > MAX_TOP_LOGPROBS {
                return Err(EngineError::InvalidParameter {
                    name: "top_logprobs",
                    reason: format!("{k} is more than {MAX_TOP_LOGPROBS}"),
                });
            }
        }
        let prompt = match &req.prompt {
            Prompt::Text { text, add_special } => self.tokenize(text, *add_special)?,
            Prompt::Tokens(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.info.vocab_size) {
                    return Err(EngineError::InvalidParameter {
                        name: "prompt",
                        reason: format!(
                            "token id {bad} is outside the vocabulary (size {})",
                            self.info.vocab_size
                        ),
                    });
                }
                ids.clone()
            }
        };
        if prompt.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        let context = self.info.context_length;
        let too_long = prompt.len() >= context
            || req
                .max_tokens
                .is_some_and(|m| prompt.len().saturating_add(m) > context);
        if too_long {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens: prompt.len(),
                max_tokens: req.max_tokens,
                context,
            });
        }
        let before = self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        if before >= self.limit {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Overloaded {
                in_flight: before,
                limit: self.limit,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let prompt_tokens = prompt.len();
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            prompt,
            req,
            tx,
            context,
        };
        if self.jobs.send(job).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Unavailable);
        }
        Ok(GenStream { prompt_tokens, rx })
    }
}

/// The scheduler thread's state: the model (with its KV cache) and what decoding needs.
struct Worker {
    net: Net,
    token_bytes: Vec<Vec<u8>>,
    eos_ids: Vec<u32>,
    shared: Arc<Shared>,
}

/// How a job's run ended.
enum Ended {
    /// With this `Done` event, sent once the slot is free again.
    Finished(Finish),
    /// The client went away.
    Cancelled,
}

impl Worker {
    /// Runs jobs one at a time until every handle is gone.
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            if job.tx.is_closed() {
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            self.shared.active.store(1, Ordering::SeqCst);
            let tx = job.tx.clone();
            let last = match self.generate(job) {
                Ok(Ended::Finished(finish)) => Some(GenEvent::Done(finish)),
                Ok(Ended::Cancelled) => {
                    self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) => Some(GenEvent::Failed(EngineError::Backend(RunError::Candle(
                    e.to_string(),
                )))),
            };
            self.net.reset();
            self.shared.active.store(0, Ordering::SeqCst);
            // Free the admission before the client hears the end, so that a request sent
            // on `Done` is admitted.
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(event) = last {
                let _ = tx.send(event);
            }
        }
    }

    /// Prefill, then one token per step until EOS, a stop string, the limit or the
    /// client going away.
    fn generate(&mut self, job: Job) -> candle_core::Result<Ended> {
        let Job {
            prompt,
            req,
            tx,
            context,
        } = job;
        self.net.reset();
        self.shared
            .prompt_tokens
            .fetch_add(prompt.len() as u64, Ordering::Relaxed);
        let budget = context.saturating_sub(prompt.len());
        let limit = req.max_tokens.map_or(budget, |m| m.min(budget));
        let mut usage = Usage {
            prompt_tokens: prompt.len(),
            completion_tokens: 0,
            cached_tokens: 0,
        };
        let done = |usage: Usage, reason, stop_string, tail| {
            Ok(Ended::Finished(Finish {
                reason,
                usage,
                stop_string,
                tail,
            }))
        };
        if limit == 0 {
            return done(usage, FinishReason::Length, None, String::new());
        }
        let mut sampler = Sampler::new(&req.sampling, &prompt);
        let mut scan = StopScan::new(&req.stop);
        let mut logits = self.net.forward(&prompt, 0)?;
        let mut pos = prompt.len();
        loop {
            if tx.is_closed() {
                return Ok(Ended::Cancelled);
            }
            let id = sampler.pick(&logits)?;
            usage.completion_tokens += 1;
            self.shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if !req.ignore_eos && self.eos_ids.contains(&id) {
                return done(usage, FinishReason::Stop, None, scan.finish());
            }
            let (logprob, top_logprobs) = match req.logprobs {
                Some(k) => self.logprobs(&logits, id, k),
                None => (None, Vec::new()),
            };
            let bytes = self.token_bytes.get(id as usize).map_or(&[][..], |b| b);
            match scan.push(bytes) {
                Scan::Text(text) => {
                    let _ = tx.send(GenEvent::Token(GenToken {
                        id,
                        text,
                        logprob,
                        top_logprobs,
                    }));
                }
                Scan::Stopped { before, stop } => {
                    let _ = tx.send(GenEvent::Token(GenToken {
                        id,
                        text: before,
                        logprob,
                        top_logprobs,
                    }));
                    return done(usage, FinishReason::Stop, Some(stop), String::new());
                }
            }
            if usage.completion_tokens >= limit {
                return done(usage, FinishReason::Length, None, scan.finish());
            }
            logits = self.net.forward(&[id], pos)?;
            pos += 1;
        }
    }

    /// The sampled token's log-probability and the `k` most likely tokens, from the
    /// log-softmax of the raw logits (before penalties and temperature).
    fn logprobs(
        &self,
        logits: &[f32],
        id: u32,
        k: usize,
    ) -> (Option<TokenLogprob>, Vec<TokenLogprob>) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max as f64
            + logits
                .iter()
                .map(|&l| ((l - max) as f64).exp())
                .sum::<f64>()
                .ln();
        let entry = |id: u32| {
            let bytes = self
                .token_bytes
                .get(id as usize)
                .cloned()
                .unwrap_or_default();
            TokenLogprob {
                id,
                text: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob: (logits[id as usize] as f64 - lse) as f32,
            }
        };
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(order.len());
        if k > 0 {
            order.select_nth_unstable_by(k - 1, |&a, &b| {
                logits[b as usize].total_cmp(&logits[a as usize])
            });
            order.truncate(k);
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        } else {
            order.clear();
        }
        (Some(entry(id)), order.into_iter().map(entry).collect())
    }
}

/// One request's sampling state: penalties over the token history, then argmax
/// (temperature 0) or candle's [`LogitsProcessor`] (top-k / top-p / temperature, seeded).
struct Sampler {
    params: SamplingParams,
    processor: Option<LogitsProcessor>,
    /// Every token of the sequence (for the repetition penalty).
    seen: HashMap<u32, u32>,
    /// Sampled tokens only (for presence / frequency penalties).
    generated: HashMap<u32, u32>,
}

impl Sampler {
    fn new(params: &SamplingParams, prompt: &[u32]) -> Sampler {
        let processor = (!params.is_greedy()).then(|| {
            let seed = params.seed.unwrap_or_else(rand::random);
            let temperature = params.temperature as f64;
            let p = params.top_p as f64;
            let k = params.top_k as usize;
            let sampling = match (k > 0, p < 1.0) {
                (false, false) => Sampling::All { temperature },
                (true, false) => Sampling::TopK { k, temperature },
                (false, true) => Sampling::TopP { p, temperature },
                (true, true) => Sampling::TopKThenTopP { k, p, temperature },
            };
            LogitsProcessor::from_sampling(seed, sampling)
        });
        let mut seen = HashMap::new();
        for &id in prompt {
            *seen.entry(id).or_insert(0) += 1;
        }
        Sampler {
            params: params.clone(),
            processor,
            seen,
            generated: HashMap::new(),
        }
    }

    fn pick(&mut self, raw: &[f32]) -> candle_core::Result<u32> {
        let p = &self.params;
        let penalised =
            p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        let mut logits = raw.to_vec();
        if penalised {
            if p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0 {
                for &id in self.seen.keys() {
                    if let Some(l) = logits.get_mut(id as usize) {
                        *l = if *l > 0.0 {
                            *l / p.repetition_penalty
                        } else {
                            *l * p.repetition_penalty
                        };
                    }
                }
            }
            for (&id, &n) in &self.generated {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.presence_penalty + n as f32 * p.frequency_penalty;
                }
            }
        }
        let id = match &mut self.processor {
            None => argmax(&logits),
            Some(processor) => {
                if p.min_p > 0.0 && p.min_p < 1.0 {
                    // p_i / p_max < min_p  ⇔  l_i < l_max + T·ln(min_p).
                    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let cut = max + p.temperature * p.min_p.ln();
                    for l in logits.iter_mut() {
                        if *l < cut {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                }
                let n = logits.len();
                processor.sample(&Tensor::from_vec(logits, n, &Device::Cpu)?)?
            }
        };
        *self.seen.entry(id).or_insert(0) += 1;
        *self.generated.entry(id).or_insert(0) += 1;
        Ok(id)
    }
}

/// The first index of the largest logit (as torch's argmax).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    /// The f32 figure comes from the tensors' element counts, not from the
    /// file size or config.json: an f8 tensor of 1,000 elements (1,000 bytes
    /// on disk) takes 4,000 bytes as f32.
    #[test]
    fn f32_bytes_come_from_the_headers() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, header: &str, data: usize| {
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend(header.as_bytes());
            b.extend(vec![0u8; data]);
            let p = d.path().join(name);
            std::fs::write(&p, b).unwrap();
            p
        };
        let a = write(
            "a.safetensors",
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F8_E4M3","shape":[10,100],"data_offsets":[0,1000]}}"#,
            1000,
        );
        let b = write(
            "b.safetensors",
            r#"{"v":{"dtype":"BF16","shape":[8],"data_offsets":[0,16]},"s":{"dtype":"F32","shape":[],"data_offsets":[16,20]}}"#,
            20,
        );
        assert_eq!(
            super::f32_weight_bytes(&super::map_weights(&[a.clone(), b]).unwrap()),
            4000 + 32 + 4
        );
        let huge = write(
            "c.safetensors",
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#,
            0,
        );
        assert!(super::map_weights(&[huge]).is_err());
        let junk = d.path().join("junk.safetensors");
        std::fs::write(&junk, u64::MAX.to_le_bytes()).unwrap();
        assert!(super::map_weights(&[junk]).is_err());
    }

    use super::*;

    #[test]
    fn an_index_cannot_name_weights_outside_the_model_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(root.path().join("other.safetensors"), b"x").unwrap();
        let index = |file: &str| {
            let body = json!({"weight_map": {"lm_head.weight": file, "embed.weight": "model-1.safetensors"}});
            std::fs::write(dir.join("model.safetensors.index.json"), body.to_string()).unwrap();
        };
        for bad in [
            "../other.safetensors",
            "/etc/passwd",
            "sub/model.safetensors",
            "..\\other.safetensors",
            ".hidden.safetensors",
        ] {
            index(bad);
            let err = weight_files(&dir).unwrap_err().to_string();
            assert!(err.contains("outside the model's folder"), "{bad}: {err}");
        }
        index("model-2.safetensors");
        assert_eq!(
            weight_files(&dir).unwrap(),
            vec![
                dir.join("model-1.safetensors"),
                dir.join("model-2.safetensors")
            ]
        );
    }

    #[test]
    fn causal_lm_configs_are_recognised() {
        assert!(is_causal_lm(
            &json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
        ));
        assert!(is_causal_lm(&json!({"model_type": "gemma3_text"})));
        assert!(is_causal_lm(
            &json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]})
        ));
        assert!(!is_causal_lm(
            &json!({"model_type": "llama", "architectures": ["LlamaForSequenceClassification"]})
        ));
        assert!(!is_causal_lm(&json!({"model_type": "bert"})));
        assert!(!is_causal_lm(&json!({})));
    }

    #[test]
    fn gemma3_pattern_comes_from_layer_types() {
        let c = gemma3_config(&json!({
            "num_hidden_layers": 4,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        }))
        .unwrap();
        assert_eq!(c["sliding_window_pattern"], 2);
        let irregular = gemma3_config(&json!({
            "num_hidden_layers": 3,
            "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
        }));
        assert!(matches!(irregular, Err(LoadError::BadConfig(_))));
    }

    #[test]
    fn sliding_windows_shorter_than_the_context_are_refused() {
        let ok = |family, c: Value| without_window(family, &c).unwrap();
        let refused = |family, c: Value| {
            let e = without_window(family, &c).unwrap_err();
            assert!(
                matches!(&e, LoadError::BadConfig(m) if m.contains("sliding window")),
                "{e}"
            );
        };
        // Mistral-7B-v0.1: a 4096 window over a 4096 context never hides a position.
        let c = ok(
            "mistral",
            json!({"max_position_embeddings": 4096, "sliding_window": 4096}),
        );
        assert!(c["sliding_window"].is_null());
        ok(
            "mistral",
            json!({"max_position_embeddings": 8192, "sliding_window": null}),
        );
        // Absent means transformers' default, 4096.
        refused("mistral", json!({"max_position_embeddings": 8192}));
        refused(
            "mistral",
            json!({"max_position_embeddings": 256, "sliding_window": 4}),
        );
        // qwen2 windows only with use_sliding_window, and only past max_window_layers.
        let c = ok(
            "qwen2",
            json!({"max_position_embeddings": 4096, "sliding_window": 1024,
                   "use_sliding_window": false, "num_hidden_layers": 24}),
        );
        assert_eq!(c["sliding_window"], 4096);
        assert_eq!(c["use_sliding_window"], false);
        ok(
            "qwen2",
            json!({"max_position_embeddings": 4096, "sliding_window": 1024,
                   "use_sliding_window": true, "num_hidden_layers": 24,
                   "max_window_layers": 28}),
        );
        refused(
            "qwen2",
            json!({"max_position_embeddings": 4096, "sliding_window": 1024,
                   "use_sliding_window": true, "num_hidden_layers": 24,
                   "max_window_layers": 21}),
        );
        refused(
            "qwen2",
            json!({"max_position_embeddings": 4096, "sliding_window": 1024,
                   "use_sliding_window": true, "num_hidden_layers": 2,
                   "layer_types": ["full_attention", "sliding_attention"]}),
        );
    }

    #[test]
    fn byte_level_alphabet_is_a_bijection() {
        let map = gpt2_byte_alphabet();
        let chars: std::collections::HashSet<char> = map.iter().map(|(_, c)| *c).collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(map[b' ' as usize].1, '\u{120}'); // Ġ
        assert_eq!(map[b'\n' as usize].1, '\u{10A}'); // Ċ
    }

    #[test]
    fn penalties_change_the_argmax() {
        let params = SamplingParams {
            temperature: 0.0,
            frequency_penalty: 2.0,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(&params, &[]);
        let logits = [1.0, 2.5, 2.0];
        assert_eq!(s.pick(&logits).unwrap(), 1);
        // Token 1 now costs 2.0: 0.5 < 2.0.
        assert_eq!(s.pick(&logits).unwrap(), 2);
    }
}
