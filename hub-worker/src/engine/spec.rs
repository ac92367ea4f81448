//! Reads a model directory (config.json, tokenizer.json, weights, sentence-transformers
//! modules) into a `ModelSpec`, or a `LoadError` that says why it cannot be served.
//! Nothing here executes repo code: JSON only, pickle files are refused by name.

use super::error::LoadError;
use super::pooling::PoolingMode;
use super::task::Task;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The longest input an encoder takes, whatever its config says. A repo's
/// `max_position_embeddings` is the tenant's to write: with a million
/// positions (a small table at hidden size 8) a 2 MB request would build an
/// attention matrix of terabytes and abort the shared worker. 8192 is the
/// longest context of the common long encoders (BGE-M3, nomic-embed, jina v2,
/// ModernBERT); longer inputs are truncated or refused as for any model.
pub const MAX_ENCODER_INPUT_TOKENS: usize = 8192;

/// The encoder families the candle backend implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `bert` (with or without the `bert.` prefix).
    Bert,
    /// `roberta`, `xlm-roberta`, `camembert`: BERT layers, offset position ids.
    Roberta,
    /// `distilbert`: no token types, `q_lin`/`k_lin`/`v_lin` naming.
    DistilBert,
}

impl Arch {
    fn from_model_type(model_type: &str) -> Option<Arch> {
        match model_type {
            "bert" => Some(Arch::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Arch::Roberta),
            "distilbert" => Some(Arch::DistilBert),
            _ => None,
        }
    }
}

/// What activation the feed-forward layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    Relu,
}

/// Encoder hyper-parameters normalised across families.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub activation: Activation,
}

impl EncoderConfig {
    /// Position ids of RoBERTa-style models start after the padding index.
    pub fn position_offset(&self) -> usize {
        match self.arch {
            Arch::Roberta => self.pad_token_id as usize + 1,
            _ => 0,
        }
    }

    /// Longest input the position table allows, special tokens included.
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }
}

/// How classification logits turn into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFn {
    Softmax,
    Sigmoid,
    None,
}

impl ScoreFn {
    /// Parses the HF `function_to_apply` parameter.
    pub fn parse(s: &str) -> Option<ScoreFn> {
        match s.to_ascii_lowercase().as_str() {
            "softmax" => Some(ScoreFn::Softmax),
            "sigmoid" => Some(ScoreFn::Sigmoid),
            "none" => Some(ScoreFn::None),
            _ => None,
        }
    }
}

/// Everything the engine needs to know about a model directory.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub model_type: String,
    pub architectures: Vec<String>,
    pub encoder: EncoderConfig,
    /// `*.safetensors` files, sorted.
    pub safetensors: Vec<PathBuf>,
    /// An ONNX graph of the encoder, if the repo ships one (`model.onnx`, `onnx/model.onnx`).
    pub onnx: Option<PathBuf>,
    pub tokenizer: PathBuf,
    /// Pooling from sentence-transformers `modules.json`; `None` when the repo has none.
    pub st_pooling: Option<Vec<PoolingMode>>,
    /// Whether sentence-transformers declares a `Normalize` module.
    pub normalize: bool,
    /// Tokens per input after truncation (special tokens included).
    pub max_input_tokens: usize,
    /// Labels by class index (`id2label`), for text classification.
    pub labels: Vec<String>,
    pub score_fn: ScoreFn,
    /// Task inferred from the files, used when the assignment does not say.
    pub default_task: Task,
    /// Bytes of weights the engine will map.
    pub weight_bytes: u64,
}

impl ModelSpec {
    /// Pooling for embeddings: the sentence-transformers config, else mean pooling.
    pub fn pooling(&self) -> Vec<PoolingMode> {
        self.st_pooling
            .clone()
            .unwrap_or_else(|| vec![PoolingMode::Mean])
    }

    /// Whether the architecture names a sequence-classification head.
    pub fn has_classifier_architecture(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    }
}

/// File names the engine reads from a model repo; everything else is never fetched.
pub fn is_engine_file(path: &str, with_onnx: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let top_level = !path.contains('/');
    match path {
        "config.json"
        | "tokenizer.json"
        | "tokenizer_config.json"
        | "special_tokens_map.json"
        | "modules.json"
        | "sentence_bert_config.json"
        | "model.safetensors.index.json"
        | "generation_config.json"
        | "chat_template.jinja" => return true,
        _ => {}
    }
    if top_level && name.ends_with(".safetensors") {
        return true;
    }
    // A decoder in GGUF (the generation family; multimodal projectors are not served).
    if top_level && name.ends_with(".gguf") && !name.starts_with("mmproj") {
        return true;
    }
    // sentence-transformers module configs (`1_Pooling/config.json`).
    if path.matches('/').count() == 1 && name == "config.json" {
        let dir = path.split('/').next().unwrap_or("");
        if dir.ends_with("_Pooling") || dir.ends_with("_Normalize") {
            return true;
        }
    }
    with_onnx && (path == "model.onnx" || path == "onnx/model.onnx")
}

