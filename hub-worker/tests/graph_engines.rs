//! The ONNX-graph engines, ONNX Runtime (feature `engine-ort`) and OpenVINO (feature
//! `engine-openvino`), on graphs derived from safetensors: same references as the candle
//! engine, every test run once per engine. Each needs its library (`ORT_DYLIB_PATH` from
//! `scripts/worker/fetch-onnxruntime.sh`, `PADDOCK_OPENVINO_LIB` from
//! `scripts/worker/fetch-openvino.sh`); a test is skipped loudly without it.
#![cfg(any(feature = "engine-ort", feature = "engine-openvino"))]

mod common;

use common::*;
use hub_worker::engine::backend::Batch;
use hub_worker::engine::feed::{packing_pays, GraphEngine};
use hub_worker::engine::spec::ModelSpec;
use hub_worker::engine::{EmbedOptions, EngineConfig, EnginePreference, Task, TextInput};

/// One engine under test.
#[derive(Clone, Copy)]
struct Engine {
    /// `ModelInfo::engine` of its models.
    name: &'static str,
    pref: EnginePreference,
    /// The library's environment variable.
    env: &'static str,
    init: fn(&std::path::Path) -> Result<(), hub_worker::engine::InitError>,
    /// One backend of `spec` for feature extraction, driven directly.
    backend: fn(&ModelSpec) -> Box<dyn GraphEngine>,
}

#[cfg(feature = "engine-ort")]
const ORT: Engine = Engine {
    name: "ort",
    pref: EnginePreference::Ort,
    env: "ORT_DYLIB_PATH",
    init: |p| hub_worker::engine::ort::init(Some(p), 2),
    backend: |spec| {
        let b = hub_worker::engine::ort::OrtBackend::load(spec, Task::FeatureExtraction, 1);
        Box::new(b.unwrap().remove(0))
    },
};

#[cfg(feature = "engine-openvino")]
const OPENVINO: Engine = Engine {
    name: "openvino",
    pref: EnginePreference::OpenVino,
    env: "PADDOCK_OPENVINO_LIB",
    init: |p| hub_worker::engine::openvino::init(Some(p), 2),
    backend: |spec| {
        use hub_worker::engine::{openvino::OvBackend, Precision};
        let b = OvBackend::load(spec, Task::FeatureExtraction, 1, Precision::F32);
        Box::new(b.unwrap().remove(0))
    },
};

impl Engine {
    /// Initialises the engine from its variable; false (and a loud note) when unset.
    fn ready(&self, test: &str) -> bool {
        match std::env::var_os(self.env) {
            Some(p) => {
                (self.init)(std::path::Path::new(&p))
                    .unwrap_or_else(|e| panic!("{} is set but unusable: {e}", self.env));
                true
            }
            None => {
                eprintln!(
                    "\n*** SKIPPED {test} ({}): {} is not set ***\n",
                    self.name, self.env
                );
                false
            }
        }
    }

    fn cfg(&self) -> EngineConfig {
        EngineConfig {
            engine: self.pref,
            ..EngineConfig::default()
        }
    }
}

