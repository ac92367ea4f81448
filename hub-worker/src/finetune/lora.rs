//! The training loop of a causal-LM LoRA job: the dataset's rows as token ids with a
//! label mask (completion tokens of prompt/completion rows, assistant turns of chat rows
//! rendered with the base model's chat template, every token of text rows), the frozen
//! base in f32 with adapters on the chosen projections (`decoder`), the causal-LM loss
//! on the labelled tokens only, AdamW on the adapters only (linear warm-up then decay,
//! seeded shuffling). The test split is measured before and after: mean token loss and
//! perplexity, and for prompt/completion and chat rows the exact-match rate of greedy
//! completions. The result is the merged model (`W + alpha/r * B A`, the base's dtype
//! and tensor names) with the base's config, generation config, tokenizer and chat
//! template, plus the adapter in PEFT's layout under `adapter/`.

use super::data::{ChatTurn, DataError, SftRow};
use super::decoder::{self, Decoder};
use super::optim::{AdamW, Params};
use super::train::{check_deadline, learning_rate, Control, TrainError, TrainOutput};
use crate::engine::generate::candle::{eos_ids, token_ids};
use crate::engine::generate::template::{repo_templates, special_token, ChatTemplate};
use candle_core::{DType, Device, Tensor};
use hub_types::jobs::Hyperparameters;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

/// Test rows whose greedy completion is compared (each costs a forward pass per
/// generated token: there is no KV cache in the training forward).
pub const MAX_EXACT_MATCH_ROWS: usize = 64;
/// Tokens a greedy completion may run past its reference's length.
const EXTRA_TOKENS: usize = 8;

/// Files copied from the base model when it has them.
pub const COPIED_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
];

/// A LoRA job's inputs, already fetched.
pub struct LoraInput<'a> {
    /// The pulled base model's folder.
    pub base_dir: &'a Path,
    /// `namespace/name` and commit of the base (for the adapter's config).
    pub base_repo: &'a str,
    pub base_revision: &'a str,
    pub train: Vec<SftRow>,
    pub test: Vec<SftRow>,
    pub hp: &'a Hyperparameters,
    /// When the wall-time limit is reached, and the limit in seconds.
    pub deadline: Instant,
    pub max_wall_seconds: u64,
}

/// One row as token ids: `target[i]` says whether token `i` is learned (predicted
/// from the tokens before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub target: Vec<bool>,
}

/// A prompt and the reference completion, for exact match.
#[derive(Debug, Clone)]
struct Probe {
    prompt: Vec<u32>,
    reference: String,
}

/// What the rows need from the base model's tokenizer and template.
pub struct Codec {
    tok: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    /// Appended to completions and texts (the model learns to stop).
    eos: Option<u32>,
    /// Every id that ends a greedy completion.
    stop_ids: Vec<u32>,
    pad: u32,
}

fn read_json(path: &Path) -> Option<Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn tok_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
}

