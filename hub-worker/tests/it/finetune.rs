//! Fine-tuning with candle: the MiniLM fixture trained on the dataset that
//! `scripts/finetune/make-dataset.py` writes must beat its untuned head on the test
//! split by a wide margin, and the written repo must load in the serving engine and
//! classify with the new labels; trained as a sentence encoder on the pairs of
//! `scripts/finetune/make-pairs.py`, it must retrieve the test positives far better
//! than the untuned encoder, and serve the same embeddings as feature extraction.
//! Plus the stops: cancel and the wall-time limit. For decoders: the trainable
//! forward of `finetune::decoder` gives the serving engine's log-probabilities on
//! every tiny decoder family, and a LoRA job on the questions of
//! `scripts/finetune/make-sft.py` lowers the test loss, answers the held-out
//! questions exactly, and its merged model answers them through the worker's
//! `/v1/completions`.

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

/// A tiny decoder of `tests/fixtures/decoders` (scripts/fixtures/make-tiny-decoders.py).
fn decoder_fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoders")
        .join(family)
}

/// The training forward on every family (and gemma3 with a 4-token sliding window,
/// and with query_pre_attn_scalar unlike head_dim) gives the log-probabilities the
/// serving engine reports while it decodes greedily: the engine's top 20 at each of
/// 12 generated positions, within 1e-4, and the same greedy ids.
#[tokio::test]
async fn lora_forward_matches_the_serving_engine_per_family() {
    use hub_worker::engine::generate::{candle, GenEvent, GenerateRequest, Prompt};
    use hub_worker::finetune::decoder::Decoder;
    for family in [
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma3",
        "gemma3_swa",
        "gemma3_qscale",
    ] {
        let dir = decoder_fixture(family);
        let d2 = dir.clone();
        let engine = tokio::task::spawn_blocking(move || {
            candle::load(&d2, &EngineConfig::default()).unwrap()
        })
        .await
        .unwrap();
        let prompt = engine.tokenize("Hello world, the kestrel", true).unwrap();
        let mut req = GenerateRequest::new(Prompt::Tokens(prompt.clone()));
        req.sampling.temperature = 0.0;
        req.max_tokens = Some(12);
        req.ignore_eos = true;
        req.logprobs = Some(20);
        let mut stream = engine.submit(req).unwrap();
        let mut steps = Vec::new();
        while let Some(ev) = stream.next().await {
            match ev {
                GenEvent::Token(t) => steps.push(t),
                GenEvent::Done(_) => break,
                GenEvent::Failed(e) => panic!("{family}: {e}"),
            }
        }
        assert_eq!(steps.len(), 12, "{family}");
        let ids: Vec<u32> = prompt
            .iter()
            .copied()
            .chain(steps.iter().map(|t| t.id))
            .collect();
        let model = Decoder::load(&dir, 64).unwrap();
        let input = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward(&input).unwrap().squeeze(0).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut worst = 0f32;
        for (k, t) in steps.iter().enumerate() {
            let row = &logp[prompt.len() - 1 + k];
            let best = (0..row.len())
                .max_by(|a, b| row[*a].total_cmp(&row[*b]).then(b.cmp(a)))
                .unwrap();
            assert_eq!(best as u32, t.id, "{family}: greedy id at step {k}");
            assert_eq!(t.top_logprobs.len(), 20);
            for lp in t.top_logprobs.iter().chain(t.logprob.iter()) {
                worst = worst.max((row[lp.id as usize] - lp.logprob).abs());
            }
        }
        eprintln!("lora forward vs engine, {family}: max |d logprob| = {worst:e}");
        assert!(
            worst < 1e-4,
            "{family}: log-probabilities differ by {worst}"
        );
    }
}

/// The SFT dataset of `scripts/finetune/make-sft.py`, written once per process.
fn sft_dataset() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("finetune-sft");
        let st = std::process::Command::new("python3")
            .arg(repo_root().join("scripts/finetune/make-sft.py"))
            .arg(&dir)
            .status()
            .expect("python3 runs");
        assert!(st.success());
        dir
    })
    .clone()
}

fn sft_split(dir: &Path, name: &str) -> Vec<data::SftRow> {
    let f = format!("{name}.jsonl");
    data::parse_sft(&f, &std::fs::read(dir.join(&f)).unwrap(), "text").unwrap()
}

/// The family the LoRA job test trains.
const LORA_FAMILY: &str = "qwen3";

