//! A decoder forward pass that can be trained through, for LoRA jobs: llama, mistral,
//! qwen2, qwen3 and gemma3 (text) from their transformers config and safetensors.
//!
//! The serving models (candle-transformers', and `engine::generate::candle`'s gemma3)
//! cannot be trained through: candle-nn's fused `rms_norm`, `softmax_last_dim` and
//! `rotary_emb::rope` run as `apply_op*_no_bwd`, so every gradient stops at them. This
//! forward is built from ops that have backward passes (RMSNorm as mean-of-squares and
//! a division, rotate-half RoPE from narrows and a concat; softmax and the erf GELU are
//! `fused`'s one-pass ops), and covers the families' differences:
//! qwen2's q/k/v biases (any projection's bias when the checkpoint has one), qwen3's and
//! gemma3's q/k norms, gemma3's `(1 + w)` norms, embedding scale, gelu-tanh MLP, pre/post
//! feed-forward norms, `query_pre_attn_scalar`, local sliding-window layers with their
//! own RoPE base, logit soft-capping, and tied embeddings. Sequences are right-padded, so
//! the causal mask alone keeps padding out of every real position.
//!
//! The base weights are frozen f32 tensors (not `Var`s: backward computes no gradient
//! for them); each targeted projection may carry a LoRA adapter `A` (r × in, random) and
//! `B` (out × r, zeros) as `Var`s, adding `alpha / r * B A x` to its output.

use super::fused;
use super::ops::{causal_mask, frozen_matmul, rms_norm, rope};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `model_type`s this forward covers.
pub const FAMILIES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3",
    "gemma3_text",
];

/// Why a base model cannot be trained.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    #[error("config.json: {0}")]
    Config(String),
    #[error(
        "model_type {0:?} is not a decoder LoRA jobs train (llama, mistral, qwen2, qwen3, gemma3)"
    )]
    Family(String),
    #[error("the base model's weights: {0}")]
    Weights(String),
    #[error(
        "training needs about {needed_mib} MiB (the weights in f32 and their activations); \
         the worker has {available_mib} MiB available"
    )]
    TooBig { needed_mib: u64, available_mib: u64 },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The decoder family: what differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Silu,
    /// The tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    /// The exact (erf) gelu.
    Gelu,
}

/// RoPE frequency settings of one kind of layer.
#[derive(Debug, Clone, PartialEq)]
struct RopeSpec {
    theta: f64,
    /// llama3 scaling: (factor, low_freq_factor, high_freq_factor, original context).
    llama3: Option<(f64, f64, f64, f64)>,
}

/// A decoder's shape and per-family switches, from its config.json.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub family: Family,
    pub model_type: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    eps: f64,
    act: Act,
    /// Per layer: the sliding window (`i - j < W`), if any, and whether the layer uses
    /// the local RoPE base.
    windows: Vec<Option<usize>>,
    global_rope: RopeSpec,
    local_rope: RopeSpec,
    attn_scale: f64,
    attn_softcap: Option<f64>,
    final_softcap: Option<f64>,
    tied: bool,
}

fn num(c: &Value, k: &str) -> Option<f64> {
    c.get(k).and_then(Value::as_f64)
}

fn int(c: &Value, k: &str) -> Option<usize> {
    c.get(k).and_then(Value::as_u64).map(|v| v as usize)
}

