//! Fine-tuning with candle: the MiniLM fixture trained on the dataset that
//! `scripts/finetune/make-dataset.py` writes must beat its untuned head on the test
//! split by a wide margin, and the written repo must load in the serving engine and
//! classify with the new labels; trained as a sentence encoder on the pairs of
//! `scripts/finetune/make-pairs.py`, it must retrieve the test positives far better
//! than the untuned encoder, and serve the same embeddings as feature extraction.
//! Plus the stops: cancel and the wall-time limit.

use crate::common::*;
use hub_types::jobs::{Hyperparameters, StopReason};
use hub_worker::engine::{EmbedOptions, EngineConfig, Model, Task, TextInput};
use hub_worker::finetune::data::{self, Example, Pair};
use hub_worker::finetune::embed::{self, PairInput};
use hub_worker::finetune::train::{self, Control, TrainError, TrainInput};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The dataset of `scripts/finetune/make-dataset.py`, written once per process.
fn dataset() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("finetune-dataset");
        let st = std::process::Command::new("python3")
            .arg(repo_root().join("scripts/finetune/make-dataset.py"))
            .arg(&dir)
            .status()
            .expect("python3 runs");
        assert!(st.success());
        dir
    })
    .clone()
}

/// The pairs of `scripts/finetune/make-pairs.py`, written once per process.
fn pair_dataset() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("finetune-pairs");
        let st = std::process::Command::new("python3")
            .arg(repo_root().join("scripts/finetune/make-pairs.py"))
            .arg(&dir)
            .status()
            .expect("python3 runs");
        assert!(st.success());
        dir
    })
    .clone()
}

fn pair_split(dir: &Path, name: &str) -> Vec<Pair> {
    let f = format!("{name}.csv");
    data::parse_pairs(
        &f,
        &std::fs::read(dir.join(&f)).unwrap(),
        "anchor",
        "positive",
    )
    .unwrap()
}

fn split(dir: &Path, name: &str) -> Vec<Example> {
    let f = format!("{name}.csv");
    data::parse(&f, &std::fs::read(dir.join(&f)).unwrap(), "text", "label").unwrap()
}

#[derive(Default)]
struct Recorder {
    steps: Vec<(u64, u64)>,
    logs: Vec<String>,
    stop_at: Option<(u64, StopReason)>,
}

impl Control for Recorder {
    fn step(&mut self, step: u64, total: u64, _loss: Option<f32>) -> Option<StopReason> {
        self.steps.push((step, total));
        match self.stop_at {
            Some((at, r)) if step >= at => Some(r),
            _ => None,
        }
    }
    fn log(&mut self, line: String) {
        eprintln!("finetune: {line}");
        self.logs.push(line);
    }
    fn metric(&mut self, _: &str, _: Value) {}
}

fn hp() -> Hyperparameters {
    Hyperparameters {
        epochs: 1,
        learning_rate: 1e-4,
        batch_size: 16,
        max_seq_length: 32,
        ..Default::default()
    }
}

