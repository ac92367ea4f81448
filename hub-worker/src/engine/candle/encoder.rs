//! A BERT-family encoder in candle, shared by bert, roberta / xlm-roberta / camembert and
//! distilbert (post-LayerNorm transformer layers that differ only in tensor names,
//! position ids and token types). Written here rather than taken from
//! candle-transformers so that the layers can be fused the way TEI does (one QKV matmul,
//! the fused last-dim softmax, no mask for unpadded batches) and the classification heads
//! candle lacks can sit on top.

use crate::engine::backend::Batch;
use crate::engine::spec::{Activation, Arch, EncoderConfig};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

/// Finds which prefix (`bert.`, `roberta.`, none, ...) the checkpoint uses for `probe`.
pub fn find_prefix(vb: &VarBuilder, candidates: &[&str], probe: &str) -> Option<String> {
    candidates
        .iter()
        .find(|p| vb.contains_tensor(&format!("{p}{probe}")))
        .map(|p| p.to_string())
}

fn linear(vb: VarBuilder, out: usize, inp: usize) -> Result<Linear> {
    let w = vb.get((out, inp), "weight")?;
    let b = vb.get(out, "bias")?;
    Ok(Linear::new(w, Some(b)))
}

/// LayerNorm with `weight`/`bias`, or the `gamma`/`beta` names of old checkpoints.
fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    let (w, b) = if vb.contains_tensor("weight") {
        (vb.get(size, "weight")?, vb.get(size, "bias")?)
    } else {
        (vb.get(size, "gamma")?, vb.get(size, "beta")?)
    };
    Ok(LayerNorm::new(w, b, eps))
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
}

/// Names of one layer's tensors in each family.
pub(crate) struct LayerNames {
    pub(crate) q: &'static str,
    pub(crate) k: &'static str,
    pub(crate) v: &'static str,
    pub(crate) attn_out: &'static str,
    pub(crate) attn_norm: &'static str,
    pub(crate) ffn_in: &'static str,
    pub(crate) ffn_out: &'static str,
    pub(crate) out_norm: &'static str,
}

pub(crate) const BERT_NAMES: LayerNames = LayerNames {
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    out_norm: "output.LayerNorm",
};

pub(crate) const DISTILBERT_NAMES: LayerNames = LayerNames {
    q: "attention.q_lin",
    k: "attention.k_lin",
    v: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    out_norm: "output_layer_norm",
};

impl Layer {
    fn load(vb: VarBuilder, cfg: &EncoderConfig, n: &LayerNames) -> Result<Layer> {
        let h = cfg.hidden_size;
        let q = linear(vb.pp(n.q), h, h)?;
        let k = linear(vb.pp(n.k), h, h)?;
        let v = linear(vb.pp(n.v), h, h)?;
        let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let b = Tensor::cat(
            &[
                q.bias().expect("bias"),
                k.bias().expect("bias"),
                v.bias().expect("bias"),
            ],
            0,
        )?;
        Ok(Layer {
            qkv: Linear::new(w, Some(b)),
            attn_out: linear(vb.pp(n.attn_out), h, h)?,
            attn_norm: layer_norm(vb.pp(n.attn_norm), h, cfg.layer_norm_eps)?,
            ffn_in: linear(vb.pp(n.ffn_in), cfg.intermediate_size, h)?,
            ffn_out: linear(vb.pp(n.ffn_out), h, cfg.intermediate_size)?,
            out_norm: layer_norm(vb.pp(n.out_norm), h, cfg.layer_norm_eps)?,
        })
    }
}

