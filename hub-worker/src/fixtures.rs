//! Deterministic fixture models for tests, benchmarks and end-to-end checks, built
//! without Python: a 3-label BERT classifier on top of the real MiniLM weights, and tiny
//! DistilBERT / XLM-RoBERTa classifiers. `scripts/worker/make-classifier.py` and
//! `scripts/worker/make-tiny-references.py` build the same tensors bit for bit (same
//! integer hash, same scales) and record PyTorch's outputs in `fixtures/worker/`.
//!
//! Element `k` of tensor `name` is `offset + scale * u`, with `u` in [-1, 1) taken from the
//! top 24 bits of `splitmix64(fnv1a64(name) + k)`; `(offset, scale)` follow [`init_rule`].

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// splitmix64 finaliser.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a 64-bit hash of a tensor name.
pub fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `(offset, scale)` for a tensor: LayerNorm weights near 1, small biases, embeddings
/// ±0.1, dense weights ±1/sqrt(fan_in).
pub fn init_rule(name: &str, shape: &[usize]) -> (f64, f64) {
    if name.ends_with("LayerNorm.weight") || name.ends_with("layer_norm.weight") {
        (1.0, 0.1)
    } else if name.ends_with(".bias") {
        (0.0, 0.02)
    } else if name.contains("embeddings") {
        (0.0, 0.1)
    } else {
        let fan_in = shape.get(1).copied().unwrap_or(1).max(1);
        (0.0, 1.0 / (fan_in as f64).sqrt())
    }
}

/// The deterministic values of tensor `name` with `shape`.
pub fn det_tensor(name: &str, shape: &[usize]) -> Vec<f32> {
    let (offset, scale) = init_rule(name, shape);
    let seed = fnv1a64(name);
    let n: usize = shape.iter().product();
    (0..n as u64)
        .map(|k| {
            let u =
                (splitmix64(seed.wrapping_add(k)) >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0;
            (offset + scale * u) as f32
        })
        .collect()
}

/// sha256 over `name \0 dtype-bytes` of every tensor in name order: equal digests mean the
/// Python and Rust generators produced the same weights.
pub fn weights_digest(tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>) -> String {
    let mut h = sha2::Sha256::new();
    for (name, (shape, bytes)) in tensors {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(format!("{shape:?}").as_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>,
    dtypes: &BTreeMap<String, Dtype>,
) -> io::Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, bytes))| {
            let dtype = dtypes.get(name).copied().unwrap_or(Dtype::F32);
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| io::Error::other(e.to_string()))
        })
        .collect::<io::Result<_>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| io::Error::other(e.to_string()))
}

fn add(tensors: &mut BTreeMap<String, (Vec<usize>, Vec<u8>)>, name: &str, shape: &[usize]) {
    tensors.insert(
        name.to_string(),
        (shape.to_vec(), f32_bytes(&det_tensor(name, shape))),
    );
}

fn copy_tokenizer(from: &Path, to: &Path) -> io::Result<()> {
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), to.join(f))?;
        }
    }
    Ok(())
}

/// Labels of the MiniLM fixture classifier.
pub const CLASSIFIER_LABELS: [&str; 3] = ["negative", "neutral", "positive"];

fn label_maps(labels: &[&str]) -> (Value, Value) {
    let id2label: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.to_string(), json!(i)))
        .collect();
    (Value::Object(id2label), Value::Object(label2id))
}

