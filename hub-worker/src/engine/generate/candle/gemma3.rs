//! Gemma 3's text decoder, built from `candle_nn` parts, with transformers' attention masks.
//!
//! We do not run candle-transformers' `gemma3::Model` (0.11): its prefill mask keeps key
//! `j` for query `i` when `i - j <= W`, one position more than transformers'
//! `sliding_window_overlay` (`i - j < W`: W positions, the query included), so every prompt
//! longer than the window (512 tokens on Gemma-3-270M, 1024 on the larger ones) was
//! computed wrongly, and the mask function is private. Its rotating cache also returns only
//! the new chunk when W or more tokens arrive at an offset, dropping the past they need.
//! This model reads the same config (`gemma3::Config`, normalised by `candle::gemma3_config`)
//! and the same safetensors names; its masks come from absolute positions, so a prefill
//! may start at any offset (the engine prefills at 0, then adds one token per step).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{linear_b, Activation, Embedding, Linear, VarBuilder};
use candle_transformers::models::gemma3::Config;
use candle_transformers::utils::repeat_kv;
use std::sync::Arc;

/// Gemma's RMSNorm: `x / rms(x) * (1 + w)`, the `1 + w` computed once at load.
struct RmsNorm {
    scale: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let scale = (vb.get(dim, "weight")? + 1.0)?;
        Ok(Self {
            scale,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.scale, self.eps)
    }
}

/// cos/sin tables of one RoPE base, for positions `0..max_positions`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(base: f64, head_dim: usize, max_positions: usize, device: &Device) -> Result<Self> {
        // As transformers: inverse frequencies and their products in f32.
        let inv: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f64 / head_dim as f64) as f32)
            .collect();
        let half = inv.len();
        let freqs: Vec<f32> = (0..max_positions)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        let freqs = Tensor::from_vec(freqs, (max_positions, half), device)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// `x` is (batch, heads, len, head_dim), its first position at `offset`.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, len)?;
        let sin = self.sin.narrow(0, offset, len)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

/// A layer's keys and values: every position for global layers; the last `W - 1` for
/// sliding layers (all a later query can see, as it sees itself too).
enum Cache {
    Full(KvCache),
    Window {
        window: usize,
        kv: Option<(Tensor, Tensor)>,
    },
}

impl Cache {
    /// Positions held before this step.
    fn len(&self) -> usize {
        match self {
            Cache::Full(c) => c.current_seq_len(),
            Cache::Window { kv, .. } => kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0)),
        }
    }

    /// Past and new keys/values, in position order; keeps what later queries need.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            Cache::Full(c) => c.append(&k.contiguous()?, &v.contiguous()?),
            Cache::Window { window, kv } => {
                let (k, v) = match kv.take() {
                    None => (k.clone(), v.clone()),
                    Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
                };
                let len = k.dim(2)?;
                let keep = len.min(*window - 1);
                if keep > 0 {
                    *kv = Some((
                        k.narrow(2, len - keep, keep)?.contiguous()?,
                        v.narrow(2, len - keep, keep)?.contiguous()?,
                    ));
                }
                Ok((k, v))
            }
        }
    }

    fn reset(&mut self) {
        match self {
            Cache::Full(c) => c.reset(),
            Cache::Window { kv, .. } => *kv = None,
        }
    }
}

/// The additive mask (1, 1, len, past + len) for queries at `offset..offset + len` over
/// keys at `offset - past..offset + len`: key `j` is seen by query `i` when `j <= i` and,
/// with a window `W`, `i - j < W` (transformers' causal mask and `sliding_window_overlay`).
/// `None` when every key is seen.
fn mask(
    len: usize,
    past: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let first_key = offset - past;
    let seen = |i: usize, j: usize| j <= i && window.is_none_or(|w| i - j < w);
    let keys = past + len;
    let all = (offset..offset + len).all(|i| (first_key..first_key + keys).all(|j| seen(i, j)));
    if all {
        return Ok(None);
    }
    let values: Vec<f32> = (offset..offset + len)
        .flat_map(|i| {
            (first_key..first_key + keys).map(
                move |j| {
                    if seen(i, j) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                },
            )
        })
        .collect();
    Tensor::from_vec(values, (1, 1, len, keys), device).map(Some)
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    rope: Arc<Rope>,
    cache: Cache,
}

