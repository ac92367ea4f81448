//! The training loop of a text-classification job: tokenize both splits once,
//! measure the untuned head on the test split, train with AdamW (linear warm-up
//! then linear decay, seeded shuffling), measure again, and write the result as a
//! `BertForSequenceClassification` repo (weights, config with the labels,
//! tokenizer files, model card). Runs on a blocking thread; between steps it asks
//! its [`Control`] whether to stop (cancel, wall time, quota), so a stop takes
//! effect within one step.

use super::data::{self, DataError, Example};
use super::model::{Classifier, ModelError};
use super::optim::{AdamW, Params};
use crate::engine::spec::ModelSpec;
use hub_types::jobs::{Hyperparameters, StopReason};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a run ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Decoder(#[from] super::decoder::DecoderError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the chat template: {0}")]
    ChatTemplate(String),
    #[error("no row of the {0} split has a token to learn within max_seq_length {1}")]
    NothingToLearn(&'static str, usize),
    #[error("stopped: {0:?}")]
    Stopped(StopReason),
    #[error("the job ran past its wall-time limit of {0} s")]
    WallTime(u64),
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("cannot write the result: {0}")]
    Io(#[from] std::io::Error),
}

/// What the loop reports to, and asks, between steps.
pub trait Control {
    /// After each optimizer step (and every evaluation batch, with `step` unchanged):
    /// `Some` stops the run.
    fn step(&mut self, step: u64, total: u64, loss: Option<f32>) -> Option<StopReason>;
    /// A log line.
    fn log(&mut self, line: String);
    /// A metric known so far.
    fn metric(&mut self, name: &str, value: Value);
}

/// A job's inputs, already fetched.
pub struct TrainInput<'a> {
    pub base: &'a ModelSpec,
    pub train: Vec<Example>,
    pub test: Vec<Example>,
    pub hp: &'a Hyperparameters,
    /// When the wall-time limit is reached, and the limit in seconds.
    pub deadline: Instant,
    pub max_wall_seconds: u64,
}

/// The written result.
#[derive(Debug)]
pub struct TrainOutput {
    /// Files in `out_dir`, relative, in commit order.
    pub files: Vec<String>,
    pub labels: Vec<String>,
    pub metrics: Map<String, Value>,
}

/// Examples as token ids.
pub(super) struct Encoded {
    pub(super) ids: Vec<Vec<u32>>,
    pub(super) types: Vec<Vec<u32>>,
    /// Class ids (none for sentence pairs).
    pub(super) classes: Vec<u32>,
}

fn encode(
    tok: &tokenizers::Tokenizer,
    examples: &[Example],
    classes: Vec<u32>,
) -> Result<Encoded, TrainError> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    encode_texts(tok, texts, classes)
}

/// Texts as token ids (the tokenizer truncates; no padding).
pub(super) fn encode_texts(
    tok: &tokenizers::Tokenizer,
    texts: Vec<&str>,
    classes: Vec<u32>,
) -> Result<Encoded, TrainError> {
    let enc = tok
        .encode_batch(texts, true)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    Ok(Encoded {
        ids: enc.iter().map(|e| e.get_ids().to_vec()).collect(),
        types: enc.iter().map(|e| e.get_type_ids().to_vec()).collect(),
        classes,
    })
}

/// A padded batch of rows `idx` of `e`.
pub(super) struct Batch {
    pub(super) ids: Vec<u32>,
    pub(super) types: Vec<u32>,
    pub(super) lengths: Vec<usize>,
    pub(super) len: usize,
    pub(super) classes: Vec<u32>,
}