impl Codec {
    /// Reads `tokenizer.json`, the chat template and the special tokens of `dir`.
    pub fn load(dir: &Path) -> Result<Codec, TrainError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TrainError::Tokenizer(
                "the base model has no tokenizer.json".into(),
            ));
        }
        let mut tok = tokenizers::Tokenizer::from_file(&path).map_err(tok_err)?;
        crate::engine::tokenize::check_tokenizer(&tok).map_err(TrainError::Tokenizer)?;
        tok.with_truncation(None).map_err(tok_err)?;
        tok.with_padding(None);
        let config = read_json(&dir.join("config.json")).unwrap_or(Value::Null);
        let tok_config = read_json(&dir.join("tokenizer_config.json")).unwrap_or(Value::Null);
        let gen_config = read_json(&dir.join("generation_config.json")).unwrap_or(Value::Null);
        let templates = repo_templates(dir, &tok_config)
            .map_err(|e| TrainError::ChatTemplate(e.to_string()))?;
        let template = match &templates.default {
            Some(src) => Some(
                ChatTemplate::new(
                    src,
                    templates.bos_token.as_deref(),
                    templates.eos_token.as_deref(),
                )
                .map_err(|e| TrainError::ChatTemplate(e.to_string()))?,
            ),
            None => None,
        };
        // Greedy completions stop where the serving engine's would.
        let stop_ids = eos_ids(&config, Some(&gen_config), &tok_config, &tok);
        let tok_eos = special_token(&tok_config, "eos_token").and_then(|t| tok.token_to_id(&t));
        let eos = tok_eos.or_else(|| {
            token_ids(gen_config.get("eos_token_id"))
                .into_iter()
                .chain(token_ids(config.get("eos_token_id")))
                .next()
        });
        let pad = config
            .get("pad_token_id")
            .and_then(Value::as_u64)
            .map(|p| p as u32)
            .or(eos)
            .unwrap_or(0);
        Ok(Codec {
            tok,
            template,
            eos,
            stop_ids,
            pad,
        })
    }

    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TrainError> {
        Ok(self
            .tok
            .encode(text, special)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    fn render(
        &self,
        turns: &[ChatTurn],
        add_generation_prompt: bool,
    ) -> Result<String, TrainError> {
        let t = self.template.as_ref().ok_or_else(|| {
            TrainError::ChatTemplate(
                "the base model has no chat template (chat_template.jinja or tokenizer_config.json's \
                 chat_template); a dataset of messages needs one"
                    .into(),
            )
        })?;
        let messages = serde_json::to_string(turns).expect("turns serialize");
        t.render(&messages, None, add_generation_prompt, None)
            .map_err(|e| TrainError::ChatTemplate(e.to_string()))
    }

    /// The conversation's text cut into (text, learned) pieces: each assistant turn is
    /// the text its message adds after the template's generation prompt (its end-of-turn
    /// marker included). Fails when the template does not render a conversation as the
    /// extension of its beginnings.
    fn chat_pieces(&self, turns: &[ChatTurn]) -> Result<Vec<(String, bool)>, TrainError> {
        let full = self.render(turns, false)?;
        let mut pieces = Vec::new();
        let mut at = 0usize;
        for (k, t) in turns.iter().enumerate() {
            if t.role != "assistant" {
                continue;
            }
            let before = self.render(&turns[..k], true)?;
            let through = self.render(&turns[..=k], false)?;
            let consistent = before.len() >= at
                && through.starts_with(&before)
                && full.starts_with(&through)
                && full.get(at..before.len()).is_some();
            if !consistent {
                return Err(TrainError::ChatTemplate(
                    "the chat template does not render a conversation as the extension of its \
                     earlier turns, so the assistant turns cannot be found in it; use \
                     prompt/completion rows instead"
                        .into(),
                ));
            }
            pieces.push((full[at..before.len()].to_string(), false));
            pieces.push((full[before.len()..through.len()].to_string(), true));
            at = through.len();
        }
        pieces.push((full[at..].to_string(), false));
        Ok(pieces)
    }

    /// A row as ids and label mask, at most `max_len` tokens.
    pub fn encode_row(&self, row: &SftRow, max_len: usize) -> Result<Encoded, TrainError> {
        let mut e = Encoded {
            ids: Vec::new(),
            target: Vec::new(),
        };
        let mut push = |ids: Vec<u32>, learned: bool| {
            e.target.extend(std::iter::repeat_n(learned, ids.len()));
            e.ids.extend(ids);
        };
        match row {
            SftRow::Completion { prompt, completion } => {
                push(self.encode(prompt, true)?, false);
                push(self.encode(completion, false)?, true);
                push(self.eos.into_iter().collect(), true);
            }
            SftRow::Text(text) => {
                push(self.encode(text, true)?, true);
                push(self.eos.into_iter().collect(), true);
            }
            SftRow::Chat(turns) => {
                for (text, learned) in self.chat_pieces(turns)? {
                    if !text.is_empty() {
                        push(self.encode(&text, false)?, learned);
                    }
                }
            }
        }
        e.ids.truncate(max_len);
        e.target.truncate(max_len);
        Ok(e)
    }

    /// The prompt and reference answer of a row, for exact match (none for text).
    fn probe(&self, row: &SftRow) -> Result<Option<Probe>, TrainError> {
        Ok(match row {
            SftRow::Completion { prompt, completion } => Some(Probe {
                prompt: self.encode(prompt, true)?,
                reference: completion.clone(),
            }),
            SftRow::Chat(turns) => {
                let last = turns
                    .iter()
                    .rposition(|t| t.role == "assistant")
                    .expect("chat rows have an assistant turn");
                let text = self.render(&turns[..last], true)?;
                Some(Probe {
                    prompt: self.encode(&text, false)?,
                    reference: turns[last].content.clone(),
                })
            }
            SftRow::Text(_) => None,
        })
    }
}

/// Positions that carry a loss: token `i + 1` predicted from position `i`.
fn learned_positions(e: &Encoded) -> usize {
    e.target.iter().skip(1).filter(|t| **t).count()
}

/// The mean causal-LM loss of a batch of rows (right-padded), over their learned
/// tokens, and how many tokens that is.
pub fn batch_loss(
    model: &Decoder,
    rows: &[&Encoded],
    pad: u32,
) -> candle_core::Result<(Tensor, usize)> {
    let len = rows.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut at = Vec::new();
    let mut targets = Vec::new();
    for (r, e) in rows.iter().enumerate() {
        ids.extend_from_slice(&e.ids);
        ids.extend(std::iter::repeat_n(pad, len - e.ids.len()));
        for i in 0..e.ids.len().saturating_sub(1) {
            if e.target[i + 1] {
                at.push((r * len + i) as u32);
                targets.push(e.ids[i + 1]);
            }
        }
    }
    let n = targets.len();
    let ids = Tensor::from_vec(ids, (rows.len(), len), &Device::Cpu)?;
    let hidden = model
        .hidden(&ids)?
        .reshape((rows.len() * len, model.cfg.hidden))?;
    let at = Tensor::from_vec(at, (n,), &Device::Cpu)?;
    let logits = model.logits_of(&hidden.index_select(&at, 0)?)?;
    let targets = Tensor::from_vec(targets, (n,), &Device::Cpu)?;
    Ok((candle_nn::loss::cross_entropy(&logits, &targets)?, n))
}

/// Greedy ids after `prompt`, until a stop id or `max_new` tokens.
pub fn greedy(
    model: &Decoder,
    prompt: &[u32],
    max_new: usize,
    stop_ids: &[u32],
    max_len: usize,
) -> candle_core::Result<Vec<u32>> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_new && seq.len() < max_len {
        let ids = Tensor::new(seq.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let h = model.hidden(&ids)?;
        let last = h.narrow(1, seq.len() - 1, 1)?.squeeze(0)?;
        let logits = model.logits_of(&last)?.squeeze(0)?.to_vec1::<f32>()?;
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        let id = best as u32;
        if stop_ids.contains(&id) {
            break;
        }
        out.push(id);
        seq.push(id);
    }
    Ok(out)
}

/// The test split's measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eval {
    /// Mean loss per learned token.
    pub loss: f64,
    pub perplexity: f64,
    /// Fraction of probed rows whose greedy completion is the reference (trimmed);
    /// `None` for text rows.
    pub exact_match: Option<f64>,
}