fn lora_hp() -> Hyperparameters {
    Hyperparameters {
        epochs: 30,
        learning_rate: 1e-2,
        batch_size: 8,
        max_seq_length: 64,
        warmup_ratio: 0.05,
        weight_decay: 0.0,
        ..Default::default()
    }
    .for_task(hub_types::jobs::JobTask::CausalLmLora)
    .unwrap()
}

#[tokio::test]
async fn lora_job_learns_the_answers_and_its_endpoint_gives_them() {
    use hub_worker::finetune::lora::{self, LoraInput};
    let ds = sft_dataset();
    let base = decoder_fixture(LORA_FAMILY);
    let out = scratch().join("finetune-lora-out");
    let (train_rows, test_rows) = (sft_split(&ds, "train"), sft_split(&ds, "test"));
    let probes = test_rows.clone();
    let (out2, base2) = (out.clone(), base.clone());
    let started = Instant::now();
    let (result, rec) = tokio::task::spawn_blocking(move || {
        let hp = lora_hp();
        let mut rec = Recorder::default();
        let r = lora::run(
            LoraInput {
                base_dir: &base2,
                base_repo: "acme/tiny-qwen3",
                base_revision: "0123456789abcdef0123456789abcdef01234567",
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
    let m = |k: &str| result.metrics[k].as_f64().unwrap();
    assert!(
        m("test_loss") < m("untuned_test_loss") - 2.0,
        "test loss {} vs untuned {}",
        m("test_loss"),
        m("untuned_test_loss")
    );
    assert!(m("test_perplexity") < m("untuned_test_perplexity") / 5.0);
    assert!(
        m("test_exact_match") >= m("untuned_test_exact_match") + 0.5,
        "exact match {} vs untuned {}",
        m("test_exact_match"),
        m("untuned_test_exact_match")
    );
    // 60 rows / 8 = 8 steps per epoch, 30 epochs.
    assert_eq!(rec.steps.last(), Some(&(240, 240)));
    for f in [
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ] {
        assert!(
            result.files.contains(&f.to_string()),
            "{f}: {:?}",
            result.files
        );
    }
    // The merged weights keep the base's names, shapes and dtype; the adapter has
    // PEFT's names, rank 8 on q, k, v, o of both layers.
    let dev = candle_core::Device::Cpu;
    let merged = candle_core::safetensors::load(out.join("model.safetensors"), &dev).unwrap();
    let based = candle_core::safetensors::load(base.join("model.safetensors"), &dev).unwrap();
    let mut names: Vec<&String> = merged.keys().collect();
    let mut base_names: Vec<&String> = based.keys().collect();
    names.sort();
    base_names.sort();
    assert_eq!(names, base_names);
    for (n, t) in &based {
        assert_eq!(merged[n].dims(), t.dims(), "{n}");
        assert_eq!(merged[n].dtype(), t.dtype(), "{n}");
    }
    let q = "model.layers.0.self_attn.q_proj.weight";
    let diff = (&merged[q] - &based[q])
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 0.0, "q_proj was merged");
    let embed = "model.embed_tokens.weight";
    assert_eq!(
        merged[embed].to_vec2::<f32>().unwrap(),
        based[embed].to_vec2::<f32>().unwrap()
    );
    let adapter =
        candle_core::safetensors::load(out.join("adapter/adapter_model.safetensors"), &dev)
            .unwrap();
    assert_eq!(adapter.len(), 2 * 4 * 2);
    let a = &adapter["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"];
    let b = &adapter["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"];
    assert_eq!((a.dims(), b.dims()), (&[8, 64][..], &[32, 8][..]));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 8);
    assert_eq!(cfg["lora_alpha"], 16.0);
    assert_eq!(cfg["base_model_name_or_path"], "acme/tiny-qwen3");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj"])
    );

    // Deployed: the serving engine loads the merged repo, and the worker's
    // /v1/completions answers the held-out questions with the learned owners.
    use actix_web::{test, App};
    use hub_worker::http::{self, GatewayAuth, HttpState};
    use hub_worker::registry::ModelRegistry;
    let model = load(&out, Some(Task::TextGeneration), EngineConfig::default()).await;
    let registry = std::sync::Arc::new(ModelRegistry::new());
    registry.insert_model("tuned", "acme/tuned", model);
    let state = HttpState {
        registry,
        auth: std::sync::Arc::new(GatewayAuth::open()),
        metrics: Default::default(),
    };
    let app = test::init_service(App::new().configure(move |c| http::configure(c, state))).await;
    let mut right = 0;
    for row in &probes {
        let data::SftRow::Completion { prompt, completion } = row else {
            unreachable!()
        };
        let req = test::TestRequest::post()
            .uri("/models/tuned/v1/completions")
            .set_json(serde_json::json!({
                "model": "acme/tuned", "prompt": prompt, "max_tokens": 8, "temperature": 0
            }))
            .to_request();
        let resp: Value = test::call_and_read_body_json(&app, req).await;
        let text = resp["choices"][0]["text"].as_str().unwrap_or_default();
        eprintln!("{prompt:?} -> {text:?} (want {completion:?})");
        if text.trim() == completion.trim() {
            right += 1;
        }
    }
    let served = right as f64 / probes.len() as f64;
    assert!(
        (served - m("test_exact_match")).abs() < 1e-9,
        "served exact match {served} vs measured {}",
        m("test_exact_match")
    );
}

/// The same questions as chat rows (`make-sft.py --format chat`): rendered with the
/// qwen3 fixture's chat template, learned on the assistant turns only, and answered
/// through the worker's `/v1/chat/completions` as the job measured.
#[tokio::test]
async fn lora_job_on_chat_rows_answers_through_chat_completions() {
    use hub_worker::finetune::lora::{self, LoraInput};
    let dir = scratch().join("finetune-sft-chat");
    let st = std::process::Command::new("python3")
        .arg(repo_root().join("scripts/finetune/make-sft.py"))
        .arg(&dir)
        .args(["--format", "chat"])
        .status()
        .expect("python3 runs");
    assert!(st.success());
    let (train_rows, test_rows) = (sft_split(&dir, "train"), sft_split(&dir, "test"));
    assert!(matches!(train_rows[0], data::SftRow::Chat(_)));
    let probes = test_rows.clone();
    let base = decoder_fixture(LORA_FAMILY);
    let out = scratch().join("finetune-lora-chat-out");
    let out2 = out.clone();
    let result = tokio::task::spawn_blocking(move || {
        let hp = lora_hp();
        lora::run(
            LoraInput {
                base_dir: &base,
                base_repo: "acme/tiny-qwen3",
                base_revision: "0123456789abcdef0123456789abcdef01234567",
                train: train_rows,
                test: test_rows,
                hp: &hp,
                deadline: Instant::now() + Duration::from_secs(600),
                max_wall_seconds: 600,
            },
            &mut Recorder::default(),
            &out2,
        )
    })
    .await
    .unwrap()
    .unwrap();
    eprintln!("finetune (chat): {:?}", result.metrics);
    let m = |k: &str| result.metrics[k].as_f64().unwrap();
    assert!(m("test_loss") < m("untuned_test_loss") - 2.0);
    assert!(m("test_exact_match") >= m("untuned_test_exact_match") + 0.5);

    use actix_web::{test, App};
    use hub_worker::http::{self, GatewayAuth, HttpState};
    use hub_worker::registry::ModelRegistry;
    let model = load(&out, Some(Task::TextGeneration), EngineConfig::default()).await;
    let registry = std::sync::Arc::new(ModelRegistry::new());
    registry.insert_model("tuned", "acme/tuned-chat", model);
    let state = HttpState {
        registry,
        auth: std::sync::Arc::new(GatewayAuth::open()),
        metrics: Default::default(),
    };
    let app = test::init_service(App::new().configure(move |c| http::configure(c, state))).await;
    let mut right = 0;
    for row in &probes {
        let data::SftRow::Chat(turns) = row else {
            unreachable!()
        };
        let req = test::TestRequest::post()
            .uri("/models/tuned/v1/chat/completions")
            .set_json(serde_json::json!({
                "model": "acme/tuned-chat", "messages": [turns[0]], "max_tokens": 8, "temperature": 0
            }))
            .to_request();
        let resp: Value = test::call_and_read_body_json(&app, req).await;
        let text = resp["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        if text.trim() == turns[1].content.trim() {
            right += 1;
        }
    }
    let served = right as f64 / probes.len() as f64;
    assert!(
        (served - m("test_exact_match")).abs() < 1e-9,
        "served exact match {served} vs measured {}",
        m("test_exact_match")
    );
}

/// A LoRA job renders every chat row with the base's chat template, in the worker's
/// process: a template that crashes its renderer (a value nested 300,000 deep, see
/// `template_sandbox.rs`) fails the job with the reason, and this process lives on.
#[tokio::test]
async fn a_chat_template_that_crashes_its_renderer_fails_the_lora_job() {
    use hub_worker::finetune::lora::{self, LoraInput};
    crate::template_sandbox::use_the_sandbox();
    let base = scratch().join("finetune-deep-template-base");
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(decoder_fixture(LORA_FAMILY)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), base.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        base.join("chat_template.jinja"),
        crate::template_sandbox::DEEP,
    )
    .unwrap();
    let rows = |n: usize| -> Vec<data::SftRow> {
        let text: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"messages\": [{{\"role\": \"user\", \"content\": \"q{i}\"}}, \
                     {{\"role\": \"assistant\", \"content\": \"a{i}\"}}]}}\n"
                )
            })
            .collect();
        data::parse_sft("train.jsonl", text.as_bytes(), "text").unwrap()
    };
    let out = scratch().join("finetune-deep-template-out");
    let result = tokio::task::spawn_blocking(move || {
        let hp = Hyperparameters {
            epochs: 1,
            ..lora_hp()
        };
        lora::run(
            LoraInput {
                base_dir: &base,
                base_repo: "acme/tiny-qwen3",
                base_revision: "0123456789abcdef0123456789abcdef01234567",
                train: rows(4),
                test: rows(2),
                hp: &hp,
                deadline: Instant::now() + Duration::from_secs(600),
                max_wall_seconds: 600,
            },
            &mut Recorder::default(),
            &out,
        )
    })
    .await
    .unwrap();
    let Err(e) = result else {
        panic!("the job should fail")
    };
    assert!(
        e.to_string().contains("the chat template")
            && e.to_string().contains("crashed its renderer"),
        "{e}"
    );
}