pub(super) fn batch(e: &Encoded, idx: &[usize], pad: u32) -> Batch {
    let len = idx
        .iter()
        .map(|i| e.ids[*i].len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut b = Batch {
        ids: Vec::with_capacity(idx.len() * len),
        types: Vec::with_capacity(idx.len() * len),
        lengths: Vec::with_capacity(idx.len()),
        len,
        classes: Vec::with_capacity(idx.len()),
    };
    for i in idx {
        let (ids, types) = (&e.ids[*i], &e.types[*i]);
        b.ids.extend_from_slice(ids);
        b.ids.extend(std::iter::repeat_n(pad, len - ids.len()));
        b.types.extend_from_slice(types);
        b.types.extend(std::iter::repeat_n(0, len - types.len()));
        b.lengths.push(ids.len());
        b.classes.extend(e.classes.get(*i));
    }
    b
}

fn check_time(input: &TrainInput) -> Result<(), TrainError> {
    check_deadline(input.deadline, input.max_wall_seconds)
}

/// The wall-time limit, checked before each batch.
pub(super) fn check_deadline(deadline: Instant, max_wall_seconds: u64) -> Result<(), TrainError> {
    if Instant::now() >= deadline {
        return Err(TrainError::WallTime(max_wall_seconds));
    }
    Ok(())
}

/// Accuracy and mean cross-entropy of `model` on `e`.
fn evaluate(
    model: &Classifier,
    e: &Encoded,
    pad: u32,
    input: &TrainInput,
    ctl: &mut dyn Control,
    step: u64,
    total: u64,
) -> Result<(f64, f64), TrainError> {
    let n = e.ids.len();
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    let order: Vec<usize> = (0..n).collect();
    for chunk in order.chunks(32) {
        check_time(input)?;
        if let Some(r) = ctl.step(step, total, None) {
            return Err(TrainError::Stopped(r));
        }
        let b = batch(e, chunk, pad);
        let logits = model.forward(&b.ids, &b.types, &b.lengths, b.len)?.detach();
        let target = candle_core::Tensor::from_slice(&b.classes, (chunk.len(),), logits.device())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &target)?.to_scalar::<f32>()?;
        loss_sum += loss as f64 * chunk.len() as f64;
        let pred = logits.argmax(1)?.to_vec1::<u32>()?;
        correct += pred.iter().zip(&b.classes).filter(|(p, c)| p == c).count();
    }
    Ok((correct as f64 / n as f64, loss_sum / n as f64))
}

/// The base model's tokenizer, truncating at `max_seq_length` (and the model's
/// positions), without padding.
pub(super) fn tokenizer(
    spec: &ModelSpec,
    hp: &Hyperparameters,
) -> Result<tokenizers::Tokenizer, TrainError> {
    let mut tok = tokenizers::Tokenizer::from_file(&spec.tokenizer)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    crate::engine::tokenize::check_tokenizer(&tok).map_err(TrainError::Tokenizer)?;
    let max_len = (hp.max_seq_length as usize).min(spec.encoder.max_positions());
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tok.with_padding(None);
    Ok(tok)
}

/// AdamW over the decayed and the not-decayed parameters.
pub(super) fn optimizers(
    model: &Classifier,
    hp: &Hyperparameters,
) -> Result<(AdamW, AdamW), TrainError> {
    let (decay, no_decay) = model.param_groups();
    let params = |wd: f64| Params {
        lr: hp.learning_rate,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: wd,
    };
    Ok((
        AdamW::new(decay, params(hp.weight_decay))?,
        AdamW::new(no_decay, params(0.0))?,
    ))
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up, linear decay.
pub fn learning_rate(peak: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        let left = total.saturating_sub(step) as f64;
        peak * left / (total - warmup).max(1) as f64
    }
}