/// Builds the MiniLM classifier in `out`: MiniLM's tensors under `bert.` (without the
/// `position_ids` buffer), a deterministic `bert.pooler.dense` and 3-label `classifier`,
/// `BertForSequenceClassification` config with `id2label`. Returns the weights digest.
pub fn make_classifier(minilm: &Path, out: &Path) -> io::Result<String> {
    std::fs::create_dir_all(out)?;
    let bytes = std::fs::read(minilm.join("model.safetensors"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    for (name, view) in st.tensors() {
        if name == "embeddings.position_ids" {
            continue;
        }
        let full = format!("bert.{name}");
        dtypes.insert(full.clone(), view.dtype());
        tensors.insert(full, (view.shape().to_vec(), view.data().to_vec()));
    }
    let cfg: Value = serde_json::from_slice(&std::fs::read(minilm.join("config.json"))?)?;
    let h = cfg["hidden_size"].as_u64().unwrap_or(384) as usize;
    add(&mut tensors, "bert.pooler.dense.weight", &[h, h]);
    add(&mut tensors, "bert.pooler.dense.bias", &[h]);
    add(&mut tensors, "classifier.weight", &[3, h]);
    add(&mut tensors, "classifier.bias", &[3]);
    write_safetensors(&out.join("model.safetensors"), &tensors, &dtypes)?;
    let mut cfg = cfg;
    let (id2label, label2id) = label_maps(&CLASSIFIER_LABELS);
    cfg["architectures"] = json!(["BertForSequenceClassification"]);
    cfg["id2label"] = id2label;
    cfg["label2id"] = label2id;
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    copy_tokenizer(minilm, out)?;
    Ok(weights_digest(&tensors))
}

/// Config of a tiny fixture model of `model_type` (`distilbert` or `xlm-roberta`).
pub fn tiny_config(model_type: &str, vocab_size: usize) -> Option<Value> {
    let (id2label, label2id) = label_maps(&["no", "yes"]);
    match model_type {
        "distilbert" => Some(json!({
            "model_type": "distilbert",
            "architectures": ["DistilBertForSequenceClassification"],
            "vocab_size": vocab_size, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
            "max_position_embeddings": 64, "activation": "gelu", "pad_token_id": 0,
            "sinusoidal_pos_embds": false, "dropout": 0.0, "attention_dropout": 0.0,
            "seq_classif_dropout": 0.0, "id2label": id2label, "label2id": label2id,
        })),
        "xlm-roberta" => Some(json!({
            "model_type": "xlm-roberta",
            "architectures": ["XLMRobertaForSequenceClassification"],
            "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 66,
            "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 0, "bos_token_id": 101,
            "eos_token_id": 102, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "id2label": id2label, "label2id": label2id,
        })),
        _ => None,
    }
}

/// Tensor names and shapes of a tiny fixture model.
pub fn tiny_shapes(model_type: &str, vocab_size: usize) -> Vec<(String, Vec<usize>)> {
    let (h, f, layers) = (32, 64, 2);
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |n: String, s: &[usize]| v.push((n, s.to_vec()));
    let lin = |p: &str, o: usize, i: usize| {
        vec![
            (format!("{p}.weight"), vec![o, i]),
            (format!("{p}.bias"), vec![o]),
        ]
    };
    let ln = |p: &str| {
        vec![
            (format!("{p}.weight"), vec![h]),
            (format!("{p}.bias"), vec![h]),
        ]
    };
    match model_type {
        "distilbert" => {
            push(
                "distilbert.embeddings.word_embeddings.weight".into(),
                &[vocab_size, h],
            );
            push(
                "distilbert.embeddings.position_embeddings.weight".into(),
                &[64, h],
            );
            let mut rest = ln("distilbert.embeddings.LayerNorm");
            for i in 0..layers {
                let p = format!("distilbert.transformer.layer.{i}");
                for n in ["q_lin", "k_lin", "v_lin", "out_lin"] {
                    rest.extend(lin(&format!("{p}.attention.{n}"), h, h));
                }
                rest.extend(ln(&format!("{p}.sa_layer_norm")));
                rest.extend(lin(&format!("{p}.ffn.lin1"), f, h));
                rest.extend(lin(&format!("{p}.ffn.lin2"), h, f));
                rest.extend(ln(&format!("{p}.output_layer_norm")));
            }
            rest.extend(lin("pre_classifier", h, h));
            rest.extend(lin("classifier", 2, h));
            v.extend(rest);
        }
        "xlm-roberta" => {
            push(
                "roberta.embeddings.word_embeddings.weight".into(),
                &[vocab_size, h],
            );
            push(
                "roberta.embeddings.position_embeddings.weight".into(),
                &[66, h],
            );
            push(
                "roberta.embeddings.token_type_embeddings.weight".into(),
                &[1, h],
            );
            let mut rest = ln("roberta.embeddings.LayerNorm");
            for i in 0..layers {
                let p = format!("roberta.encoder.layer.{i}");
                for n in ["query", "key", "value"] {
                    rest.extend(lin(&format!("{p}.attention.self.{n}"), h, h));
                }
                rest.extend(lin(&format!("{p}.attention.output.dense"), h, h));
                rest.extend(ln(&format!("{p}.attention.output.LayerNorm")));
                rest.extend(lin(&format!("{p}.intermediate.dense"), f, h));
                rest.extend(lin(&format!("{p}.output.dense"), h, f));
                rest.extend(ln(&format!("{p}.output.LayerNorm")));
            }
            rest.extend(lin("classifier.dense", h, h));
            rest.extend(lin("classifier.out_proj", 2, h));
            v.extend(rest);
        }
        _ => {}
    }
    v
}

/// Builds a tiny `distilbert` or `xlm-roberta` classifier in `out`, with the tokenizer of
/// `tokenizer_dir`. Returns the weights digest.
pub fn make_tiny(model_type: &str, tokenizer_dir: &Path, out: &Path) -> io::Result<String> {
    let tok: Value = serde_json::from_slice(&std::fs::read(tokenizer_dir.join("tokenizer.json"))?)?;
    let vocab_size = tok["model"]["vocab"]
        .as_object()
        .map(|m| m.len())
        .unwrap_or(30522);
    let cfg = tiny_config(model_type, vocab_size)
        .ok_or_else(|| io::Error::other(format!("unknown tiny model type {model_type}")))?;
    std::fs::create_dir_all(out)?;
    let mut tensors = BTreeMap::new();
    for (name, shape) in tiny_shapes(model_type, vocab_size) {
        add(&mut tensors, &name, &shape);
    }
    write_safetensors(&out.join("model.safetensors"), &tensors, &BTreeMap::new())?;
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    copy_tokenizer(tokenizer_dir, out)?;
    Ok(weights_digest(&tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_stable() {
        // Pinned values: the Python generator must produce the same.
        assert_eq!(splitmix64(0), 0xe220a8397b1dcdaf);
        assert_eq!(fnv1a64("a"), 0xaf63dc4c8601ec8c);
        let v = det_tensor("classifier.bias", &[3]);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|x| x.abs() <= 0.02));
        let w = det_tensor("bert.embeddings.LayerNorm.weight", &[4]);
        assert!(w.iter().all(|x| (0.9..=1.1).contains(x)));
    }
}

/// A metadata value of a [`gguf_header`].
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U32(u32),
    F32(f32),
    Str(String),
    U32s(Vec<u32>),
    Strs(Vec<String>),
}

/// A GGUF v3 file with the metadata `kv` and no tensors, its (empty) data section aligned
/// to 32 bytes: crafted headers for the loader's checks.
pub fn gguf_header(kv: &[(&str, GgufValue)]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        s(&mut b, k);
        match v {
            GgufValue::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            GgufValue::F32(x) => {
                b.extend(6u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            GgufValue::Str(x) => {
                b.extend(8u32.to_le_bytes());
                s(&mut b, x);
            }
            GgufValue::U32s(xs) => {
                b.extend(9u32.to_le_bytes());
                b.extend(4u32.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                xs.iter().for_each(|x| b.extend(x.to_le_bytes()));
            }
            GgufValue::Strs(xs) => {
                b.extend(9u32.to_le_bytes());
                b.extend(8u32.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                xs.iter().for_each(|x| s(&mut b, x));
            }
        }
    }
    b.resize(b.len().div_ceil(32) * 32, 0);
    b
}