fn read_json(path: &Path) -> Result<Option<Value>, LoadError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            LoadError::BadConfig(format!(
                "{}: {e}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn get_usize(cfg: &Value, keys: &[&str]) -> Option<usize> {
    keys.iter()
        .find_map(|k| cfg.get(*k).and_then(Value::as_u64))
        .map(|v| v as usize)
}

fn require(cfg: &Value, keys: &[&str]) -> Result<usize, LoadError> {
    get_usize(cfg, keys)
        .ok_or_else(|| LoadError::BadConfig(format!("config.json has no integer {:?}", keys[0])))
}

fn parse_encoder(cfg: &Value, arch: Arch) -> Result<EncoderConfig, LoadError> {
    let act_name = cfg
        .get("hidden_act")
        .or_else(|| cfg.get("activation"))
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    let activation = match act_name {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => {
            return Err(LoadError::BadConfig(format!(
                "activation {other:?} is not supported (gelu, gelu_new, relu)"
            )))
        }
    };
    let enc =
        match arch {
            Arch::DistilBert => EncoderConfig {
                arch,
                vocab_size: require(cfg, &["vocab_size"])?,
                hidden_size: require(cfg, &["dim", "hidden_size"])?,
                num_layers: require(cfg, &["n_layers", "num_hidden_layers"])?,
                num_heads: require(cfg, &["n_heads", "num_attention_heads"])?,
                intermediate_size: require(cfg, &["hidden_dim", "intermediate_size"])?,
                max_position_embeddings: require(cfg, &["max_position_embeddings"])?,
                type_vocab_size: 0,
                layer_norm_eps: 1e-12,
                pad_token_id: get_usize(cfg, &["pad_token_id"]).unwrap_or(0) as u32,
                activation,
            },
            Arch::Bert | Arch::Roberta => EncoderConfig {
                arch,
                vocab_size: require(cfg, &["vocab_size"])?,
                hidden_size: require(cfg, &["hidden_size"])?,
                num_layers: require(cfg, &["num_hidden_layers"])?,
                num_heads: require(cfg, &["num_attention_heads"])?,
                intermediate_size: require(cfg, &["intermediate_size"])?,
                max_position_embeddings: require(cfg, &["max_position_embeddings"])?,
                type_vocab_size: get_usize(cfg, &["type_vocab_size"]).unwrap_or(2),
                layer_norm_eps: cfg
                    .get("layer_norm_eps")
                    .and_then(Value::as_f64)
                    .unwrap_or(1e-12),
                pad_token_id: get_usize(cfg, &["pad_token_id"])
                    .unwrap_or(if arch == Arch::Roberta { 1 } else { 0 })
                    as u32,
                activation,
            },
        };
    if enc.hidden_size == 0 || enc.num_heads == 0 || enc.hidden_size % enc.num_heads != 0 {
        return Err(LoadError::BadConfig(format!(
            "hidden size {} is not a multiple of {} attention heads",
            enc.hidden_size, enc.num_heads
        )));
    }
    if let Some(pe) = cfg.get("position_embedding_type").and_then(Value::as_str) {
        if pe != "absolute" {
            return Err(LoadError::BadConfig(format!(
                "position_embedding_type {pe:?} is not supported (absolute only)"
            )));
        }
    }
    Ok(enc)
}

/// Labels by index from `id2label` (`{"0": "NEG", ...}`), or `num_labels` generic ones.
fn parse_labels(cfg: &Value) -> Result<Vec<String>, LoadError> {
    if let Some(map) = cfg.get("id2label").and_then(Value::as_object) {
        let mut pairs = Vec::with_capacity(map.len());
        for (k, v) in map {
            let idx: usize = k
                .parse()
                .map_err(|_| LoadError::BadConfig(format!("id2label key {k:?} is not an index")))?;
            let label = v
                .as_str()
                .ok_or_else(|| LoadError::BadConfig(format!("id2label[{k}] is not a string")))?;
            pairs.push((idx, label.to_string()));
        }
        pairs.sort();
        if pairs.iter().enumerate().any(|(i, (idx, _))| i != *idx) {
            return Err(LoadError::BadConfig(
                "id2label indices are not 0..n-1".to_string(),
            ));
        }
        return Ok(pairs.into_iter().map(|(_, l)| l).collect());
    }
    let n = get_usize(cfg, &["num_labels"]).unwrap_or(0);
    Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
}

/// Parses sentence-transformers `modules.json` and the module configs it points to.
fn parse_sentence_transformers(dir: &Path) -> Result<Option<(Vec<PoolingMode>, bool)>, LoadError> {
    let Some(modules) = read_json(&dir.join("modules.json"))? else {
        return Ok(None);
    };
    let list = modules
        .as_array()
        .ok_or_else(|| LoadError::BadConfig("modules.json is not a list".to_string()))?;
    let mut pooling = None;
    let mut normalize = false;
    for m in list {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let short = ty.rsplit('.').next().unwrap_or(ty);
        let path = m.get("path").and_then(Value::as_str).unwrap_or("");
        match short {
            "Transformer" => {}
            "Normalize" => normalize = true,
            "Pooling" => {
                if !super::super::pull::cache::is_safe_repo_path(&format!("{path}/config.json")) {
                    return Err(LoadError::BadConfig(format!(
                        "modules.json pooling path {path:?} is not a plain relative path"
                    )));
                }
                let cfg = read_json(&dir.join(path).join("config.json"))?.ok_or_else(|| {
                    LoadError::BadConfig(format!("{path}/config.json is missing"))
                })?;
                pooling = Some(parse_pooling(&cfg)?);
            }
            _ => {
                return Err(LoadError::UnsupportedModule {
                    module: ty.to_string(),
                })
            }
        }
    }
    Ok(pooling.map(|p| (p, normalize)))
}

/// Pooling modes in the order sentence-transformers concatenates them.
pub fn parse_pooling(cfg: &Value) -> Result<Vec<PoolingMode>, LoadError> {
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    for unsupported in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
        if flag(unsupported) {
            return Err(LoadError::UnsupportedPooling(format!(
                "{unsupported} (supported: cls, mean, max, mean_sqrt_len)"
            )));
        }
    }
    let mut modes = Vec::new();
    if flag("pooling_mode_cls_token") {
        modes.push(PoolingMode::Cls);
    }
    if flag("pooling_mode_max_tokens") {
        modes.push(PoolingMode::Max);
    }
    if flag("pooling_mode_mean_tokens") {
        modes.push(PoolingMode::Mean);
    }
    if flag("pooling_mode_mean_sqrt_len_tokens") {
        modes.push(PoolingMode::MeanSqrtLen);
    }
    if modes.is_empty() {
        // Newer configs may carry a single `pooling_mode` string.
        match cfg.get("pooling_mode").and_then(Value::as_str) {
            Some("cls") => modes.push(PoolingMode::Cls),
            Some("mean") => modes.push(PoolingMode::Mean),
            Some("max") => modes.push(PoolingMode::Max),
            Some("mean_sqrt_len_tokens") => modes.push(PoolingMode::MeanSqrtLen),
            Some(other) => {
                return Err(LoadError::UnsupportedPooling(format!(
                    "pooling_mode {other:?}"
                )))
            }
            None => {
                return Err(LoadError::UnsupportedPooling(
                    "no pooling mode is enabled".to_string(),
                ))
            }
        }
    }
    Ok(modes)
}

