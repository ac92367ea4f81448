//! The training loop of a sentence-embedding job, as sentence-transformers trains
//! all-MiniLM: the encoder's token states pooled like the base model's `Pooling`
//! module (mean for MiniLM) and L2-normalised; MultipleNegativesRankingLoss: for a
//! batch of `(anchor, positive)` pairs, cross-entropy of each anchor's cosine
//! similarities to every positive of the batch, scaled by 20, with its own positive
//! as the target (the other rows' positives are its negatives). Evaluation on the
//! test split is retrieval: each anchor ranks all the split's distinct positives
//! (accuracy@1, MRR), before and after training. The result is a repo laid out like
//! the base model (`BertModel` weights under the base's tensor names, `config.json`,
//! tokenizer, sentence-transformers' `modules.json` and module configs), which the
//! feature-extraction endpoint serves with the same pooling.

use super::data::{DataError, Pair};
use super::model::Bert;
use super::train::{
    self, batch, check_deadline, encode_texts, learning_rate, Control, Encoded, TrainError,
    TrainOutput,
};
use crate::engine::pooling::PoolingMode;
use crate::engine::spec::ModelSpec;
use candle_core::Tensor;
use hub_types::jobs::Hyperparameters;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// MultipleNegativesRankingLoss' scale (sentence-transformers' default): cosine
/// similarities times 20 are the logits.
pub const MNRL_SCALE: f64 = 20.0;

/// A sentence-embedding job's inputs, already fetched.
pub struct PairInput<'a> {
    pub base: &'a ModelSpec,
    pub train: Vec<Pair>,
    pub test: Vec<Pair>,
    pub hp: &'a Hyperparameters,
    /// When the wall-time limit is reached, and the limit in seconds.
    pub deadline: Instant,
    pub max_wall_seconds: u64,
}

/// Retrieval quality on the test split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieval {
    /// Fraction of anchors whose own positive ranks first.
    pub accuracy_at_1: f64,
    /// Mean reciprocal rank of the own positive.
    pub mrr: f64,
    /// Mean cosine similarity of each anchor with its own positive.
    pub pair_cosine: f64,
}

/// The test split as retrieval: anchors, the distinct positives, and the index of
/// each anchor's positive among them.
struct TestSet {
    anchors: Encoded,
    corpus: Encoded,
    target: Vec<usize>,
}

/// Unit embeddings of every row of `e`, as `(rows, hidden)` values.
fn embed_all(
    model: &Bert,
    e: &Encoded,
    pad: u32,
    pooling: PoolingMode,
    input: &PairInput,
    ctl: &mut dyn Control,
    (step, total): (u64, u64),
) -> Result<Vec<Vec<f32>>, TrainError> {
    let order: Vec<usize> = (0..e.ids.len()).collect();
    let mut out = Vec::with_capacity(order.len());
    for chunk in order.chunks(32) {
        check_deadline(input.deadline, input.max_wall_seconds)?;
        if let Some(r) = ctl.step(step, total, None) {
            return Err(TrainError::Stopped(r));
        }
        let b = batch(e, chunk, pad);
        let v = model
            .embed(&b.ids, &b.types, &b.lengths, b.len, pooling)?
            .detach()
            .to_vec2::<f32>()?;
        out.extend(v);
    }
    Ok(out)
}

/// Ranks, for each anchor, the corpus by cosine similarity (ties count against
/// the anchor: its positive must score strictly higher to rank above).
pub fn retrieval(anchors: &[Vec<f32>], corpus: &[Vec<f32>], target: &[usize]) -> Retrieval {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (mut top1, mut rr, mut cos) = (0usize, 0f64, 0f64);
    for (a, t) in anchors.iter().zip(target) {
        let own = dot(a, &corpus[*t]);
        let above = corpus
            .iter()
            .enumerate()
            .filter(|(i, c)| *i != *t && dot(a, c) >= own)
            .count();
        if above == 0 {
            top1 += 1;
        }
        rr += 1.0 / (above + 1) as f64;
        cos += own as f64;
    }
    let n = anchors.len().max(1) as f64;
    Retrieval {
        accuracy_at_1: top1 as f64 / n,
        mrr: rr / n,
        pair_cosine: cos / n,
    }
}

fn evaluate(
    model: &Bert,
    test: &TestSet,
    pad: u32,
    pooling: PoolingMode,
    input: &PairInput,
    ctl: &mut dyn Control,
    at: (u64, u64),
) -> Result<Retrieval, TrainError> {
    let a = embed_all(model, &test.anchors, pad, pooling, input, ctl, at)?;
    let c = embed_all(model, &test.corpus, pad, pooling, input, ctl, at)?;
    Ok(retrieval(&a, &c, &test.target))
}

