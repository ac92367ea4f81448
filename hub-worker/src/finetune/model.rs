//! A BERT encoder, with a sequence-classification head or pooled into sentence
//! embeddings, whose weights are candle `Var`s, so the whole model trains. Layer
//! norm, attention softmax and the erf GELU are `fused` ops (one pass each way;
//! candle-nn's fused kernels have no backward pass), the rest candle's own ops.
//! A classifier is saved with `BertForSequenceClassification`'s tensor names
//! (`bert.` + `classifier.`), an encoder with the base model's own (a
//! sentence-transformers repo's `BertModel` names have no prefix): what the
//! serving engines load.

use super::fused;
use crate::engine::pooling::PoolingMode;
use crate::engine::spec::{Activation, Arch, ModelSpec};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Why a base model cannot be trained.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("fine-tuning supports BERT models (model_type bert); this one is {0:?}")]
    Architecture(String),
    #[error("the base model has no safetensors weights")]
    NoWeights,
    #[error("the weights have no tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {got:?}, expected {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("fine-tuning pools sentence embeddings by mean, CLS or mean_sqrt_len (one mode); the base model's sentence-transformers pooling is {0:?}")]
    Pooling(Vec<PoolingMode>),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

/// A trainable BERT model: a classifier (encoder, pooler and a new head) or a
/// sentence encoder (the base model's weights, pooled by [`Bert::embed`]).
pub struct Bert {
    vars: HashMap<String, Var>,
    /// Names in a stable order (for the optimizer and the saved file).
    names: Vec<String>,
    spec: ModelSpec,
    /// Classes of the head; `None` for a sentence encoder.
    num_labels: Option<usize>,
    /// The base model's tensor-name prefix (`bert.` or none), kept by an encoder.
    base_prefix: &'static str,
}

/// The name the training used for a text classifier.
pub type Classifier = Bert;