/// `#[tokio::test]`s named `<engine>_<test>` calling `test(ENGINE)` for each engine built in.
macro_rules! per_engine {
    ($(#[$attr:meta])* $test:ident) => {
        mod $test {
            #[cfg(feature = "engine-ort")]
            $(#[$attr])*
            async fn ort() {
                super::$test(super::ORT).await
            }
            #[cfg(feature = "engine-openvino")]
            $(#[$attr])*
            async fn openvino() {
                super::$test(super::OPENVINO).await
            }
        }
    };
}

per_engine!(
    #[tokio::test]
    minilm_matches_sentence_transformers
);
per_engine!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    replicas_answer_each_input_under_load
);
per_engine!(
    #[tokio::test]
    classifiers_match_pytorch
);
per_engine!(
    #[tokio::test]
    packed_passes_match_padded_ones
);

async fn minilm_matches_sentence_transformers(engine: Engine) {
    if !engine.ready("minilm_matches_sentence_transformers") {
        return;
    }
    let Some(dir) = minilm_dir("minilm_matches_sentence_transformers") else {
        return;
    };
    let model = load(&dir, None, engine.cfg()).await;
    assert_eq!(model.info().engine, engine.name);
    assert_matches_reference(&model, usize::MAX).await;
}

/// `model`'s embeddings of the reference sentences, all at once and (the first `alone`)
/// one per call, are within cosine 0.9999 of sentence-transformers'.
async fn assert_matches_reference(model: &hub_worker::engine::Model, alone: usize) {
    let reference = fixture_json("minilm-reference.json");
    let refs = reference["sentences"].as_array().unwrap();
    let texts: Vec<String> = refs
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    let out = model
        .embed(texts.clone(), EmbedOptions::default())
        .await
        .unwrap();
    for (i, (got, r)) in out.vectors.iter().zip(refs).enumerate() {
        let c = cosine(got, &f32s(&r["embedding"]));
        assert!(c >= 0.9999, "sentence {i}: cosine {c}");
    }
    for (i, (t, r)) in texts.iter().zip(refs).enumerate().take(alone) {
        let one = model
            .embed(vec![t.clone()], EmbedOptions::default())
            .await
            .unwrap();
        let c = cosine(&one.vectors[0], &f32s(&r["embedding"]));
        assert!(c >= 0.9999, "sentence {i} alone: cosine {c}");
    }
}

/// Several engine replicas take passes from one queue: under concurrent load every answer
/// still belongs to its own input (a mix-up between replicas or passes would fail here).
async fn replicas_answer_each_input_under_load(engine: Engine) {
    if !engine.ready("replicas_answer_each_input_under_load") {
        return;
    }
    let Some(dir) = minilm_dir("replicas_answer_each_input_under_load") else {
        return;
    };
    // Automatic: one single-threaded session per compute thread (2 here).
    let auto = load(&dir, None, engine.cfg()).await;
    assert_eq!(auto.info().replicas, 2);
    drop(auto);
    let model = load(
        &dir,
        None,
        EngineConfig {
            replicas: 3,
            ..engine.cfg()
        },
    )
    .await;
    assert_eq!(model.info().replicas, 3);
    let reference = fixture_json("minilm-reference.json");
    let refs: Vec<(String, Vec<f32>)> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["text"].as_str().unwrap().to_string(),
                f32s(&s["embedding"]),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let model = model.clone();
        // Requests of 1 to 3 inputs, of mixed lengths, all at once.
        let picks: Vec<usize> = (0..1 + i % 3)
            .map(|k| (i * 7 + k * 5) % refs.len())
            .collect();
        let texts: Vec<String> = picks.iter().map(|&p| refs[p].0.clone()).collect();
        tasks.push(tokio::spawn(async move {
            let out = model.embed(texts, EmbedOptions::default()).await.unwrap();
            (picks, out.vectors)
        }));
    }
    for t in tasks {
        let (picks, vectors) = t.await.unwrap();
        assert_eq!(picks.len(), vectors.len());
        for (p, v) in picks.iter().zip(&vectors) {
            let c = cosine(v, &refs[*p].1);
            assert!(c >= 0.9999, "reference sentence {p}: cosine {c}");
        }
    }
}

async fn classifiers_match_pytorch(engine: Engine) {
    if !engine.ready("classifiers_match_pytorch") {
        return;
    }
    let Some(minilm) = minilm_dir("classifiers_match_pytorch") else {
        return;
    };
    let dir = classifier_dir(&minilm);
    let model = load(&dir, None, engine.cfg()).await;
    assert_eq!(model.info().engine, engine.name);
    let reference = fixture_json("classifier-reference.json");
    let rows = reference["inputs"].as_array().unwrap();
    let inputs = classifier_inputs(rows);
    let (logits, _) = model.logits(inputs, true).await.unwrap();
    for (i, (got, r)) in logits.iter().zip(rows).enumerate() {
        for (g, w) in got.iter().zip(&f32s(&r["logits"])) {
            assert!(
                (g - w).abs() < 1e-4,
                "input {i}: {got:?} vs {}",
                r["logits"]
            );
        }
    }

    let tiny = fixture_json("tiny-reference.json");
    for model_type in ["distilbert", "xlm-roberta"] {
        let r = &tiny["models"][model_type];
        let (dir, _) = tiny_dir(model_type, &minilm);
        let sentences = r["sentences"].as_array().unwrap();
        let texts: Vec<String> = sentences
            .iter()
            .map(|s| s["text"].as_str().unwrap().to_string())
            .collect();
        let cls = load(&dir, None, engine.cfg()).await;
        let (logits, _) = cls
            .logits(texts.iter().cloned().map(TextInput::Single).collect(), true)
            .await
            .unwrap();
        for (i, (got, s)) in logits.iter().zip(sentences).enumerate() {
            for (g, w) in got.iter().zip(&f32s(&s["logits"])) {
                assert!(
                    (g - w).abs() < 1e-4,
                    "{model_type} {i}: {got:?} vs {}",
                    s["logits"]
                );
            }
        }
        let emb = load(&dir, Some(Task::FeatureExtraction), engine.cfg()).await;
        let out = emb.embed(texts, EmbedOptions::default()).await.unwrap();
        for (i, (got, s)) in out.vectors.iter().zip(sentences).enumerate() {
            for (g, w) in got.iter().zip(&f32s(&s["mean_pooled"])) {
                assert!((g - w).abs() < 1e-4, "{model_type} {i} pooled: {g} vs {w}");
            }
        }
    }
}

/// Inputs packed back to back into one row (block-diagonal attention, positions restarting
/// per input) give the same hidden states as padded rows, for every architecture the
/// derived graph covers (BERT, RoBERTa-style position offsets, DistilBERT without token
/// types); and the engine, which packs short windows on its own, still matches
/// sentence-transformers when every request is a pair of unequal sentences.
async fn packed_passes_match_padded_ones(engine: Engine) {
    if !engine.ready("packed_passes_match_padded_ones") {
        return;
    }
    let Some(minilm) = minilm_dir("packed_passes_match_padded_ones") else {
        return;
    };
    let dirs = [
        minilm.clone(),
        tiny_dir("xlm-roberta", &minilm).0,
        tiny_dir("distilbert", &minilm).0,
    ];
    for dir in dirs {
        let spec = hub_worker::engine::spec::inspect(&dir).unwrap();
        let mut backend = (engine.backend)(&spec);
        assert!(backend.can_pack(), "{}", dir.display());
        let (cls, sep) = (spec.encoder.pad_token_id + 1, spec.encoder.pad_token_id + 2);
        let rows: Vec<Vec<u32>> = [3usize, 17, 9]
            .iter()
            .map(|n| {
                let mut r = vec![cls];
                r.extend((0..*n as u32).map(|i| 10 + (i * 7) % 90));
                r.push(sep);
                r
            })
            .collect();
        let types: Vec<Vec<u32>> = rows.iter().map(|r| vec![0; r.len()]).collect();
        let pairs: Vec<(&[u32], &[u32])> = rows
            .iter()
            .zip(&types)
            .map(|(r, t)| (r.as_slice(), t.as_slice()))
            .collect();
        let batch = Batch::pad(&pairs, spec.encoder.pad_token_id);
        let padded = backend.embed_as(&batch, false).unwrap();
        let packed = backend.embed_as(&batch, true).unwrap();
        assert_eq!(padded.dim, packed.dim);
        for (i, len) in batch.lengths.iter().enumerate() {
            let (a, b) = (padded.row(i, batch.max_len), packed.row(i, batch.max_len));
            let worst = a[..len * padded.dim]
                .iter()
                .zip(&b[..len * padded.dim])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{} row {i}: max |Δ| {worst}", dir.display());
        }
        // The cost model packs unequal inputs and pads equal ones.
        assert!(packing_pays(&[5, 40], spec.encoder.hidden_size.max(384)));
        assert!(!packing_pays(&[40, 40, 41, 40], 384));
    }

    // Through the engine: requests of two sentences, shortest with longest, each a short
    // window the queue hands out as one packed pass (one replica) .
    let model = load(
        &minilm,
        None,
        EngineConfig {
            replicas: 1,
            ..engine.cfg()
        },
    )
    .await;
    let reference = fixture_json("minilm-reference.json");
    let mut refs: Vec<&serde_json::Value> =
        reference["sentences"].as_array().unwrap().iter().collect();
    refs.sort_by_key(|r| r["text"].as_str().unwrap().len());
    let n = refs.len();
    for i in 0..n / 2 {
        let pair = [refs[i], refs[n - 1 - i]];
        let texts = pair
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_string())
            .collect();
        let out = model.embed(texts, EmbedOptions::default()).await.unwrap();
        for (got, r) in out.vectors.iter().zip(pair) {
            let c = cosine(got, &f32s(&r["embedding"]));
            assert!(c >= 0.9999, "{:?} in a packed pair: cosine {c}", r["text"]);
        }
    }
}