/// Trains and writes the result to `out_dir`.
pub fn run(
    input: PairInput,
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
    let spec = input.base;
    let pooling = Bert::training_pooling(spec)?;
    let tok = train::tokenizer(spec, hp)?;
    fn anchors(rows: &[Pair]) -> Vec<&str> {
        rows.iter().map(|p| p.anchor.as_str()).collect()
    }
    let train_a = encode_texts(&tok, anchors(&input.train), vec![])?;
    let train_p = encode_texts(
        &tok,
        input.train.iter().map(|p| p.positive.as_str()).collect(),
        vec![],
    )?;
    let mut corpus: Vec<&str> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let target: Vec<usize> = input
        .test
        .iter()
        .map(|p| {
            *seen.entry(p.positive.as_str()).or_insert_with(|| {
                corpus.push(p.positive.as_str());
                corpus.len() - 1
            })
        })
        .collect();
    let test = TestSet {
        anchors: encode_texts(&tok, anchors(&input.test), vec![])?,
        corpus: encode_texts(&tok, corpus, vec![])?,
        target,
    };
    let pad = spec.encoder.pad_token_id;
    ctl.log(format!(
        "{} train pairs, {} test anchors against {} distinct positives; pooling {pooling:?}, normalised",
        input.train.len(),
        input.test.len(),
        test.corpus.ids.len()
    ));
    let model = Bert::load_encoder(spec)?;
    ctl.log(format!(
        "loaded {} ({} parameters) as a sentence encoder",
        spec.model_type,
        model.parameter_count()
    ));
    let per_epoch = input.train.len().div_ceil(hp.batch_size as usize) as u64;
    let total = per_epoch * hp.epochs as u64;
    let warmup = (total as f64 * hp.warmup_ratio).ceil() as u64;

    let untuned = evaluate(&model, &test, pad, pooling, &input, ctl, (0, total))?;
    ctl.log(format!(
        "untuned: test accuracy@1 {:.4}, MRR {:.4}, pair cosine {:.4}",
        untuned.accuracy_at_1, untuned.mrr, untuned.pair_cosine
    ));
    ctl.metric("untuned_test_accuracy_at_1", json!(untuned.accuracy_at_1));
    ctl.metric("untuned_test_mrr", json!(untuned.mrr));

    let (mut opt_decay, mut opt_plain) = train::optimizers(&model, hp)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(hp.seed);
    let mut order: Vec<usize> = (0..input.train.len()).collect();
    let mut step = 0u64;
    let started = Instant::now();
    let mut epoch_loss = 0f64;
    for epoch in 0..hp.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in order.chunks(hp.batch_size as usize) {
            check_deadline(input.deadline, input.max_wall_seconds)?;
            let (a, p) = (batch(&train_a, chunk, pad), batch(&train_p, chunk, pad));
            let ea = model.embed(&a.ids, &a.types, &a.lengths, a.len, pooling)?;
            let ep = model.embed(&p.ids, &p.types, &p.lengths, p.len, pooling)?;
            let scores = (ea.matmul(&ep.t()?)? * MNRL_SCALE)?;
            let target: Vec<u32> = (0..chunk.len() as u32).collect();
            let target = Tensor::from_vec(target, (chunk.len(),), scores.device())?;
            let loss = candle_nn::loss::cross_entropy(&scores, &target)?;
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
    let tuned = evaluate(&model, &test, pad, pooling, &input, ctl, (step, total))?;
    ctl.log(format!(
        "tuned: test accuracy@1 {:.4} (untuned {:.4}), MRR {:.4} (untuned {:.4})",
        tuned.accuracy_at_1, untuned.accuracy_at_1, tuned.mrr, untuned.mrr
    ));
    let mut metrics = Map::new();
    for (prefix, r) in [("untuned_test", untuned), ("test", tuned)] {
        metrics.insert(format!("{prefix}_accuracy_at_1"), json!(r.accuracy_at_1));
        metrics.insert(format!("{prefix}_mrr"), json!(r.mrr));
        metrics.insert(format!("{prefix}_pair_cosine"), json!(r.pair_cosine));
    }
    metrics.insert("train_loss".into(), json!(epoch_loss));
    metrics.insert("train_examples".into(), json!(input.train.len()));
    metrics.insert("test_examples".into(), json!(input.test.len()));
    metrics.insert("test_corpus".into(), json!(test.corpus.ids.len()));
    metrics.insert("steps".into(), json!(step));
    metrics.insert("train_seconds".into(), json!(train_seconds));
    metrics.insert(
        "seconds_per_step".into(),
        json!(train_seconds / step.max(1) as f64),
    );
    let files = write_result(&model, pooling, out_dir)?;
    Ok(TrainOutput {
        files,
        labels: vec![],
        metrics,
    })
}

/// Copies `rel` from the base model's folder when it is there.
fn copy_if_present(
    spec: &ModelSpec,
    out: &Path,
    rel: &str,
    files: &mut Vec<String>,
) -> std::io::Result<()> {
    let src = spec.dir.join(rel);
    if src.is_file() {
        let dst = out.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&src, &dst)?;
        files.push(rel.to_string());
    }
    Ok(())
}