struct Run<'a> {
    input: &'a LoraInput<'a>,
    codec: &'a Codec,
    step: u64,
    total: u64,
    max_len: usize,
}

impl Run<'_> {
    fn tick(&self, ctl: &mut dyn Control) -> Result<(), TrainError> {
        check_deadline(self.input.deadline, self.input.max_wall_seconds)?;
        if let Some(r) = ctl.step(self.step, self.total, None) {
            return Err(TrainError::Stopped(r));
        }
        Ok(())
    }

    fn evaluate(
        &self,
        model: &Decoder,
        test: &[Encoded],
        probes: &[Probe],
        ctl: &mut dyn Control,
    ) -> Result<Eval, TrainError> {
        let (mut sum, mut count) = (0f64, 0usize);
        let rows: Vec<&Encoded> = test.iter().collect();
        for chunk in rows.chunks(self.input.hp.batch_size as usize) {
            self.tick(ctl)?;
            let (loss, n) = batch_loss(model, chunk, self.codec.pad)?;
            sum += loss.to_scalar::<f32>()? as f64 * n as f64;
            count += n;
        }
        let loss = sum / count.max(1) as f64;
        let exact_match = if probes.is_empty() {
            None
        } else {
            let mut hits = 0usize;
            for p in probes {
                self.tick(ctl)?;
                let want = self.codec.encode(&p.reference, false)?.len();
                let got = greedy(
                    model,
                    &p.prompt,
                    want + EXTRA_TOKENS,
                    &self.codec.stop_ids,
                    self.max_len,
                )?;
                let text = self.codec.tok.decode(&got, true).map_err(tok_err)?;
                if text.trim() == p.reference.trim() {
                    hits += 1;
                }
            }
            Some(hits as f64 / probes.len() as f64)
        };
        Ok(Eval {
            loss,
            perplexity: loss.exp(),
            exact_match,
        })
    }
}