impl Attention {
    fn forward(&mut self, x: &Tensor, offset: usize, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| t.reshape((b, len, heads, self.head_dim));
        // Norms over head_dim before the transpose, while the rows are contiguous.
        let q = self
            .q_norm
            .forward(&split(self.q.forward(x)?, self.heads)?)?;
        let k = self
            .k_norm
            .forward(&split(self.k.forward(x)?, self.kv_heads)?)?;
        let v = split(self.v.forward(x)?, self.kv_heads)?;
        let q = self.rope.apply(&q.transpose(1, 2)?, offset)?;
        let k = self.rope.apply(&k.transpose(1, 2)?, offset)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = self.cache.append(&k, &v)?;
        let groups = self.heads / self.kv_heads;
        let k = repeat_kv(k, groups)?.contiguous()?;
        let v = repeat_kv(v, groups)?.contiguous()?;
        let mut w = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(cap) = self.softcap {
            w = ((w / cap)?.tanh()? * cap)?;
        }
        if let Some(mask) = mask {
            w = w.broadcast_add(mask)?;
        }
        let w = candle_nn::ops::softmax_last_dim(&w)?;
        w.matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, len, self.heads * self.head_dim))?
            .apply(&self.o)
    }
}

struct Layer {
    attn: Attention,
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
    input_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    post_ff_norm: RmsNorm,
    /// The sliding window of a local layer; `None` on a global one.
    window: Option<usize>,
}

impl Layer {
    fn new(cfg: &Config, window: Option<usize>, rope: Arc<Rope>, vb: VarBuilder) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let norm = |dim, name: &str| RmsNorm::new(dim, cfg.rms_norm_eps, vb.pp(name));
        let a = vb.pp("self_attn");
        let bias = cfg.attention_bias;
        let cache = match window {
            Some(window) => Cache::Window { window, kv: None },
            None => Cache::Full(KvCache::new(2, cfg.max_position_embeddings)),
        };
        let attn = Attention {
            q: linear_b(h, cfg.num_attention_heads * hd, bias, a.pp("q_proj"))?,
            k: linear_b(h, cfg.num_key_value_heads * hd, bias, a.pp("k_proj"))?,
            v: linear_b(h, cfg.num_key_value_heads * hd, bias, a.pp("v_proj"))?,
            o: linear_b(cfg.num_attention_heads * hd, h, bias, a.pp("o_proj"))?,
            q_norm: RmsNorm::new(hd, cfg.rms_norm_eps, a.pp("q_norm"))?,
            k_norm: RmsNorm::new(hd, cfg.rms_norm_eps, a.pp("k_norm"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            scale: 1.0 / (cfg.query_pre_attn_scalar as f64).sqrt(),
            softcap: cfg.attn_logit_softcapping,
            rope,
            cache,
        };
        let m = vb.pp("mlp");
        let i = cfg.intermediate_size;
        Ok(Self {
            attn,
            gate: linear_b(h, i, false, m.pp("gate_proj"))?,
            up: linear_b(h, i, false, m.pp("up_proj"))?,
            down: linear_b(i, h, false, m.pp("down_proj"))?,
            act: cfg.hidden_activation,
            input_norm: norm(h, "input_layernorm")?,
            post_attn_norm: norm(h, "post_attention_layernorm")?,
            pre_ff_norm: norm(h, "pre_feedforward_layernorm")?,
            post_ff_norm: norm(h, "post_feedforward_layernorm")?,
            window,
        })
    }

    fn forward(&mut self, x: &Tensor, offset: usize, mask: Option<&Tensor>) -> Result<Tensor> {
        let a = self
            .attn
            .forward(&self.input_norm.forward(x)?, offset, mask)?;
        let x = (x + self.post_attn_norm.forward(&a)?)?;
        let h = self.pre_ff_norm.forward(&x)?;
        let ff = (self.gate.forward(&h)?.apply(&self.act)? * self.up.forward(&h)?)?;
        let ff = self.down.forward(&ff)?;
        x + self.post_ff_norm.forward(&ff)?
    }
}

/// Gemma 3's text model with its KV caches; one sequence at a time.
pub struct Model {
    embed: Embedding,
    embed_scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    head: Linear,
    final_softcap: Option<f64>,
    window: usize,
    device: Device,
}

impl Model {
    /// Reads `model.*` (and `lm_head.weight` if present, else the tied embeddings) from
    /// `vb`. Layer `i` is local (sliding) unless `(i + 1) % sliding_window_pattern == 0`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.sliding_window == 0 || cfg.sliding_window_pattern == 0 {
            candle_core::bail!("gemma3 sliding_window and its pattern must be positive");
        }
        let device = vb.device().clone();
        let m = vb.pp("model");
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let positions = cfg.max_position_embeddings;
        let global = Arc::new(Rope::new(cfg.rope_theta, cfg.head_dim, positions, &device)?);
        let local = Arc::new(Rope::new(
            cfg.rope_local_base_freq,
            cfg.head_dim,
            positions,
            &device,
        )?);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let sliding = (i + 1) % cfg.sliding_window_pattern > 0;
                let (window, rope) = if sliding {
                    (Some(cfg.sliding_window), local.clone())
                } else {
                    (None, global.clone())
                };
                Layer::new(cfg, window, rope, m.pp("layers").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let head = if vb.contains_tensor("lm_head.weight") {
            linear_b(cfg.hidden_size, cfg.vocab_size, false, vb.pp("lm_head"))?
        } else {
            Linear::new(embed.embeddings().clone(), None)
        };
        Ok(Self {
            embed,
            embed_scale: (cfg.hidden_size as f64).sqrt(),
            layers,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?,
            head,
            final_softcap: cfg.final_logit_softcapping,
            window: cfg.sliding_window,
            device,
        })
    }