fn rope_kind(p: &Value) -> &str {
    p.get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// A RoPE parameter block (`rope_scaling` or one of `rope_parameters`) read into
/// `spec`; only the scalings the serving engine runs are accepted.
fn rope_block(p: &Value, family: Family, spec: &mut RopeSpec) -> Result<(), DecoderError> {
    if let Some(t) = num(p, "rope_theta") {
        spec.theta = t;
    }
    match rope_kind(p) {
        "default" => Ok(()),
        "llama3" if family == Family::Llama => {
            let f = |k: &str, d: f64| num(p, k).unwrap_or(d);
            spec.llama3 = Some((
                f("factor", 8.0),
                f("low_freq_factor", 1.0),
                f("high_freq_factor", 4.0),
                f("original_max_position_embeddings", 8192.0),
            ));
            Ok(())
        }
        other => Err(DecoderError::Config(format!(
            "RoPE scaling {other:?} is not supported for LoRA training of this family"
        ))),
    }
}

impl DecoderConfig {
    /// Reads a transformers config.json (a gemma3 multimodal config's `text_config`).
    pub fn from_json(config: &Value) -> Result<DecoderConfig, DecoderError> {
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let family = match model_type.as_str() {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            _ => return Err(DecoderError::Family(model_type)),
        };
        let c = match config.get("text_config") {
            Some(t) if model_type == "gemma3" => t,
            _ => config,
        };
        let need = |k: &str| {
            int(c, k).ok_or_else(|| DecoderError::Config(format!("{k} is missing or not a number")))
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let layers = need("num_hidden_layers")?;
        if heads == 0 || layers == 0 || hidden == 0 {
            return Err(DecoderError::Config(
                "hidden_size, num_attention_heads and num_hidden_layers must be positive".into(),
            ));
        }
        let gemma = family == Family::Gemma3;
        let head_dim = int(c, "head_dim").unwrap_or(if gemma { 256 } else { hidden / heads });
        let kv_heads = int(c, "num_key_value_heads").unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 || head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(DecoderError::Config(format!(
                "{heads} heads over {kv_heads} key/value heads of dimension {head_dim}"
            )));
        }
        let act_name = c
            .get("hidden_activation")
            .or_else(|| c.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or(if gemma { "gelu_pytorch_tanh" } else { "silu" });
        let act = match act_name {
            "silu" | "swish" => Act::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Act::GeluTanh,
            "gelu" => Act::Gelu,
            other => {
                return Err(DecoderError::Config(format!(
                    "activation {other:?} is not supported"
                )))
            }
        };
        let mut global_rope = RopeSpec {
            theta: num(c, "rope_theta").unwrap_or(if gemma { 1_000_000.0 } else { 10_000.0 }),
            llama3: None,
        };
        let mut local_rope = RopeSpec {
            theta: num(c, "rope_local_base_freq").unwrap_or(10_000.0),
            llama3: None,
        };
        if let Some(s) = c.get("rope_scaling").filter(|v| !v.is_null()) {
            rope_block(s, family, &mut global_rope)?;
        }
        if let Some(p) = c.get("rope_parameters").filter(|v| !v.is_null()) {
            match (p.get("full_attention"), p.get("sliding_attention")) {
                (None, None) => rope_block(p, family, &mut global_rope)?,
                (full, sliding) => {
                    if let Some(f) = full {
                        rope_block(f, family, &mut global_rope)?;
                    }
                    if let Some(s) = sliding {
                        rope_block(s, family, &mut local_rope)?;
                    }
                }
            }
        }
        let layer_types: Option<Vec<bool>> =
            c.get("layer_types").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|t| t.as_str() == Some("sliding_attention"))
                    .collect()
            });
        if layer_types.as_ref().is_some_and(|t| t.len() != layers) {
            return Err(DecoderError::Config(
                "layer_types does not name every layer".into(),
            ));
        }
        let window = c.get("sliding_window").and_then(Value::as_u64);
        let windows: Vec<Option<usize>> = match family {
            Family::Gemma3 => {
                let w = window.unwrap_or(4096) as usize;
                let pattern = int(c, "sliding_window_pattern").unwrap_or(6).max(1);
                (0..layers)
                    .map(|i| {
                        let sliding = match &layer_types {
                            Some(t) => t[i],
                            None => (i + 1) % pattern > 0,
                        };
                        sliding.then_some(w)
                    })
                    .collect()
            }
            Family::Mistral => {
                // Absent means transformers' default (4096); null means none.
                let w = match c.get("sliding_window") {
                    None => Some(4096),
                    Some(v) => v.as_u64(),
                };
                vec![w.map(|w| w as usize); layers]
            }
            Family::Qwen2 | Family::Qwen3 => {
                let on = c
                    .get("use_sliding_window")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let from = int(c, "max_window_layers").unwrap_or(28);
                (0..layers)
                    .map(|i| {
                        let sliding = match &layer_types {
                            Some(t) => t[i],
                            None => i >= from,
                        };
                        window.filter(|_| on && sliding).map(|w| w as usize)
                    })
                    .collect()
            }
            Family::Llama => vec![None; layers],
        };
        if windows.contains(&Some(0)) {
            return Err(DecoderError::Config("sliding_window is 0".into()));
        }
        let attn_scale = if gemma {
            1.0 / num(c, "query_pre_attn_scalar")
                .unwrap_or(head_dim as f64)
                .sqrt()
        } else {
            1.0 / (head_dim as f64).sqrt()
        };
        let tied_default = matches!(family, Family::Gemma3);
        Ok(DecoderConfig {
            family,
            model_type,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            intermediate: need("intermediate_size")?,
            vocab: need("vocab_size")?,
            eps: num(c, "rms_norm_eps").unwrap_or(1e-6),
            act,
            windows,
            global_rope,
            local_rope,
            attn_scale,
            attn_softcap: if gemma {
                num(c, "attn_logit_softcapping")
            } else {
                None
            },
            final_softcap: if gemma {
                num(c, "final_logit_softcapping")
            } else {
                None
            },
            tied: c
                .get("tie_word_embeddings")
                .or_else(|| config.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(tied_default),
        })
    }

    fn gemma(&self) -> bool {
        self.family == Family::Gemma3
    }
}