/// Refuses a base whose f32 copy (the frozen weights) cannot fit in the memory the
/// host has available, before loading it.
fn check_memory(dir: &Path) -> Result<(), TrainError> {
    let st = decoder::map_weights(&decoder::weight_files(dir)?)?;
    let elements: u64 = st
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
        .sum();
    // f32 weights, plus about a third for activations, gradients and the merge.
    let needed = elements * 4 * 4 / 3;
    if let Some(available) = crate::host::mem_available_bytes() {
        if needed > available {
            return Err(decoder::DecoderError::TooBig {
                needed_mib: needed >> 20,
                available_mib: available >> 20,
            }
            .into());
        }
    }
    Ok(())
}

/// Encodes rows, dropping those left with nothing to learn after truncation.
fn encode_all(
    codec: &Codec,
    rows: &[SftRow],
    max_len: usize,
) -> Result<(Vec<Encoded>, usize), TrainError> {
    let mut out = Vec::with_capacity(rows.len());
    let mut dropped = 0;
    for r in rows {
        let e = codec.encode_row(r, max_len)?;
        if learned_positions(&e) == 0 {
            dropped += 1;
        } else {
            out.push(e);
        }
    }
    Ok((out, dropped))
}

/// Trains and writes the result to `out_dir`.
pub fn run(
    input: LoraInput,
    ctl: &mut dyn Control,
    out_dir: &Path,
) -> Result<TrainOutput, TrainError> {
    let hp = input.hp;
    if input.train.is_empty() {
        return Err(DataError::Empty("train").into());
    }
    if input.test.is_empty() {
        return Err(DataError::Empty("test").into());
    }
    check_deadline(input.deadline, input.max_wall_seconds)?;
    let max_len = hp.max_seq_length as usize;
    let codec = Codec::load(input.base_dir)?;
    let (train, dropped_train) = encode_all(&codec, &input.train, max_len)?;
    let (test, dropped_test) = encode_all(&codec, &input.test, max_len)?;
    if train.is_empty() {
        return Err(TrainError::NothingToLearn("train", max_len));
    }
    if test.is_empty() {
        return Err(TrainError::NothingToLearn("test", max_len));
    }
    let probes: Vec<Probe> = input
        .test
        .iter()
        .take(MAX_EXACT_MATCH_ROWS)
        .map(|r| codec.probe(r))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let train_tokens: usize = train.iter().map(learned_positions).sum();
    ctl.log(format!(
        "{} train rows ({train_tokens} learned tokens) and {} test rows; {} rows left out with \
         nothing to learn within max_seq_length {max_len}",
        train.len(),
        test.len(),
        dropped_train + dropped_test
    ));

    // Room for the longest greedy completion too.
    let longest_probe = probes
        .iter()
        .map(|p| p.prompt.len() + codec.encode(&p.reference, false).map_or(0, |r| r.len()))
        .max()
        .unwrap_or(0);
    let rope_len = max_len.max(longest_probe + EXTRA_TOKENS);
    check_memory(input.base_dir)?;
    let mut model = Decoder::load(input.base_dir, rope_len)?;
    let targets = hp.targets();
    let (r, alpha) = (hp.rank() as usize, hp.alpha());
    let vars = model.add_adapters(&targets, r, alpha, hp.seed)?;
    let trainable: usize = vars.iter().map(|v| v.elem_count()).sum();
    ctl.log(format!(
        "loaded {} ({} layers, hidden {}) in f32; LoRA r={r} alpha={alpha} on {}: {trainable} \
         trainable parameters",
        model.cfg.model_type,
        model.cfg.layers,
        model.cfg.hidden,
        targets.join(", ")
    ));

    let per_epoch = train.len().div_ceil(hp.batch_size as usize) as u64;
    let total = per_epoch * hp.epochs as u64;
    let warmup = (total as f64 * hp.warmup_ratio).ceil() as u64;
    let mut run = Run {
        input: &input,
        codec: &codec,
        step: 0,
        total,
        max_len: rope_len,
    };
    let untuned = run.evaluate(&model, &test, &probes, ctl)?;
    ctl.log(format!(
        "untuned: test loss {:.4}, perplexity {:.2}{}",
        untuned.loss,
        untuned.perplexity,
        untuned
            .exact_match
            .map(|m| format!(", exact match {m:.4}"))
            .unwrap_or_default()
    ));
    ctl.metric("untuned_test_loss", json!(untuned.loss));
    ctl.metric("untuned_test_perplexity", json!(untuned.perplexity));
    if let Some(m) = untuned.exact_match {
        ctl.metric("untuned_test_exact_match", json!(m));
    }

    let mut opt = AdamW::new(
        vars,
        Params {
            lr: hp.learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: hp.weight_decay,
        },
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(hp.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let started = Instant::now();
    let mut epoch_loss = 0f64;
    for epoch in 0..hp.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in order.chunks(hp.batch_size as usize) {
            check_deadline(input.deadline, input.max_wall_seconds)?;
            let rows: Vec<&Encoded> = chunk.iter().map(|i| &train[*i]).collect();
            let (loss, n) = batch_loss(&model, &rows, codec.pad)?;
            opt.set_learning_rate(learning_rate(hp.learning_rate, run.step, total, warmup));
            let grads = loss.backward()?;
            opt.step(&grads)?;
            let l = loss.to_scalar::<f32>()?;
            sum += l as f64 * n as f64;
            count += n;
            run.step += 1;
            if let Some(r) = ctl.step(run.step, total, Some(l)) {
                return Err(TrainError::Stopped(r));
            }
        }
        epoch_loss = sum / count.max(1) as f64;
        ctl.log(format!(
            "epoch {}/{}: train loss {epoch_loss:.4} per token ({}/{total} steps, {:.1} s)",
            epoch + 1,
            hp.epochs,
            run.step,
            started.elapsed().as_secs_f64()
        ));
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let tuned = run.evaluate(&model, &test, &probes, ctl)?;
    ctl.log(format!(
        "tuned: test loss {:.4} (untuned {:.4}), perplexity {:.2} (untuned {:.2}){}",
        tuned.loss,
        untuned.loss,
        tuned.perplexity,
        untuned.perplexity,
        match (tuned.exact_match, untuned.exact_match) {
            (Some(t), Some(u)) => format!(", exact match {t:.4} (untuned {u:.4})"),
            _ => String::new(),
        }
    ));
    let mut metrics = Map::new();
    for (prefix, e) in [("untuned_test", untuned), ("test", tuned)] {
        metrics.insert(format!("{prefix}_loss"), json!(e.loss));
        metrics.insert(format!("{prefix}_perplexity"), json!(e.perplexity));
        if let Some(m) = e.exact_match {
            metrics.insert(format!("{prefix}_exact_match"), json!(m));
        }
    }
    metrics.insert("exact_match_rows".into(), json!(probes.len()));
    metrics.insert("train_loss".into(), json!(epoch_loss));
    metrics.insert("train_examples".into(), json!(train.len()));
    metrics.insert("test_examples".into(), json!(test.len()));
    metrics.insert("train_tokens".into(), json!(train_tokens));
    metrics.insert("trainable_parameters".into(), json!(trainable));
    metrics.insert("steps".into(), json!(run.step));
    metrics.insert("train_seconds".into(), json!(train_seconds));
    metrics.insert(
        "seconds_per_step".into(),
        json!(train_seconds / run.step.max(1) as f64),
    );
    let files = write_result(&model, &input, out_dir)?;
    Ok(TrainOutput {
        files,
        labels: vec![],
        metrics,
    })
}

/// A tensor to write: the base's bytes as they are, or a new tensor.
enum Out<'a> {
    Kept(safetensors::tensor::TensorView<'a>),
    New(Tensor),
}

impl safetensors::View for &Out<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            Out::Kept(v) => v.dtype(),
            Out::New(t) => safetensors::View::dtype(t),
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Out::Kept(v) => v.shape(),
            Out::New(t) => t.dims(),
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Out::Kept(v) => Cow::Borrowed(v.data()),
            Out::New(t) => safetensors::View::data(t),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Out::Kept(v) => v.data().len(),
            Out::New(t) => safetensors::View::data_len(t),
        }
    }
}