fn write_json(out: &Path, rel: &str, v: &Value, files: &mut Vec<String>) -> std::io::Result<()> {
    let dst = out.join(rel);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(dst, serde_json::to_vec_pretty(v).expect("json"))?;
    files.push(rel.to_string());
    Ok(())
}

fn pooling_config(hidden: usize, mode: PoolingMode) -> Value {
    json!({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": mode == PoolingMode::Cls,
        "pooling_mode_mean_tokens": mode == PoolingMode::Mean,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": mode == PoolingMode::MeanSqrtLen,
    })
}

/// Writes the weights, `config.json`, the tokenizer and the sentence-transformers
/// layout: the base model's own files when it has `modules.json` (its module
/// configs, e.g. `1_Pooling/config.json`, copied), else a Transformer → Pooling →
/// Normalize pipeline with the pooling the training used.
fn write_result(model: &Bert, pooling: PoolingMode, out: &Path) -> Result<Vec<String>, TrainError> {
    std::fs::create_dir_all(out)?;
    let spec = model.spec();
    model.save(&out.join("model.safetensors"))?;
    let mut files = vec!["model.safetensors".to_string()];
    let base_cfg: Value = std::fs::read(spec.dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    let mut cfg = base_cfg.as_object().cloned().unwrap_or_default();
    cfg.insert("architectures".into(), json!(["BertModel"]));
    cfg.insert("model_type".into(), json!(spec.model_type));
    for k in ["id2label", "label2id", "problem_type"] {
        cfg.remove(k);
    }
    write_json(out, "config.json", &Value::Object(cfg), &mut files)?;
    for f in train::TOKENIZER_FILES {
        copy_if_present(spec, out, f, &mut files)?;
    }
    let modules: Option<Value> = std::fs::read(spec.dir.join("modules.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match modules {
        Some(m) => {
            copy_if_present(spec, out, "modules.json", &mut files)?;
            copy_if_present(spec, out, "sentence_bert_config.json", &mut files)?;
            // Module paths were checked by the spec parser (plain relative folders).
            let paths = m
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("path").and_then(Value::as_str))
                .filter(|p| {
                    !p.is_empty()
                        && !p.contains("..")
                        && !p.contains('/')
                        && !p.contains('\\')
                        && !p.starts_with('.')
                })
                .map(str::to_string)
                .collect::<Vec<_>>();
            for p in paths {
                copy_if_present(spec, out, &format!("{p}/config.json"), &mut files)?;
            }
        }
        None => {
            let modules = json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]);
            write_json(out, "modules.json", &modules, &mut files)?;
            let st = json!({"max_seq_length": spec.max_input_tokens, "do_lower_case": false});
            write_json(out, "sentence_bert_config.json", &st, &mut files)?;
            let pool = pooling_config(spec.encoder.hidden_size, pooling);
            write_json(out, "1_Pooling/config.json", &pool, &mut files)?;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::retrieval;

    #[test]
    fn retrieval_ranks_the_own_positive() {
        let corpus = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        // Anchor 0 prefers its positive; anchor 1 ranks its positive (2) second.
        let anchors = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let r = retrieval(&anchors, &corpus, &[0, 2]);
        assert_eq!(r.accuracy_at_1, 0.5);
        assert!((r.mrr - 0.75).abs() < 1e-9);
        assert!((r.pair_cosine - 0.9).abs() < 1e-6);
        // A tie counts against the anchor.
        let r = retrieval(&[vec![1.0, 0.0]], &[vec![1.0, 0.0], vec![1.0, 0.0]], &[0]);
        assert_eq!(r.accuracy_at_1, 0.0);
    }
}