/// Datasets without the columns a LoRA job reads, and bases it cannot train, are
/// refused with the reason.
#[tokio::test]
async fn lora_refuses_what_it_cannot_train_with_the_reason() {
    let e = data::parse_sft("train.csv", b"question,answer\nq,a\n", "text").unwrap_err();
    assert!(
        e.to_string().contains("\"prompt\" and \"completion\""),
        "{e}"
    );
    // A base that is an encoder: the decoder loader names what it supports.
    let Some(minilm) = minilm_dir("lora_refuses_what_it_cannot_train_with_the_reason") else {
        return;
    };
    let e = hub_worker::finetune::decoder::Decoder::load(&minilm, 16)
        .err()
        .expect("an encoder is refused");
    assert!(
        e.to_string().contains("\"bert\"") && e.to_string().contains("gemma3"),
        "{e}"
    );
}

/// Gemma-3-270M's real weights as a transformers checkpoint: the Q4_K_M GGUF fixture
/// (`PADDOCK_GEMMA_GGUF`, scripts/worker/fetch-gemma.sh) dequantized to bf16 under
/// transformers' tensor names (llama.cpp stores Gemma's norm weights plus one; the
/// one is taken off again), with a config.json from its metadata. No tokenizer: the
/// step-time measurement feeds token ids.
fn gemma_270m_safetensors(gguf: &Path) -> PathBuf {
    use candle_core::quantized::gguf_file;
    let dir = scratch().join("gemma-270m-safetensors");
    if dir.join("model.safetensors").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let dev = candle_core::Device::Cpu;
    let mut f = std::fs::File::open(gguf).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let md = |k: &str| content.metadata[&format!("gemma3.{k}")].clone();
    let u = |k: &str| md(k).to_u32().unwrap() as u64;
    let mut tensors = std::collections::HashMap::new();
    let mut vocab = 0;
    let mut layers = 0;
    for name in content.tensor_infos.keys() {
        let t = content
            .tensor(&mut f, name, &dev)
            .unwrap()
            .dequantize(&dev)
            .unwrap();
        let rename = |n: &str| -> String {
            let n = n.strip_suffix(".weight").unwrap_or(n);
            if n == "token_embd" {
                return "model.embed_tokens".into();
            }
            if n == "output_norm" {
                return "model.norm".into();
            }
            let rest = n.strip_prefix("blk.").expect("a layer tensor");
            let (i, part) = rest.split_once('.').unwrap();
            let hf = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "attn_norm" => "input_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "ffn_norm" => "pre_feedforward_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                other => panic!("unknown gemma3 tensor {other}"),
            };
            format!("model.layers.{i}.{hf}")
        };
        let hf = format!("{}.weight", rename(name));
        let t = if hf.ends_with("norm.weight") {
            (t - 1.0).unwrap()
        } else {
            t
        };
        if hf == "model.embed_tokens.weight" {
            vocab = t.dim(0).unwrap();
        }
        if let Some(i) = hf
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
        {
            layers = layers.max(i.parse::<usize>().unwrap() + 1);
        }
        tensors.insert(hf, t.to_dtype(candle_core::DType::BF16).unwrap());
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let cfg = serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": u("embedding_length"), "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": layers, "num_attention_heads": u("attention.head_count"),
        "num_key_value_heads": u("attention.head_count_kv"), "head_dim": u("attention.key_length"),
        "vocab_size": vocab, "max_position_embeddings": u("context_length"),
        "rms_norm_eps": md("attention.layer_norm_rms_epsilon").to_f32().unwrap(),
        "rope_theta": md("rope.freq_base").to_f32().unwrap(), "rope_local_base_freq": 10000.0,
        "sliding_window": u("attention.sliding_window"), "sliding_window_pattern": 6,
        "query_pre_attn_scalar": u("attention.key_length"), "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    dir
}