    /// Logits (batch, 1, vocab) of the last of `ids` (batch 1, shape (1, len)), whose first
    /// token is at position `offset`: the caches must hold exactly the positions before it.
    pub fn forward(&mut self, ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let past_full = offset;
        let past_window = offset.min(self.window - 1);
        for layer in &self.layers {
            let want = match layer.window {
                Some(_) => past_window,
                None => past_full,
            };
            if layer.attn.cache.len() != want {
                candle_core::bail!(
                    "gemma3: the KV cache holds {} positions, offset {offset} needs {want}",
                    layer.attn.cache.len()
                );
            }
        }
        let full_mask = mask(len, past_full, offset, None, &self.device)?;
        let window_mask = mask(len, past_window, offset, Some(self.window), &self.device)?;
        let mut x = (self.embed.forward(ids)? * self.embed_scale)?;
        for layer in &mut self.layers {
            let m = match layer.window {
                Some(_) => window_mask.as_ref(),
                None => full_mask.as_ref(),
            };
            x = layer.forward(&x, offset, m)?;
        }
        let logits = self
            .norm
            .forward(&x.narrow(1, len - 1, 1)?)?
            .apply(&self.head)?;
        match self.final_softcap {
            None => Ok(logits),
            Some(cap) => (logits / cap)?.tanh()? * cap,
        }
    }

