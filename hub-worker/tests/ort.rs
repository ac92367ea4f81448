//! The ONNX Runtime backend (feature `engine-ort`) on graphs derived from safetensors:
//! same references as the candle engine. Needs `ORT_DYLIB_PATH`
//! (`scripts/worker/fetch-onnxruntime.sh`); skipped loudly without it.
#![cfg(feature = "engine-ort")]

mod common;

use common::*;
use hub_worker::engine::{EmbedOptions, EngineConfig, EnginePreference, Task, TextInput};

fn ort_ready(test: &str) -> bool {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => {
            hub_worker::engine::ort::init(Some(std::path::Path::new(&p)), 2)
                .unwrap_or_else(|e| panic!("ORT_DYLIB_PATH is set but unusable: {e}"));
            true
        }
        None => {
            eprintln!("\n*** SKIPPED {test}: ORT_DYLIB_PATH is not set (scripts/worker/fetch-onnxruntime.sh) ***\n");
            false
        }
    }
}

fn ort_cfg() -> EngineConfig {
    EngineConfig {
        engine: EnginePreference::Ort,
        ..EngineConfig::default()
    }
}

#[tokio::test]
async fn ort_minilm_matches_sentence_transformers() {
    if !ort_ready("ort_minilm_matches_sentence_transformers") {
        return;
    }
    let Some(dir) = minilm_dir("ort_minilm_matches_sentence_transformers") else {
        return;
    };
    let model = load(&dir, None, ort_cfg()).await;
    assert_eq!(model.info().engine, "ort");
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
    for (i, (t, r)) in texts.iter().zip(refs).enumerate() {
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ort_replicas_answer_each_input_under_load() {
    if !ort_ready("ort_replicas_answer_each_input_under_load") {
        return;
    }
    let Some(dir) = minilm_dir("ort_replicas_answer_each_input_under_load") else {
        return;
    };
    // Automatic: one single-threaded session per compute thread (2 here).
    let auto = load(&dir, None, ort_cfg()).await;
    assert_eq!(auto.info().replicas, 2);
    drop(auto);
    let model = load(
        &dir,
        None,
        EngineConfig {
            replicas: 3,
            ..ort_cfg()
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

#[tokio::test]
async fn ort_classifiers_match_pytorch() {
    if !ort_ready("ort_classifiers_match_pytorch") {
        return;
    }
    let Some(minilm) = minilm_dir("ort_classifiers_match_pytorch") else {
        return;
    };
    let dir = classifier_dir(&minilm);
    let model = load(&dir, None, ort_cfg()).await;
    assert_eq!(model.info().engine, "ort");
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
        let cls = load(&dir, None, ort_cfg()).await;
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
        let emb = load(&dir, Some(Task::FeatureExtraction), ort_cfg()).await;
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
#[tokio::test]
async fn ort_packed_passes_match_padded_ones() {
    use hub_worker::engine::backend::{Backend, Batch};
    use hub_worker::engine::ort::{packing_pays, OrtBackend};
    if !ort_ready("ort_packed_passes_match_padded_ones") {
        return;
    }
    let Some(minilm) = minilm_dir("ort_packed_passes_match_padded_ones") else {
        return;
    };
    let dirs = [
        minilm.clone(),
        tiny_dir("xlm-roberta", &minilm).0,
        tiny_dir("distilbert", &minilm).0,
    ];
    for dir in dirs {
        let spec = hub_worker::engine::spec::inspect(&dir).unwrap();
        let mut backend = OrtBackend::load(&spec, Task::FeatureExtraction, 1)
            .unwrap()
            .remove(0);
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
        assert!(backend.packs());
    }

    // Through the engine: requests of two sentences, shortest with longest, each a short
    // window the queue hands out as one packed pass (one replica) .
    let model = load(
        &minilm,
        None,
        EngineConfig {
            replicas: 1,
            ..ort_cfg()
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