/// Normal(0, std) values from a seeded generator (Box-Muller), as the HF
/// initialiser draws a new head (`initializer_range`, 0.02).
fn normal(rng: &mut rand::rngs::StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

fn layer_names(i: usize) -> Vec<(String, bool)> {
    let p = format!("encoder.layer.{i}.");
    [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ]
    .iter()
    .map(|n| (format!("{p}{n}"), n.ends_with("LayerNorm")))
    .collect()
}

impl Bert {
    /// Loads the encoder (and pooler) of `spec` and draws a new `num_labels`-way head
    /// from `seed`. A head the base model already has is replaced: its labels are not
    /// the dataset's.
    pub fn load(spec: &ModelSpec, num_labels: usize, seed: u64) -> Result<Self, ModelError> {
        Self::load_with(spec, Some(num_labels), seed)
    }

    /// Loads the encoder of `spec` (and its pooler, if it has one, which is saved
    /// unchanged) for sentence embeddings.
    pub fn load_encoder(spec: &ModelSpec) -> Result<Self, ModelError> {
        Self::load_with(spec, None, 0)
    }

    fn load_with(
        spec: &ModelSpec,
        num_labels: Option<usize>,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if spec.encoder.arch != Arch::Bert {
            return Err(ModelError::Architecture(spec.model_type.clone()));
        }
        if spec.safetensors.is_empty() {
            return Err(ModelError::NoWeights);
        }
        let mut raw: HashMap<String, Tensor> = HashMap::new();
        for f in &spec.safetensors {
            // Reads the file (safetensors only: a header and raw tensors, nothing runs).
            raw.extend(candle_core::safetensors::load(f, &Device::Cpu)?);
        }
        let prefix = if raw.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let c = &spec.encoder;
        let h = c.hidden_size;
        let mut want: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![c.vocab_size, h],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![c.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![c.type_vocab_size.max(1), h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for i in 0..c.num_layers {
            for (name, norm) in layer_names(i) {
                let (out, inp) = if name.ends_with("intermediate.dense") {
                    (c.intermediate_size, h)
                } else if name.ends_with(".output.dense") && !name.contains("attention") {
                    (h, c.intermediate_size)
                } else {
                    (h, h)
                };
                if norm {
                    want.push((format!("{name}.weight"), vec![h]));
                    want.push((format!("{name}.bias"), vec![h]));
                } else {
                    want.push((format!("{name}.weight"), vec![out, inp]));
                    want.push((format!("{name}.bias"), vec![out]));
                }
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut vars = HashMap::new();
        let mut names = Vec::new();
        let mut put = |name: String, t: Tensor, want: &[usize]| -> Result<(), ModelError> {
            if t.dims() != want {
                return Err(ModelError::Shape {
                    name,
                    got: t.dims().to_vec(),
                    want: want.to_vec(),
                });
            }
            let t = t.to_dtype(DType::F32)?.contiguous()?;
            vars.insert(name.clone(), Var::from_tensor(&t)?);
            names.push(name);
            Ok(())
        };
        // Old checkpoints spell LayerNorm weights gamma/beta.
        let find = |raw: &HashMap<String, Tensor>, name: &str| -> Option<Tensor> {
            let full = format!("{prefix}{name}");
            raw.get(&full).cloned().or_else(|| {
                let old = full
                    .strip_suffix("LayerNorm.weight")
                    .map(|s| format!("{s}LayerNorm.gamma"))
                    .or_else(|| {
                        full.strip_suffix("LayerNorm.bias")
                            .map(|s| format!("{s}LayerNorm.beta"))
                    })?;
                raw.get(&old).cloned()
            })
        };
        for (name, shape) in &want {
            let t =
                find(&raw, name).ok_or_else(|| ModelError::Missing(format!("{prefix}{name}")))?;
            put(format!("bert.{name}"), t, shape)?;
        }
        // The pooler: the base model's, else (for a classifier) a new one (like HF's
        // initialiser).
        match (
            find(&raw, "pooler.dense.weight"),
            find(&raw, "pooler.dense.bias"),
        ) {
            (Some(w), Some(b)) => {
                put("bert.pooler.dense.weight".into(), w, &[h, h])?;
                put("bert.pooler.dense.bias".into(), b, &[h])?;
            }
            _ if num_labels.is_none() => {}
            _ => {
                let w = Tensor::from_vec(normal(&mut rng, h * h, 0.02), (h, h), &Device::Cpu)?;
                put("bert.pooler.dense.weight".into(), w, &[h, h])?;
                put(
                    "bert.pooler.dense.bias".into(),
                    Tensor::zeros(h, DType::F32, &Device::Cpu)?,
                    &[h],
                )?;
            }
        }
        if let Some(num_labels) = num_labels {
            let w = Tensor::from_vec(
                normal(&mut rng, num_labels * h, 0.02),
                (num_labels, h),
                &Device::Cpu,
            )?;
            put("classifier.weight".into(), w, &[num_labels, h])?;
            put(
                "classifier.bias".into(),
                Tensor::zeros(num_labels, DType::F32, &Device::Cpu)?,
                &[num_labels],
            )?;
        }
        Ok(Bert {
            vars,
            names,
            spec: spec.clone(),
            num_labels,
            base_prefix: prefix,
        })
    }

    /// The number of classes (0 for a sentence encoder).
    pub fn num_labels(&self) -> usize {
        self.num_labels.unwrap_or(0)
    }

    /// The base model's description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn t(&self, name: &str) -> candle_core::Result<Tensor> {
        self.vars
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter {name}")))
    }

    fn linear(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let w = self.t(&format!("{name}.weight"))?;
        let b = self.t(&format!("{name}.bias"))?;
        fused::bias_add(&x.matmul(&w.t()?)?, &b)
    }

    /// Layer norm over the last dimension (one fused op, forward and backward).
    fn layer_norm(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let w = self.t(&format!("{name}.weight"))?;
        let b = self.t(&format!("{name}.bias"))?;
        fused::layer_norm(x, &w, &b, self.spec.encoder.layer_norm_eps)
    }

    /// Logits `(batch, num_labels)` for token ids `(batch, len)` (row-major, padded
    /// with the pad id; `lengths` are the real lengths).
    pub fn forward(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        lengths: &[usize],
        len: usize,
    ) -> candle_core::Result<Tensor> {
        let (b, h) = (lengths.len(), self.spec.encoder.hidden_size);
        let x = self.hidden_states(ids, type_ids, lengths, len)?;
        let cls = x
            .reshape((b, len, h))?
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .contiguous()?;
        let pooled = self.linear(&cls, "bert.pooler.dense")?.tanh()?;
        self.linear(&pooled, "classifier")
    }

    /// Unit-length sentence embeddings `(batch, hidden)`, pooled over the real
    /// tokens like sentence-transformers' `Pooling` module, then L2-normalised.
    pub fn embed(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        lengths: &[usize],
        len: usize,
        pooling: PoolingMode,
    ) -> candle_core::Result<Tensor> {
        let (b, h) = (lengths.len(), self.spec.encoder.hidden_size);
        let x = self
            .hidden_states(ids, type_ids, lengths, len)?
            .reshape((b, len, h))?;
        let pooled = match pooling {
            PoolingMode::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            PoolingMode::Max => {
                return Err(candle_core::Error::Msg("max pooling is not trained".into()))
            }
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                let keep: Vec<f32> = lengths
                    .iter()
                    .flat_map(|n| (0..len).map(move |j| if j < *n { 1.0 } else { 0.0 }))
                    .collect();
                let keep = Tensor::from_vec(keep, (b, len, 1), &Device::Cpu)?;
                let sum = x.broadcast_mul(&keep)?.sum(1)?;
                let div: Vec<f32> = lengths
                    .iter()
                    .map(|n| {
                        let n = (*n).max(1) as f32;
                        if pooling == PoolingMode::Mean {
                            n
                        } else {
                            n.sqrt()
                        }
                    })
                    .collect();
                sum.broadcast_div(&Tensor::from_vec(div, (b, 1), &Device::Cpu)?)?
            }
        };
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        pooled.broadcast_div(&norm)
    }

    /// The pooling a sentence encoder trains with: the base model's
    /// sentence-transformers `Pooling` module (one mode: mean, CLS or mean_sqrt_len),
    /// else mean pooling, which the serving engine also falls back to.
    pub fn training_pooling(spec: &ModelSpec) -> Result<PoolingMode, ModelError> {
        match spec.pooling().as_slice() {
            [m @ (PoolingMode::Mean | PoolingMode::Cls | PoolingMode::MeanSqrtLen)] => Ok(*m),
            other => Err(ModelError::Pooling(other.to_vec())),
        }
    }

    /// The last layer's hidden states `(batch * len, hidden)`.
    fn hidden_states(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        lengths: &[usize],
        len: usize,
    ) -> candle_core::Result<Tensor> {
        let c = &self.spec.encoder;
        let (b, l, h) = (lengths.len(), len, c.hidden_size);
        let dev = Device::Cpu;
        let ids_t = Tensor::from_slice(ids, (b * l,), &dev)?;
        let types_t = Tensor::from_slice(type_ids, (b * l,), &dev)?;
        let pos: Vec<u32> = (0..b).flat_map(|_| 0..l as u32).collect();
        let pos_t = Tensor::from_vec(pos, (b * l,), &dev)?;
        let x = (self
            .t("bert.embeddings.word_embeddings.weight")?
            .index_select(&ids_t, 0)?
            + self
                .t("bert.embeddings.position_embeddings.weight")?
                .index_select(&pos_t, 0)?)?;
        let x = (x + self
            .t("bert.embeddings.token_type_embeddings.weight")?
            .index_select(&types_t, 0)?)?;
        let mut x = self.layer_norm(&x, "bert.embeddings.LayerNorm")?;
        let mask = if lengths.iter().any(|n| *n < l) {
            let bias: Vec<f32> = lengths
                .iter()
                .flat_map(|n| (0..l).map(move |j| if j < *n { 0.0 } else { -1e9 }))
                .collect();
            Some(Tensor::from_vec(bias, (b, 1, 1, l), &dev)?)
        } else {
            None
        };
        let heads = c.num_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        for i in 0..c.num_layers {
            let p = format!("bert.encoder.layer.{i}.");
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, l, heads, d))?.transpose(1, 2)?.contiguous()
            };
            let q = (split(self.linear(&x, &format!("{p}attention.self.query"))?)? * scale)?;
            let k = split(self.linear(&x, &format!("{p}attention.self.key"))?)?;
            let v = split(self.linear(&x, &format!("{p}attention.self.value"))?)?;
            let mut scores = q.matmul(&k.t()?.contiguous()?)?;
            if let Some(m) = &mask {
                scores = scores.broadcast_add(m)?;
            }
            let probs = fused::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * l, h))?;
            let attn = self.linear(&ctx, &format!("{p}attention.output.dense"))?;
            let x1 = self.layer_norm(&(attn + &x)?, &format!("{p}attention.output.LayerNorm"))?;
            let ff = self.linear(&x1, &format!("{p}intermediate.dense"))?;
            let ff = match c.activation {
                Activation::Gelu => fused::gelu_erf(&ff)?,
                Activation::GeluTanh => ff.gelu()?,
                Activation::Relu => ff.relu()?,
            };
            let ff = self.linear(&ff, &format!("{p}output.dense"))?;
            x = self.layer_norm(&(ff + x1)?, &format!("{p}output.LayerNorm"))?;
        }
        Ok(x)
    }

    /// The parameters: (decayed, not decayed). Like HF's Trainer, biases and
    /// LayerNorm weights get no weight decay. A sentence encoder's pooler is not
    /// trained (mean pooling never reads it).
    pub fn param_groups(&self) -> (Vec<Var>, Vec<Var>) {
        let mut decay = Vec::new();
        let mut none = Vec::new();
        for n in &self.names {
            if self.num_labels.is_none() && n.starts_with("bert.pooler.") {
                continue;
            }
            let v = self.vars[n].clone();
            if n.ends_with(".bias") || n.contains("LayerNorm") {
                none.push(v);
            } else {
                decay.push(v);
            }
        }
        (decay, none)
    }

    /// Writes the weights as one safetensors file.
    pub fn save(&self, path: &std::path::Path) -> candle_core::Result<()> {
        let name = |n: &String| match (self.num_labels, n.strip_prefix("bert.")) {
            (None, Some(rest)) => format!("{}{rest}", self.base_prefix),
            _ => n.clone(),
        };
        let map: HashMap<String, Tensor> = self
            .names
            .iter()
            .map(|n| (name(n), self.vars[n].as_tensor().detach()))
            .collect();
        candle_core::safetensors::save(&map, path)
    }

    /// Bytes of parameters.
    pub fn parameter_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }
}