/// The LoRA step time on the real Gemma-3-270M (see `gemma_270m_safetensors`):
/// batches of 8 rows of 64 tokens whose last 16 are learned (a prompt/completion
/// shape), rank 8 on q, k, v, o. Ignored by default (minutes on 2 cores); run with
/// `PADDOCK_GEMMA_GGUF=... cargo test --workspace --test it lora_step_time -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn lora_step_time_on_gemma_270m() {
    use hub_worker::finetune::decoder::Decoder;
    use hub_worker::finetune::lora::{batch_loss, Encoded};
    use hub_worker::finetune::optim::{AdamW, Params};
    let Some(gguf) = std::env::var_os("PADDOCK_GEMMA_GGUF").map(PathBuf::from) else {
        eprintln!(
            "\n*** SKIPPED lora_step_time_on_gemma_270m: PADDOCK_GEMMA_GGUF is not set ***\n"
        );
        return;
    };
    tokio::task::spawn_blocking(move || {
        hub_worker::engine::threads::init_compute_threads(hub_worker::host::cores());
        let t0 = Instant::now();
        let dir = gemma_270m_safetensors(&gguf);
        eprintln!("gemma-270m safetensors ready in {:?}", t0.elapsed());
        let t0 = Instant::now();
        let mut model = Decoder::load(&dir, 128).unwrap();
        let targets: Vec<String> = ["q_proj", "k_proj", "v_proj", "o_proj"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vars = model.add_adapters(&targets, 8, 16.0, 42).unwrap();
        let trainable: usize = vars.iter().map(|v| v.elem_count()).sum();
        eprintln!(
            "loaded in {:?}: {} layers, hidden {}, vocab {}, {trainable} trainable",
            t0.elapsed(),
            model.cfg.layers,
            model.cfg.hidden,
            model.cfg.vocab
        );
        let mut opt = AdamW::new(
            vars,
            Params {
                lr: 2e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        )
        .unwrap();
        let (batch, len, learned) = (8usize, 64usize, 16usize);
        let rows: Vec<Encoded> = (0..batch)
            .map(|r| Encoded {
                ids: std::iter::once(2)
                    .chain((1..len).map(|i| ((r * 7919 + i * 104_729) % 200_000 + 1000) as u32))
                    .collect(),
                target: (0..len).map(|i| i >= len - learned).collect(),
            })
            .collect();
        let refs: Vec<&Encoded> = rows.iter().collect();
        let mut times = Vec::new();
        for step in 0..4 {
            let t = Instant::now();
            let (loss, n) = batch_loss(&model, &refs, 0).unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
            let l = loss.to_scalar::<f32>().unwrap();
            let s = t.elapsed().as_secs_f64();
            eprintln!("step {step}: loss {l:.4} over {n} tokens, {s:.2} s");
            times.push(s);
        }
        let steady = &times[1..];
        eprintln!(
            "LoRA step on Gemma-3-270M (batch {batch} x {len} tokens, {learned} learned per row, r=8 q/k/v/o): \
             {:.2} s/step (mean of steps 2-4; first {:.2} s), {} threads",
            steady.iter().sum::<f64>() / steady.len() as f64,
            times[0],
            hub_worker::host::cores()
        );
    })
    .await
    .unwrap();
}