#[tokio::test]
async fn text_classification_beats_the_untuned_head_and_serves() {
    let Some(minilm) = minilm_dir("text_classification_beats_the_untuned_head_and_serves") else {
        return;
    };
    let ds = dataset();
    let out = scratch().join("finetune-out");
    let spec = hub_worker::engine::spec::inspect(&minilm).unwrap();
    let (train_rows, test_rows) = (split(&ds, "train"), split(&ds, "test"));
    let test_texts: Vec<Example> = test_rows.clone();
    let out2 = out.clone();
    let started = Instant::now();
    let (result, rec) = tokio::task::spawn_blocking(move || {
        let hp = hp();
        let mut rec = Recorder::default();
        let r = train::run(
            TrainInput {
                base: &spec,
                train: train_rows,
                test: test_rows,
                hp: &hp,
                deadline: Instant::now() + Duration::from_secs(600),
                max_wall_seconds: 600,
            },
            &mut rec,
            &out2,
        );
        (r, rec)
    })
    .await
    .unwrap();
    let result = result.unwrap();
    eprintln!("finetune: {:?} in {:?}", result.metrics, started.elapsed());
    let acc = result.metrics["test_accuracy"].as_f64().unwrap();
    let untuned = result.metrics["untuned_test_accuracy"].as_f64().unwrap();
    assert!(
        acc >= untuned + 0.3 && acc >= 0.85,
        "tuned {acc} vs untuned {untuned}"
    );
    assert_eq!(result.labels, ["complaint", "praise", "question"]);
    // 240 rows / 16 = 15 steps; progress reached the end.
    assert_eq!(rec.steps.last(), Some(&(15, 15)));
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(result.files.contains(&f.to_string()), "{f}");
    }
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["id2label"]["1"], "praise");
    assert_eq!(cfg["label2id"]["question"], 2);
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");

    // The serving engine loads the result and agrees with the training's accuracy.
    let dir = out.clone();
    let model = tokio::task::spawn_blocking(move || {
        Model::load(
            &dir,
            Some(Task::TextClassification),
            &EngineConfig::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(model.info().labels, ["complaint", "praise", "question"]);
    let inputs: Vec<TextInput> = test_texts
        .iter()
        .map(|e| TextInput::Single(e.text.clone()))
        .collect();
    let (logits, _) = model.logits(inputs, true).await.unwrap();
    let labels = model.info().labels;
    let served_correct = logits
        .iter()
        .zip(&test_texts)
        .filter(|(l, e)| {
            let best = l
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            labels[best] == e.label
        })
        .count();
    let served = served_correct as f64 / test_texts.len() as f64;
    assert!(
        (served - acc).abs() < 0.02,
        "served {served} vs trained {acc}"
    );
}

#[tokio::test]
async fn sentence_embedding_beats_the_untuned_encoder_and_serves() {
    let Some(minilm) = minilm_dir("sentence_embedding_beats_the_untuned_encoder_and_serves") else {
        return;
    };
    let ds = pair_dataset();
    let out = scratch().join("finetune-embed-out");
    let spec = hub_worker::engine::spec::inspect(&minilm).unwrap();
    let (train_rows, test_rows) = (pair_split(&ds, "train"), pair_split(&ds, "test"));
    let test_pairs = test_rows.clone();
    let out2 = out.clone();
    let started = Instant::now();
    let (result, rec) = tokio::task::spawn_blocking(move || {
        let hp = Hyperparameters {
            learning_rate: 2e-4,
            ..hp()
        };
        let mut rec = Recorder::default();
        let r = embed::run(
            PairInput {
                base: &spec,
                train: train_rows,
                test: test_rows,
                hp: &hp,
                deadline: Instant::now() + Duration::from_secs(900),
                max_wall_seconds: 900,
            },
            &mut rec,
            &out2,
        );
        (r, rec)
    })
    .await
    .unwrap();
    let result = result.unwrap();
    eprintln!("finetune: {:?} in {:?}", result.metrics, started.elapsed());
    let m = |k: &str| result.metrics[k].as_f64().unwrap();
    let (acc, untuned) = (m("test_accuracy_at_1"), m("untuned_test_accuracy_at_1"));
    assert!(
        acc >= untuned + 0.3 && acc >= 0.5,
        "tuned {acc} vs untuned {untuned}"
    );
    assert!(m("test_mrr") > m("untuned_test_mrr") + 0.2);
    // 256 pairs / 16 = 16 steps.
    assert_eq!(rec.steps.last(), Some(&(16, 16)));
    // The base model's layout: BertModel weights under its own names, its
    // sentence-transformers modules and pooling config, the tokenizer.
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        assert!(
            result.files.contains(&f.to_string()),
            "{f}: {:?}",
            result.files
        );
    }
    let tensors =
        candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(tensors.contains_key("embeddings.word_embeddings.weight"));
    assert!(tensors.contains_key("pooler.dense.weight"));
    assert!(!tensors
        .keys()
        .any(|k| k.starts_with("bert.") || k.starts_with("classifier")));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertModel");

    // The serving engine loads the result as feature extraction and ranks the test
    // positives as the training measured.
    let dir = out.clone();
    let model = tokio::task::spawn_blocking(move || {
        Model::load(
            &dir,
            Some(Task::FeatureExtraction),
            &EngineConfig::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let embed_texts = |texts: Vec<String>| {
        let model = &model;
        async move {
            model
                .embed(texts, EmbedOptions::default())
                .await
                .unwrap()
                .vectors
        }
    };
    let anchors = embed_texts(test_pairs.iter().map(|p| p.anchor.clone()).collect()).await;
    let corpus = embed_texts(test_pairs.iter().map(|p| p.positive.clone()).collect()).await;
    let norm: f32 = anchors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-4,
        "served embeddings are normalised: {norm}"
    );
    let target: Vec<usize> = (0..test_pairs.len()).collect();
    let served = embed::retrieval(&anchors, &corpus, &target);
    assert!(
        (served.accuracy_at_1 - acc).abs() < 0.02,
        "served {served:?} vs trained {acc}"
    );
}

fn quick_input<'a>(
    spec: &'a hub_worker::engine::spec::ModelSpec,
    hp: &'a Hyperparameters,
    deadline: Instant,
) -> TrainInput<'a> {
    let ds = dataset();
    TrainInput {
        base: spec,
        train: split(&ds, "train"),
        test: split(&ds, "test"),
        hp,
        deadline,
        max_wall_seconds: 1,
    }
}

#[tokio::test]
async fn a_stop_takes_effect_within_a_step_and_the_wall_time_limit_holds() {
    let Some(minilm) =
        minilm_dir("a_stop_takes_effect_within_a_step_and_the_wall_time_limit_holds")
    else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        let spec = hub_worker::engine::spec::inspect(&minilm).unwrap();
        let hp = hp();
        let out = scratch().join("finetune-stopped");
        // Cancelled after the second optimizer step: no third step runs, nothing is written.
        let mut rec = Recorder {
            stop_at: Some((2, StopReason::Cancelled)),
            ..Default::default()
        };
        let far = Instant::now() + Duration::from_secs(600);
        let err = train::run(quick_input(&spec, &hp, far), &mut rec, &out).unwrap_err();
        assert!(
            matches!(err, TrainError::Stopped(StopReason::Cancelled)),
            "{err}"
        );
        assert_eq!(rec.steps.iter().map(|s| s.0).max(), Some(2));
        assert!(!out.join("model.safetensors").exists());
        // A deadline already passed: the limit is checked before any work.
        let mut rec = Recorder::default();
        let err = train::run(quick_input(&spec, &hp, Instant::now()), &mut rec, &out).unwrap_err();
        assert!(matches!(err, TrainError::WallTime(1)), "{err}");
        assert!(rec.steps.is_empty());
    })
    .await
    .unwrap();
}

#[test]
fn bad_data_is_refused_with_its_reason() {
    let one_label = vec![
        Example {
            text: "a".into(),
            label: "x".into(),
        },
        Example {
            text: "b".into(),
            label: "x".into(),
        },
    ];
    assert_eq!(
        data::label_names(&one_label).unwrap_err().to_string(),
        "the train split has 1 distinct labels; a classifier needs 2 to 1000"
    );
}