/// RoPE tables (positions × head_dim / 2), computed as transformers does: inverse
/// frequencies from the base, their products with the positions in f32.
fn rope_tables(
    spec: &RopeSpec,
    head_dim: usize,
    len: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| {
            let f = 1.0 / spec.theta.powf(i as f64 / head_dim as f64);
            let f = match spec.llama3 {
                None => f,
                Some((factor, low, high, orig)) => {
                    let (low_wl, high_wl) = (orig / low, orig / high);
                    let wl = 2.0 * std::f64::consts::PI / f;
                    if wl < high_wl {
                        f
                    } else if wl > low_wl {
                        f / factor
                    } else {
                        let smooth = (orig / wl - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                }
            };
            f as f32
        })
        .collect();
    let half = inv.len();
    let freqs: Vec<f32> = (0..len)
        .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
        .collect();
    let freqs = Tensor::from_vec(freqs, (len, half), &Device::Cpu)?;
    let cos = freqs.cos()?;
    let sin = freqs.sin()?;
    Ok((
        Tensor::cat(&[&cos, &cos], 1)?,
        Tensor::cat(&[&sin, &sin], 1)?,
    ))
}

/// A LoRA adapter of one projection.
pub struct Adapter {
    /// (r, in), random at the start.
    pub a: Var,
    /// (out, r), zeros at the start.
    pub b: Var,
    /// alpha / r.
    pub scale: f64,
}

/// A projection: frozen weight (out, in), optional bias, optional adapter.
pub struct Proj {
    /// The checkpoint's tensor name of the weight (`...q_proj.weight`).
    pub name: String,
    pub w: Tensor,
    bias: Option<Tensor>,
    pub adapter: Option<Adapter>,
}

impl Proj {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, i) = x.dims3()?;
        let x2 = x.reshape((b * t, i))?;
        let mut y = frozen_matmul(&x2, &self.w)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(ad) = &self.adapter {
            let low = x2.matmul(&ad.a.as_tensor().t()?)?;
            y = (y + (low.matmul(&ad.b.as_tensor().t()?)? * ad.scale)?)?;
        }
        let out = y.dim(1)?;
        y.reshape((b, t, out))
    }

    /// `W + scale * B A`, the weight with the adapter merged in.
    pub fn merged(&self) -> candle_core::Result<Tensor> {
        match &self.adapter {
            None => Ok(self.w.clone()),
            Some(ad) => {
                let delta = (ad.b.as_tensor().matmul(ad.a.as_tensor())? * ad.scale)?;
                (&self.w + delta)?.detach().contiguous()
            }
        }
    }

    /// The PEFT module path (`model.layers.0.self_attn.q_proj`).
    pub fn module(&self) -> &str {
        self.name.strip_suffix(".weight").unwrap_or(&self.name)
    }
}

struct Layer {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    gate: Proj,
    up: Proj,
    down: Proj,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    input_norm: Tensor,
    post_attn_norm: Tensor,
    /// gemma3 only.
    pre_ff_norm: Option<Tensor>,
    post_ff_norm: Option<Tensor>,
}