/// OpenVINO with `Precision::Bf16` (bfloat16 on AMX / AVX512-BF16 CPUs, fp32 elsewhere)
/// still matches sentence-transformers' fp32 embeddings at cosine >= 0.9999, alone and in
/// batches; the other engines refuse bf16 instead of silently computing in f32.
#[cfg(feature = "engine-openvino")]
#[tokio::test]
async fn openvino_bf16_embeddings_match_sentence_transformers() {
    use hub_worker::engine::{Model, Precision};
    if !OPENVINO.ready("openvino_bf16_embeddings_match_sentence_transformers") {
        return;
    }
    let Some(dir) = minilm_dir("openvino_bf16_embeddings_match_sentence_transformers") else {
        return;
    };
    let bf16 = EngineConfig {
        precision: Precision::Bf16,
        ..OPENVINO.cfg()
    };
    let model = load(&dir, None, bf16.clone()).await;
    assert_eq!(model.info().engine, "openvino");
    assert_matches_reference(&model, 4).await;
    for engine in [EnginePreference::Candle, EnginePreference::Ort] {
        let cfg = EngineConfig {
            engine,
            ..bf16.clone()
        };
        let err = Model::load(&dir, None, &cfg)
            .err()
            .expect("bf16 is refused");
        assert!(err.to_string().contains("bf16"), "{engine:?}: {err}");
    }
}