const PICKLE_SUFFIXES: [&str; 5] = [".bin", ".pt", ".pth", ".ckpt", ".pkl"];

/// Inspects a model directory. Cheap: reads JSON files and lists the directory.
pub fn inspect(dir: &Path) -> Result<ModelSpec, LoadError> {
    let cfg = read_json(&dir.join("config.json"))?.ok_or(LoadError::MissingConfig)?;
    let model_type = cfg
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let arch =
        Arch::from_model_type(&model_type).ok_or_else(|| LoadError::UnknownArchitecture {
            model_type: model_type.clone(),
        })?;
    let architectures: Vec<String> = cfg
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let encoder = parse_encoder(&cfg, arch)?;

    let mut safetensors = Vec::new();
    let mut pickles = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            safetensors.push(entry.path());
        } else if PICKLE_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            pickles.push(name);
        }
    }
    safetensors.sort();
    let onnx = ["model.onnx", "onnx/model.onnx"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_file());
    if safetensors.is_empty() && onnx.is_none() {
        if let Some(file) = pickles.into_iter().min() {
            return Err(LoadError::PickleOnly { file });
        }
        return Err(LoadError::NoWeights {
            onnx_hint: if super::select::serves_repo_onnx() {
                " or model.onnx"
            } else {
                ""
            },
        });
    }
    let mut weight_bytes = 0;
    for p in safetensors.iter().chain(onnx.iter()) {
        weight_bytes += std::fs::metadata(p)
            .map_err(|source| LoadError::Io {
                path: p.clone(),
                source,
            })?
            .len();
    }

    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(LoadError::MissingTokenizer);
    }

    let st = parse_sentence_transformers(dir)?;
    let st_max = read_json(&dir.join("sentence_bert_config.json"))?
        .and_then(|v| get_usize(&v, &["max_seq_length"]));
    let max_input_tokens = st_max
        .unwrap_or(usize::MAX)
        .min(encoder.max_positions())
        .clamp(2, MAX_ENCODER_INPUT_TOKENS);

    let labels = parse_labels(&cfg)?;
    let score_fn = match cfg.get("problem_type").and_then(Value::as_str) {
        Some("multi_label_classification") => ScoreFn::Sigmoid,
        _ if labels.len() == 1 => ScoreFn::Sigmoid,
        _ => ScoreFn::Softmax,
    };
    let is_classifier = architectures
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"));
    let default_task = if is_classifier {
        Task::TextClassification
    } else if st.is_some() {
        Task::SentenceSimilarity
    } else {
        Task::FeatureExtraction
    };
    let (st_pooling, normalize) = match st {
        Some((p, n)) => (Some(p), n),
        None => (None, false),
    };
    Ok(ModelSpec {
        dir: dir.to_path_buf(),
        model_type,
        architectures,
        encoder,
        safetensors,
        onnx,
        tokenizer,
        st_pooling,
        normalize,
        max_input_tokens,
        labels,
        score_fn,
        default_task,
        weight_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, v: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    fn bert_config(extra: Value) -> String {
        let mut cfg = json!({
            "model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        cfg.to_string()
    }

    #[test]
    fn reasons_for_unservable_dirs() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(inspect(d.path()), Err(LoadError::MissingConfig)));
        write(d.path(), "config.json", &bert_config(json!({})));
        write(d.path(), "pytorch_model.bin", "x");
        let e = inspect(d.path()).unwrap_err();
        assert!(matches!(e, LoadError::PickleOnly { .. }));
        assert!(e.to_string().contains("pytorch_model.bin"), "{e}");
        write(d.path(), "model.safetensors", "x");
        let e = inspect(d.path()).unwrap_err();
        assert!(matches!(e, LoadError::MissingTokenizer), "{e}");
        assert!(e.to_string().contains("tokenizer.json"));
        write(d.path(), "tokenizer.json", "{}");
        let spec = inspect(d.path()).unwrap();
        assert_eq!(spec.default_task, Task::FeatureExtraction);
        assert_eq!(spec.max_input_tokens, 32);
        // A config's position count is the tenant's to write: capped.
        write(
            d.path(),
            "config.json",
            &bert_config(json!({"max_position_embeddings": 1_048_576})),
        );
        let spec = inspect(d.path()).unwrap();
        assert_eq!(spec.max_input_tokens, MAX_ENCODER_INPUT_TOKENS);
        write(
            d.path(),
            "config.json",
            &bert_config(json!({"model_type": "gpt2"})),
        );
        let e = inspect(d.path()).unwrap_err();
        assert!(e.to_string().contains("\"gpt2\""), "{e}");
    }

    #[test]
    fn classifier_and_sentence_transformers() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "config.json",
            &bert_config(json!({
                "architectures": ["BertForSequenceClassification"],
                "id2label": {"1": "b", "0": "a", "2": "c"},
            })),
        );
        write(d.path(), "model.safetensors", "x");
        write(d.path(), "tokenizer.json", "{}");
        let spec = inspect(d.path()).unwrap();
        assert_eq!(spec.default_task, Task::TextClassification);
        assert_eq!(spec.labels, vec!["a", "b", "c"]);
        assert_eq!(spec.score_fn, ScoreFn::Softmax);

        let d = tempfile::tempdir().unwrap();
        write(d.path(), "config.json", &bert_config(json!({})));
        write(d.path(), "model.safetensors", "x");
        write(d.path(), "tokenizer.json", "{}");
        write(
            d.path(),
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            d.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        );
        write(
            d.path(),
            "sentence_bert_config.json",
            r#"{"max_seq_length": 16}"#,
        );
        let spec = inspect(d.path()).unwrap();
        assert_eq!(spec.default_task, Task::SentenceSimilarity);
        assert_eq!(spec.pooling(), vec![PoolingMode::Cls]);
        assert!(spec.normalize);
        assert_eq!(spec.max_input_tokens, 16);

        write(
            d.path(),
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        );
        let e = inspect(d.path()).unwrap_err();
        assert!(e.to_string().contains("Dense"), "{e}");
    }

    #[test]
    fn engine_files() {
        for p in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "1_Pooling/config.json",
            "modules.json",
            "sentence_bert_config.json",
        ] {
            assert!(is_engine_file(p, false), "{p}");
        }
        for p in [
            "pytorch_model.bin",
            "README.md",
            "onnx/model.onnx",
            "sub/model.safetensors",
            "2_Dense/config.json",
            "a/b/config.json",
        ] {
            assert!(!is_engine_file(p, false), "{p}");
        }
        assert!(is_engine_file("onnx/model.onnx", true));
    }
}