impl Layer {
    fn projs(&self) -> [(&'static str, &Proj); 7] {
        [
            ("q_proj", &self.q),
            ("k_proj", &self.k),
            ("v_proj", &self.v),
            ("o_proj", &self.o),
            ("gate_proj", &self.gate),
            ("up_proj", &self.up),
            ("down_proj", &self.down),
        ]
    }

    fn projs_mut(&mut self) -> [(&'static str, &mut Proj); 7] {
        [
            ("q_proj", &mut self.q),
            ("k_proj", &mut self.k),
            ("v_proj", &mut self.v),
            ("o_proj", &mut self.o),
            ("gate_proj", &mut self.gate),
            ("up_proj", &mut self.up),
            ("down_proj", &mut self.down),
        ]
    }
}

/// A trainable decoder: frozen f32 base, optional LoRA adapters.
pub struct Decoder {
    pub cfg: DecoderConfig,
    embed: Tensor,
    /// `None`: tied to the embeddings.
    head: Option<Tensor>,
    norm: Tensor,
    layers: Vec<Layer>,
    /// Largest sequence the RoPE tables cover.
    max_len: usize,
    global: (Tensor, Tensor),
    local: (Tensor, Tensor),
}

/// The safetensors files of a model directory, as the serving engine finds them
/// (`engine::generate::candle::weight_files`: the index's files, else
/// `model*.safetensors`; nothing outside the folder).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, DecoderError> {
    crate::engine::generate::candle::weight_files(dir)
        .map_err(|e| DecoderError::Weights(e.to_string()))
}

/// Maps the weight files (read-only blobs of the worker's verified cache, never
/// modified while mapped).
#[allow(unsafe_code)]
pub fn map_weights(files: &[PathBuf]) -> Result<MmapedSafetensors, DecoderError> {
    // SAFETY: the files are immutable cache blobs (see `engine::generate::candle`).
    unsafe { MmapedSafetensors::multi(files) }.map_err(|e| DecoderError::Weights(e.to_string()))
}

/// Where the text model's tensors are in a checkpoint: `model.` for text models; a
/// gemma3 multimodal checkpoint nests it (`language_model.model.` or
/// `model.language_model.`).
fn prefix_of(st: &MmapedSafetensors) -> Result<String, DecoderError> {
    let names: std::collections::HashSet<String> =
        st.tensors().into_iter().map(|(n, _)| n).collect();
    for p in ["model.", "language_model.model.", "model.language_model."] {
        if names.contains(&format!("{p}embed_tokens.weight")) {
            return Ok(p.to_string());
        }
    }
    Err(DecoderError::Weights(
        "no model.embed_tokens.weight in the safetensors".into(),
    ))
}

impl Decoder {
    /// Loads the base from a model directory's config.json and safetensors, in f32,
    /// with RoPE tables for sequences up to `max_len` tokens.
    pub fn load(dir: &Path, max_len: usize) -> Result<Decoder, DecoderError> {
        let cfg_bytes = std::fs::read(dir.join("config.json"))
            .map_err(|e| DecoderError::Config(e.to_string()))?;
        let config: Value =
            serde_json::from_slice(&cfg_bytes).map_err(|e| DecoderError::Config(e.to_string()))?;
        let cfg = DecoderConfig::from_json(&config)?;
        let st = map_weights(&weight_files(dir)?)?;
        Decoder::from_safetensors(cfg, &st, max_len)
    }