/// The encoder stack: embeddings and transformer layers.
pub struct Encoder {
    cfg: EncoderConfig,
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

impl Encoder {
    /// Loads from `vb` positioned at the model prefix (`bert.`, `distilbert.`, or root).
    pub fn load(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Encoder> {
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let word = Embedding::new(emb.get((cfg.vocab_size, h), "word_embeddings.weight")?, h);
        let position = Embedding::new(
            emb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            h,
        );
        let token_type = if cfg.arch != Arch::DistilBert && cfg.type_vocab_size > 0 {
            Some(Embedding::new(
                emb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
                h,
            ))
        } else {
            None
        };
        let eps = if cfg.arch == Arch::DistilBert {
            1e-12
        } else {
            cfg.layer_norm_eps
        };
        let emb_norm = layer_norm(emb.pp("LayerNorm"), h, eps)?;
        let (stack, names) = match cfg.arch {
            Arch::DistilBert => (vb.pp("transformer.layer"), &DISTILBERT_NAMES),
            _ => (vb.pp("encoder.layer"), &BERT_NAMES),
        };
        let layers = (0..cfg.num_layers)
            .map(|i| Layer::load(stack.pp(i), cfg, names))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            cfg: cfg.clone(),
            word,
            position,
            token_type,
            emb_norm,
            layers,
            device: vb.device().clone(),
        })
    }

    fn position_ids(&self, batch: &Batch) -> Vec<u32> {
        let l = batch.max_len;
        match self.cfg.arch {
            // HF `create_position_ids_from_input_ids`: padding_idx + 1 + running count of
            // non-pad tokens; pad tokens get padding_idx.
            Arch::Roberta => {
                let pad = self.cfg.pad_token_id;
                let mut out = Vec::with_capacity(batch.input_ids.len());
                for row in batch.input_ids.chunks_exact(l.max(1)) {
                    let mut count = 0;
                    for id in row {
                        if *id == pad {
                            out.push(pad);
                        } else {
                            count += 1;
                            out.push(pad + count);
                        }
                    }
                }
                out
            }
            _ => (0..batch.size()).flat_map(|_| 0..l as u32).collect(),
        }
    }

    /// Last hidden states `(batch, max_len, hidden)`.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l, h) = (batch.size(), batch.max_len, self.cfg.hidden_size);
        let dev = &self.device;
        let ids = Tensor::from_slice(&batch.input_ids, (b * l,), dev)?;
        let pos = Tensor::from_vec(self.position_ids(batch), (b * l,), dev)?;
        let mut x = (self.word.forward(&ids)? + self.position.forward(&pos)?)?;
        if let Some(tt) = &self.token_type {
            let types = Tensor::from_slice(&batch.type_ids, (b * l,), dev)?;
            x = (x + tt.forward(&types)?)?;
        }
        let mut x = self.emb_norm.forward(&x)?; // (b*l, h)

        let mask = if batch.has_padding() {
            let bias: Vec<f32> = batch
                .attention_mask()
                .into_iter()
                .map(|m| if m == 1 { 0.0 } else { -1e9 })
                .collect();
            Some(Tensor::from_vec(bias, (b, 1, 1, l), dev)?)
        } else {
            None
        };
        let heads = self.cfg.num_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // (b*l, 3h)
            let split = |i: usize| -> Result<Tensor> {
                qkv.narrow(1, i * h, h)?
                    .reshape((b, l, heads, d))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = (split(0)? * scale)?;
            let k = split(1)?;
            let v = split(2)?;
            let mut scores = q.matmul(&k.t()?)?; // (b, heads, l, l)
            if let Some(m) = &mask {
                scores = scores.broadcast_add(m)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * l, h))?;
            let attn = layer.attn_out.forward(&ctx)?;
            let x1 = layer.attn_norm.forward(&(attn + &x)?)?;
            let ff = layer.ffn_in.forward(&x1)?;
            let ff = match self.cfg.activation {
                Activation::Gelu => ff.gelu_erf()?,
                Activation::GeluTanh => ff.gelu()?,
                Activation::Relu => ff.relu()?,
            };
            let ff = layer.ffn_out.forward(&ff)?;
            x = layer.out_norm.forward(&(ff + x1)?)?;
        }
        x.reshape((b, l, h))
    }
}

/// First-token (`[CLS]`) rows of the hidden states: `(batch, hidden)`.
pub fn first_token(hidden: &Tensor) -> Result<Tensor> {
    hidden.narrow(1, 0, 1)?.squeeze(1)?.contiguous()
}