/// Trains and writes the result to `out_dir`.
pub fn run(
    input: TrainInput,
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
    let labels = data::label_names(&input.train)?;
    let train_classes = data::class_ids(&input.train, &labels)?;
    let test_classes = data::class_ids(&input.test, &labels)?;
    let spec = input.base;
    let tok = tokenizer(spec, hp)?;
    let train = encode(&tok, &input.train, train_classes)?;
    let test = encode(&tok, &input.test, test_classes)?;
    let pad = spec.encoder.pad_token_id;
    ctl.log(format!(
        "{} train and {} test examples, {} labels: {}",
        train.ids.len(),
        test.ids.len(),
        labels.len(),
        labels.join(", ")
    ));

    let model = Classifier::load(spec, labels.len(), hp.seed)?;
    ctl.log(format!(
        "loaded {} ({} parameters) with a new {}-way head",
        spec.model_type,
        model.parameter_count(),
        labels.len()
    ));
    let per_epoch = train.ids.len().div_ceil(hp.batch_size as usize) as u64;
    let total = per_epoch * hp.epochs as u64;
    let warmup = (total as f64 * hp.warmup_ratio).ceil() as u64;

    let (untuned_acc, untuned_loss) = evaluate(&model, &test, pad, &input, ctl, 0, total)?;
    ctl.log(format!(
        "untuned head: test accuracy {untuned_acc:.4}, loss {untuned_loss:.4}"
    ));
    ctl.metric("untuned_test_accuracy", json!(untuned_acc));

    let (mut opt_decay, mut opt_plain) = optimizers(&model, hp)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(hp.seed);
    let mut order: Vec<usize> = (0..train.ids.len()).collect();
    let mut step = 0u64;
    let started = Instant::now();
    let mut epoch_loss = 0f64;
    for epoch in 0..hp.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in order.chunks(hp.batch_size as usize) {
            check_time(&input)?;
            let b = batch(&train, chunk, pad);
            let logits = model.forward(&b.ids, &b.types, &b.lengths, b.len)?;
            let target =
                candle_core::Tensor::from_slice(&b.classes, (chunk.len(),), logits.device())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
            let lr = learning_rate(hp.learning_rate, step, total, warmup);
            opt_decay.set_learning_rate(lr);
            opt_plain.set_learning_rate(lr);
            let grads = loss.backward()?;
            opt_decay.step(&grads)?;
            opt_plain.step(&grads)?;
            let l = loss.to_scalar::<f32>()?;
            sum += l as f64 * chunk.len() as f64;
            count += chunk.len();
            step += 1;
            if let Some(r) = ctl.step(step, total, Some(l)) {
                return Err(TrainError::Stopped(r));
            }
        }
        epoch_loss = sum / count.max(1) as f64;
        ctl.log(format!(
            "epoch {}/{}: train loss {epoch_loss:.4} ({step}/{total} steps, {:.1} s)",
            epoch + 1,
            hp.epochs,
            started.elapsed().as_secs_f64()
        ));
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let (acc, test_loss) = evaluate(&model, &test, pad, &input, ctl, step, total)?;
    ctl.log(format!(
        "tuned: test accuracy {acc:.4} (untuned head {untuned_acc:.4}), loss {test_loss:.4}"
    ));
    let mut metrics = Map::new();
    metrics.insert("untuned_test_accuracy".into(), json!(untuned_acc));
    metrics.insert("untuned_test_loss".into(), json!(untuned_loss));
    metrics.insert("test_accuracy".into(), json!(acc));
    metrics.insert("test_loss".into(), json!(test_loss));
    metrics.insert("train_loss".into(), json!(epoch_loss));
    metrics.insert("train_examples".into(), json!(train.ids.len()));
    metrics.insert("test_examples".into(), json!(test.ids.len()));
    metrics.insert("steps".into(), json!(step));
    metrics.insert("train_seconds".into(), json!(train_seconds));
    metrics.insert(
        "seconds_per_step".into(),
        json!(train_seconds / step.max(1) as f64),
    );

    let files = write_result(&model, &labels, out_dir)?;
    Ok(TrainOutput {
        files,
        labels,
        metrics,
    })
}

/// Tokenizer files copied from the base model when it has them.
pub(super) const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

fn write_result(
    model: &Classifier,
    labels: &[String],
    out: &Path,
) -> Result<Vec<String>, TrainError> {
    std::fs::create_dir_all(out)?;
    let spec = model.spec();
    model.save(&out.join("model.safetensors"))?;
    let mut files = vec!["model.safetensors".to_string()];
    let base_cfg: Value = std::fs::read(spec.dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    let mut cfg = base_cfg.as_object().cloned().unwrap_or_default();
    cfg.insert(
        "architectures".into(),
        json!(["BertForSequenceClassification"]),
    );
    let id2label: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    cfg.insert("id2label".into(), Value::Object(id2label));
    cfg.insert("label2id".into(), Value::Object(label2id));
    cfg.insert("problem_type".into(), json!("single_label_classification"));
    cfg.insert("model_type".into(), json!(spec.model_type));
    std::fs::write(
        out.join("config.json"),
        serde_json::to_vec_pretty(&Value::Object(cfg)).expect("json"),
    )?;
    files.push("config.json".into());
    for f in TOKENIZER_FILES {
        let src: PathBuf = spec.dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, out.join(f))?;
            files.push(f.to_string());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::learning_rate;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 2) - 0.5).abs() < 1e-9);
        assert!((learning_rate(1.0, 1, 10, 2) - 1.0).abs() < 1e-9);
        assert!((learning_rate(1.0, 2, 10, 2) - 1.0).abs() < 1e-9);
        assert!(learning_rate(1.0, 9, 10, 2) > 0.0);
        assert!((learning_rate(1.0, 10, 10, 2)).abs() < 1e-9);
        assert!((learning_rate(1.0, 0, 4, 0) - 1.0).abs() < 1e-9);
    }
}