fn candle_dtype(d: safetensors::Dtype) -> Result<DType, TrainError> {
    Ok(match d {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::F64 => DType::F64,
        other => {
            return Err(decoder::DecoderError::Weights(format!(
                "a projection stored as {other:?} cannot be merged"
            ))
            .into())
        }
    })
}

fn save(path: &Path, tensors: &[(String, Out)]) -> Result<(), TrainError> {
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let views: Vec<(&str, &Out)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::serialize_to_file(views, metadata, path)
        .map_err(|e| TrainError::Io(std::io::Error::other(e.to_string())))
}

/// Writes the merged model, the copied base files and the PEFT adapter.
fn write_result(model: &Decoder, input: &LoraInput, out: &Path) -> Result<Vec<String>, TrainError> {
    std::fs::create_dir_all(out.join("adapter"))?;
    let st = decoder::map_weights(&decoder::weight_files(input.base_dir)?)?;
    let mut merged: std::collections::HashMap<String, Tensor> =
        model.merged_weights()?.into_iter().collect();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let t = match merged.remove(&name) {
            Some(m) => Out::New(m.to_dtype(candle_dtype(view.dtype())?)?),
            None => Out::Kept(view),
        };
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save(&out.join("model.safetensors"), &tensors)?;
    drop(tensors);
    let mut files = vec!["model.safetensors".to_string()];
    for f in COPIED_FILES {
        let src = input.base_dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, out.join(f))?;
            files.push(f.to_string());
        }
    }
    let mut adapter = Vec::new();
    let mut modules: Vec<String> = Vec::new();
    for p in model.adapted() {
        let ad = p.adapter.as_ref().expect("adapted");
        let m = p.module();
        adapter.push((
            format!("base_model.model.{m}.lora_A.weight"),
            Out::New(ad.a.as_tensor().detach().contiguous()?),
        ));
        adapter.push((
            format!("base_model.model.{m}.lora_B.weight"),
            Out::New(ad.b.as_tensor().detach().contiguous()?),
        ));
        modules.push(m.to_string());
    }
    save(&out.join("adapter/adapter_model.safetensors"), &adapter)?;
    let hp = input.hp;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": input.base_repo,
        "revision": input.base_revision,
        "r": hp.rank(),
        "lora_alpha": hp.alpha(),
        "lora_dropout": 0.0,
        "target_modules": hp.targets(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
    });
    std::fs::write(
        out.join("adapter/adapter_config.json"),
        serde_json::to_vec_pretty(&config).expect("json"),
    )?;
    files.push("adapter/adapter_model.safetensors".into());
    files.push("adapter/adapter_config.json".into());
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(family: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/decoders")
            .join(family)
    }

    /// Prompt tokens are not learned; the completion and the end-of-sequence are.
    #[test]
    fn completion_rows_learn_the_completion_and_eos() {
        let codec = Codec::load(&fixture("llama")).unwrap();
        let row = SftRow::Completion {
            prompt: "Q: sky?".into(),
            completion: " blue".into(),
        };
        let e = codec.encode_row(&row, 64).unwrap();
        let prompt = codec.encode("Q: sky?", true).unwrap();
        assert_eq!(prompt[0], 1, "BOS first");
        assert_eq!(&e.ids[..prompt.len()], &prompt[..]);
        assert!(e.target[..prompt.len()].iter().all(|t| !t));
        assert!(e.target[prompt.len()..].iter().all(|t| *t));
        assert_eq!(e.ids.last(), Some(&2), "ends with </s>");
        let short = codec.encode_row(&row, prompt.len()).unwrap();
        assert_eq!(learned_positions(&short), 0);
    }

    /// Chat rows learn the assistant turns (their end-of-turn marker included) and
    /// nothing of the user's.
    #[test]
    fn chat_rows_learn_the_assistant_turns_only() {
        let codec = Codec::load(&fixture("qwen3")).unwrap();
        let turn = |r: &str, c: &str| ChatTurn {
            role: r.into(),
            content: c.into(),
        };
        let row = SftRow::Chat(vec![
            turn("user", "hi"),
            turn("assistant", "yes"),
            turn("user", "more"),
            turn("assistant", "no"),
        ]);
        let e = codec.encode_row(&row, 128).unwrap();
        let learned: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.target)
            .filter(|(_, t)| **t)
            .map(|(i, _)| *i)
            .collect();
        let text = codec.tok.decode(&learned, false).unwrap();
        assert_eq!(text.replace(' ', ""), "yes</s>no</s>");
        // The whole conversation is the template's rendering.
        let full = codec
            .render(
                match &row {
                    SftRow::Chat(t) => t,
                    _ => unreachable!(),
                },
                false,
            )
            .unwrap();
        assert_eq!(
            codec.tok.decode(&e.ids, false).unwrap().replace(' ', ""),
            full.replace(' ', "")
        );
        // Without a template, a chat row is refused with the reason.
        let plain = Codec::load(&fixture("llama")).unwrap();
        let err = plain.encode_row(&row, 128).unwrap_err();
        assert!(err.to_string().contains("no chat template"), "{err}");
    }
}