    /// Builds the model from mapped weights.
    pub fn from_safetensors(
        cfg: DecoderConfig,
        st: &MmapedSafetensors,
        max_len: usize,
    ) -> Result<Decoder, DecoderError> {
        let prefix = prefix_of(st)?;
        let names: std::collections::HashSet<String> =
            st.tensors().into_iter().map(|(n, _)| n).collect();
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, DecoderError> {
            let t = st
                .load(name, &Device::Cpu)
                .map_err(|e| DecoderError::Weights(format!("{name}: {e}")))?
                .to_dtype(DType::F32)?;
            if t.dims() != shape {
                return Err(DecoderError::Weights(format!(
                    "{name} has shape {:?}, the config says {shape:?}",
                    t.dims()
                )));
            }
            Ok(t)
        };
        let gemma = cfg.gemma();
        let norm = |name: &str, dim: usize| -> Result<Tensor, DecoderError> {
            let w = get(name, &[dim])?;
            Ok(if gemma { (w + 1.0)? } else { w })
        };
        let proj = |name: String, out: usize, inp: usize| -> Result<Proj, DecoderError> {
            let w = get(&format!("{name}.weight"), &[out, inp])?;
            let bias_name = format!("{name}.bias");
            let bias = if names.contains(&bias_name) {
                Some(get(&bias_name, &[out])?)
            } else {
                None
            };
            Ok(Proj {
                name: format!("{name}.weight"),
                w,
                bias,
                adapter: None,
            })
        };
        let (h, hd, i) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
        let embed = get(&format!("{prefix}embed_tokens.weight"), &[cfg.vocab, h])?;
        let head_name = if prefix == "language_model.model." {
            "language_model.lm_head.weight".to_string()
        } else {
            "lm_head.weight".to_string()
        };
        let head = if names.contains(&head_name) && !cfg.tied {
            Some(get(&head_name, &[cfg.vocab, h])?)
        } else {
            None
        };
        let has_qk_norm = matches!(cfg.family, Family::Qwen3 | Family::Gemma3);
        let layers = (0..cfg.layers)
            .map(|l| -> Result<Layer, DecoderError> {
                let p = format!("{prefix}layers.{l}");
                let a = format!("{p}.self_attn");
                let m = format!("{p}.mlp");
                Ok(Layer {
                    q: proj(format!("{a}.q_proj"), qd, h)?,
                    k: proj(format!("{a}.k_proj"), kvd, h)?,
                    v: proj(format!("{a}.v_proj"), kvd, h)?,
                    o: proj(format!("{a}.o_proj"), h, qd)?,
                    gate: proj(format!("{m}.gate_proj"), i, h)?,
                    up: proj(format!("{m}.up_proj"), i, h)?,
                    down: proj(format!("{m}.down_proj"), h, i)?,
                    q_norm: if has_qk_norm {
                        Some(norm(&format!("{a}.q_norm.weight"), hd)?)
                    } else {
                        None
                    },
                    k_norm: if has_qk_norm {
                        Some(norm(&format!("{a}.k_norm.weight"), hd)?)
                    } else {
                        None
                    },
                    input_norm: norm(&format!("{p}.input_layernorm.weight"), h)?,
                    post_attn_norm: norm(&format!("{p}.post_attention_layernorm.weight"), h)?,
                    pre_ff_norm: if gemma {
                        Some(norm(&format!("{p}.pre_feedforward_layernorm.weight"), h)?)
                    } else {
                        None
                    },
                    post_ff_norm: if gemma {
                        Some(norm(&format!("{p}.post_feedforward_layernorm.weight"), h)?)
                    } else {
                        None
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_len = max_len.max(1);
        let global = rope_tables(&cfg.global_rope, hd, max_len)?;
        let local = rope_tables(&cfg.local_rope, hd, max_len)?;
        Ok(Decoder {
            norm: norm(&format!("{prefix}norm.weight"), h)?,
            cfg,
            embed,
            head,
            layers,
            max_len,
            global,
            local,
        })
    }

    /// Adds adapters of rank `r` to the `targets` projections of every layer: `A`
    /// uniform in ±1/sqrt(in) (PEFT's Kaiming-uniform with a = sqrt(5)) from `seed`,
    /// `B` zeros, scale `alpha / r`. Returns the adapters' variables (A then B per
    /// projection, layer by layer).
    pub fn add_adapters(
        &mut self,
        targets: &[String],
        r: usize,
        alpha: f64,
        seed: u64,
    ) -> candle_core::Result<Vec<Var>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut vars = Vec::new();
        for layer in &mut self.layers {
            for (module, p) in layer.projs_mut() {
                if !targets.iter().any(|t| t == module) {
                    continue;
                }
                let (out, inp) = p.w.dims2()?;
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..r * inp)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (r, inp), &Device::Cpu)?)?;
                let b = Var::zeros((out, r), DType::F32, &Device::Cpu)?;
                vars.push(a.clone());
                vars.push(b.clone());
                p.adapter = Some(Adapter {
                    a,
                    b,
                    scale: alpha / r as f64,
                });
            }
        }
        Ok(vars)
    }

    /// Every projection with an adapter.
    pub fn adapted(&self) -> Vec<&Proj> {
        self.layers
            .iter()
            .flat_map(|l| l.projs())
            .map(|(_, p)| p)
            .filter(|p| p.adapter.is_some())
            .collect()
    }

    /// Hidden states after the final norm, (batch, len, hidden), of `ids` (batch, len).
    pub fn hidden(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.max_len {
            candle_core::bail!("{t} tokens; the model was set up for {}", self.max_len);
        }
        let cfg = &self.cfg;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, cfg.hidden))?;
        if cfg.gemma() {
            x = (x * (cfg.hidden as f64).sqrt())?;
        }
        let mut masks: HashMap<Option<usize>, Tensor> = HashMap::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let window = cfg.windows[l];
            let mask = match masks.get(&window) {
                Some(m) => m.clone(),
                None => {
                    let m = causal_mask(t, window)?;
                    masks.insert(window, m.clone());
                    m
                }
            };
            let (cos, sin) = if cfg.gemma() && window.is_some() {
                &self.local
            } else {
                &self.global
            };
            let (cos, sin) = (cos.narrow(0, 0, t)?, sin.narrow(0, 0, t)?);
            x = self.layer(layer, &x, &mask, &cos, &sin)?;
        }
        rms_norm(&x, &self.norm, cfg.eps)
    }

    fn layer(
        &self,
        layer: &Layer,
        x: &Tensor,
        mask: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let h = rms_norm(x, &layer.input_norm, cfg.eps)?;
        let split = |y: Tensor, heads: usize| y.reshape((b, t, heads, cfg.head_dim));
        let mut q = split(layer.q.forward(&h)?, cfg.heads)?;
        let mut k = split(layer.k.forward(&h)?, cfg.kv_heads)?;
        let v = split(layer.v.forward(&h)?, cfg.kv_heads)?;
        if let Some(n) = &layer.q_norm {
            q = rms_norm(&q, n, cfg.eps)?;
        }
        if let Some(n) = &layer.k_norm {
            k = rms_norm(&k, n, cfg.eps)?;
        }
        let q = rope(&q.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let k = rope(&k.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let groups = cfg.heads / cfg.kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, groups)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, groups)?.contiguous()?;
        let mut w = (q.contiguous()?.matmul(&k.t()?)? * cfg.attn_scale)?;
        if let Some(cap) = cfg.attn_softcap {
            w = ((w / cap)?.tanh()? * cap)?;
        }
        let w = fused::softmax_last_dim(&w.broadcast_add(mask)?)?;
        let a = w
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, cfg.heads * cfg.head_dim))?;
        let a = layer.o.forward(&a)?;
        let act = |g: Tensor| match cfg.act {
            Act::Silu => g.silu(),
            Act::GeluTanh => g.gelu(),
            Act::Gelu => fused::gelu_erf(&g),
        };
        if cfg.gemma() {
            let x = (x + rms_norm(&a, &layer.post_attn_norm, cfg.eps)?)?;
            let pre = layer.pre_ff_norm.as_ref().expect("gemma norms");
            let post = layer.post_ff_norm.as_ref().expect("gemma norms");
            let h = rms_norm(&x, pre, cfg.eps)?;
            let ff = (act(layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            let ff = layer.down.forward(&ff)?;
            x + rms_norm(&ff, post, cfg.eps)?
        } else {
            let x = (x + a)?;
            let h = rms_norm(&x, &layer.post_attn_norm, cfg.eps)?;
            let ff = (act(layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x + layer.down.forward(&ff)?
        }
    }

    /// Logits (rows, vocab) of hidden states (rows, hidden).
    pub fn logits_of(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.head.as_ref().unwrap_or(&self.embed);
        let logits = frozen_matmul(hidden, w)?;
        match self.cfg.final_softcap {
            None => Ok(logits),
            Some(cap) => (logits / cap)?.tanh()? * cap,
        }
    }

    /// Logits (batch, len, vocab) of every position of `ids` (batch, len).
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.hidden(ids)?.reshape((b * t, self.cfg.hidden))?;
        self.logits_of(&h)?.reshape((b, t, self.cfg.vocab))
    }

    /// The merged weight of every adapted projection, by checkpoint tensor name.
    pub fn merged_weights(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        self.adapted()
            .into_iter()
            .map(|p| Ok((p.name.clone(), p.merged()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(family: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/decoders")
            .join(family)
    }

    use crate::finetune::ops::tests::max_diff;

    /// Gradients reach every adapter through every family's forward (none of the ops
    /// cuts them), and the loss moves when the adapters move.
    #[test]
    fn gradients_reach_the_adapters_of_every_family() {
        for family in ["llama", "mistral", "qwen2", "qwen3", "gemma3", "gemma3_swa"] {
            let mut m = Decoder::load(&fixture(family), 32).unwrap();
            let targets: Vec<String> = hub_types::jobs::LORA_MODULES
                .iter()
                .map(|s| s.to_string())
                .collect();
            let vars = m.add_adapters(&targets, 4, 8.0, 1).unwrap();
            assert_eq!(vars.len(), 2 * 7 * m.cfg.layers, "{family}");
            // B starts at zero: A's gradient is zero at the first step, B's is not.
            for ad in m.adapted() {
                let ad = ad.adapter.as_ref().unwrap();
                let ones = Tensor::ones(ad.b.dims().to_vec(), DType::F32, &Device::Cpu).unwrap();
                ad.b.set(&ones.affine(0.01, 0.0).unwrap()).unwrap();
            }
            let ids = Tensor::new(
                &[[1u32, 40, 77, 300, 12, 9], [1, 5, 6, 7, 8, 9]],
                &Device::Cpu,
            )
            .unwrap();
            let logits = m.forward(&ids).unwrap();
            let loss = logits.sqr().unwrap().mean_all().unwrap();
            let grads = loss.backward().unwrap();
            for v in &vars {
                let g = grads
                    .get(v)
                    .unwrap_or_else(|| panic!("{family}: a variable has no gradient"));
                let n = g
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(n > 0.0 && n.is_finite(), "{family}: gradient norm {n}");
            }
        }
    }

    /// Merging `W + alpha/r * B A` gives the same logits as the base plus the adapters.
    #[test]
    fn merged_weights_equal_the_adapted_forward() {
        for family in ["qwen2", "gemma3"] {
            let dir = fixture(family);
            let mut m = Decoder::load(&dir, 16).unwrap();
            let targets: Vec<String> = ["q_proj", "v_proj", "o_proj", "down_proj"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            m.add_adapters(&targets, 8, 16.0, 7).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            for p in m.adapted() {
                let ad = p.adapter.as_ref().unwrap();
                let n = ad.b.elem_count();
                let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.05..0.05)).collect();
                ad.b.set(&Tensor::from_vec(v, ad.b.dims().to_vec(), &Device::Cpu).unwrap())
                    .unwrap();
            }
            let ids = Tensor::new(&[[1u32, 40, 77, 300, 12, 9, 100, 200]], &Device::Cpu).unwrap();
            let adapted = m.forward(&ids).unwrap();
            let base = Decoder::load(&dir, 16).unwrap().forward(&ids).unwrap();
            assert!(
                max_diff(&adapted, &base) > 1e-2,
                "{family}: the adapters change the logits"
            );
            // The merged weights in a fresh base.
            let merged = m.merged_weights().unwrap();
            let mut fresh = Decoder::load(&dir, 16).unwrap();
            for layer in &mut fresh.layers {
                for (_, p) in layer.projs_mut() {
                    if let Some((_, w)) = merged.iter().find(|(n, _)| *n == p.name) {
                        p.w = w.clone();
                    }
                }
            }
            let d = max_diff(&fresh.forward(&ids).unwrap(), &adapted);
            assert!(d < 1e-4, "{family}: merged vs adapted logits differ by {d}");
        }
    }

    #[test]
    fn configs_of_other_families_are_refused() {
        let e = DecoderConfig::from_json(&serde_json::json!({"model_type": "gpt2"})).unwrap_err();
        assert!(e.to_string().contains("\"gpt2\""), "{e}");
        let c = serde_json::json!({"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
            "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 8,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        assert!(DecoderConfig::from_json(&c)
            .unwrap_err()
            .to_string()
            .contains("yarn"));
    }

    #[test]
    fn gemma_layers_take_their_window_and_rope_from_layer_types() {
        let text = std::fs::read_to_string(fixture("gemma3_swa").join("config.json")).unwrap();
        let c = DecoderConfig::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(c.windows, [Some(4), None]);
        assert_eq!(
            (c.global_rope.theta, c.local_rope.theta),
            (1_000_000.0, 10_000.0)
        );
        assert!(c.tied);
        let text = std::fs::read_to_string(fixture("gemma3_qscale").join("config.json")).unwrap();
        let c = DecoderConfig::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert!((c.attn_scale - 0.125).abs() < 1e-12);
    }
}