    /// Empties every layer's cache for the next sequence.
    pub fn clear_kv_cache(&mut self) {
        for layer in &mut self.layers {
            layer.attn.cache.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(m: Option<Tensor>, len: usize, keys: usize) -> Vec<Vec<bool>> {
        match m {
            None => vec![vec![true; keys]; len],
            Some(m) => m
                .squeeze(0)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .into_iter()
                .map(|row| row.into_iter().map(|v| v == 0.0).collect())
                .collect(),
        }
    }

    #[test]
    fn sliding_mask_keeps_window_positions_query_included() {
        let dev = Device::Cpu;
        // Prefill of 6 at 0, window 3: query i sees i-2..=i.
        let rows = seen(mask(6, 0, 0, Some(3), &dev).unwrap(), 6, 6);
        for (i, row) in rows.iter().enumerate() {
            let want: Vec<bool> = (0..6).map(|j| j <= i && i - j < 3).collect();
            assert_eq!(row, &want, "query {i}");
        }
        // A chunk of 4 at offset 10 over the 2 cached positions 8, 9.
        let rows = seen(mask(4, 2, 10, Some(3), &dev).unwrap(), 4, 6);
        for (a, row) in rows.iter().enumerate() {
            let i = 10 + a;
            let want: Vec<bool> = (8..14).map(|j| j <= i && i - j < 3).collect();
            assert_eq!(row, &want, "query {i}");
        }
        // One token over a full window cache needs no mask.
        assert!(mask(1, 2, 10, Some(3), &dev).unwrap().is_none());
        assert!(mask(1, 10, 10, None, &dev).unwrap().is_none());
    }

    /// The gemma3_swa test fixture (sliding window 4): its config as the engine reads it
    /// and a fresh view of its weights.
    fn fixture() -> (Config, impl Fn() -> VarBuilder<'static>, serde_json::Value) {
        use super::super::{gemma3_config, map_weights, normalize_rope};
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/decoders/gemma3_swa");
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
        };
        let c = gemma3_config(&normalize_rope(&read("config.json"), "gemma3").unwrap()).unwrap();
        let cfg: Config = serde_json::from_value(c).unwrap();
        assert_eq!(cfg.sliding_window, 4);
        let expected = read("expected.json");
        let file = dir.join("model.safetensors");
        (
            cfg,
            move || {
                let mapped = map_weights(std::slice::from_ref(&file)).unwrap();
                VarBuilder::from_backend(Box::new(mapped), candle_core::DType::F32, Device::Cpu)
            },
            expected,
        )
    }

    /// Greedy ids: `prompt` in one pass at 0, then one token per step.
    fn greedy(
        mut step: impl FnMut(&Tensor, usize) -> Result<Tensor>,
        prompt: &[u32],
        n: usize,
    ) -> Vec<u32> {
        let (mut input, mut pos, mut out) = (prompt.to_vec(), 0, Vec::new());
        for _ in 0..n {
            let t = Tensor::new(input.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits: Vec<f32> = step(&t, pos)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            pos += input.len();
            let id = super::super::argmax(&logits);
            out.push(id);
            input = vec![id];
        }
        out
    }

    /// Why this model exists: with a window shorter than the prompts, candle-transformers'
    /// gemma3 does not reproduce transformers' greedy ids (its prefill keeps W+1 positions);
    /// this model does. Should the first half fail after a candle upgrade, candle's mask
    /// may be right again.
    #[test]
    fn candle_transformers_gemma3_misses_the_window_this_model_does_not() {
        let (cfg, weights, expected) = fixture();
        let mut candle_wrong = 0;
        for case in expected["cases"].as_array().unwrap() {
            let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
            let mut ours = Model::new(&cfg, weights()).unwrap();
            let got = greedy(|t, p| ours.forward(t, p), &prompt, want.len());
            assert_eq!(got, want, "this model, prompt {prompt:?}");
            let mut theirs =
                candle_transformers::models::gemma3::Model::new(false, &cfg, weights()).unwrap();
            if greedy(|t, p| theirs.forward(t, p), &prompt, want.len()) != want {
                candle_wrong += 1;
            }
        }
        assert!(
            candle_wrong > 0,
            "candle-transformers' gemma3 now matches transformers with a short window"
        );
    }

    /// A prompt run in one pass, in chunks at offsets (one longer than the window), and
    /// token by token gives the same logits: the masks and the window cache agree.
    #[test]
    fn chunked_prefill_matches_one_pass() {
        let (cfg, weights, _) = fixture();
        let mut model = Model::new(&cfg, weights()).unwrap();
        let ids: Vec<u32> = (1..12).map(|i| i * 37 % 500).collect();
        let mut run = |splits: &[usize]| -> Vec<f32> {
            model.clear_kv_cache();
            let mut start = 0;
            let mut logits = None;
            for &end in splits {
                let chunk = Tensor::new(&ids[start..end], &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                logits = Some(model.forward(&chunk, start).unwrap());
                start = end;
            }
            logits.unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        let whole = run(&[11]);
        for splits in [vec![3, 11], vec![2, 7, 11], (1..=11).collect::<Vec<_>>()] {
            let got = run(&splits);
            let diff = whole
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "splits {splits:?}: logits differ by {diff}");
        }
        // Offsets the caches do not hold are refused, not run wrongly.
        let one = Tensor::new(&ids[..1], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        assert!(model.forward(&one, 3).is_err());
    }
}
