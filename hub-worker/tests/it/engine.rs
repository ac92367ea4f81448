//! Engine tests against references made by PyTorch (checked in under fixtures/worker):
//! MiniLM embeddings vs sentence-transformers, the MiniLM classifier's logits vs
//! BertForSequenceClassification, tiny DistilBERT / XLM-RoBERTa vs transformers; plus
//! admission (overload) and load-time refusals.

use crate::common::*;
use futures::FutureExt;
use hub_worker::engine::{
    BatchStats, ClassifyOptions, EmbedOptions, EngineConfig, EngineError, EnginePreference,
    LoadError, Model, PoolingMode, ScoreFn, Task, TextInput,
};

fn inputs_of(reference: &serde_json::Value) -> Vec<String> {
    reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn minilm_matches_sentence_transformers() {
    let Some(dir) = minilm_dir("minilm_matches_sentence_transformers") else {
        return;
    };
    let model = load(&dir, None, EngineConfig::default()).await;
    let info = model.info();
    assert_eq!(info.task, Task::SentenceSimilarity);
    assert_eq!(info.pooling, vec![PoolingMode::Mean]);
    assert!(info.normalize);
    assert_eq!(info.max_input_tokens, 256);
    assert_eq!(info.dim, 384);

    let reference = fixture_json("minilm-reference.json");
    let texts = inputs_of(&reference);
    let refs: Vec<&serde_json::Value> = reference["sentences"].as_array().unwrap().iter().collect();

    // All in one request (padded, length-sorted batches) ...
    let out = model
        .embed(texts.clone(), EmbedOptions::default())
        .await
        .unwrap();
    let want_tokens: usize = refs
        .iter()
        .map(|r| r["tokens"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(
        out.prompt_tokens, want_tokens,
        "token counts differ from the HF tokenizer"
    );
    for (i, (got, r)) in out.vectors.iter().zip(&refs).enumerate() {
        let want = f32s(&r["embedding"]);
        let c = cosine(got, &want);
        assert!(c >= 0.9999, "sentence {i}: cosine {c}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "sentence {i} not normalised: {norm}"
        );
    }
    // ... and one at a time (no padding, no mask).
    for (i, (text, r)) in texts.iter().zip(&refs).enumerate() {
        let one = model
            .embed(vec![text.clone()], EmbedOptions::default())
            .await
            .unwrap();
        let c = cosine(&one.vectors[0], &f32s(&r["embedding"]));
        assert!(c >= 0.9999, "sentence {i} alone: cosine {c}");
    }

    // Options: unnormalised, Matryoshka dimensions, no truncation.
    let raw = model
        .embed(
            vec![texts[0].clone()],
            EmbedOptions {
                normalize: Some(false),
                ..EmbedOptions::default()
            },
        )
        .await
        .unwrap();
    let norm: f32 = raw.vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "normalize=false still normalised"
    );
    let short = model
        .embed(
            vec![texts[0].clone()],
            EmbedOptions {
                dimensions: Some(64),
                ..EmbedOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(short.vectors[0].len(), 64);
    let long = texts.last().unwrap().clone();
    let err = model
        .embed(
            vec![long],
            EmbedOptions {
                truncate: false,
                ..EmbedOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::InputTooLong { max: 256, .. }),
        "{err}"
    );

    // Similarity is the cosine of the embeddings.
    let (scores, tokens) = model
        .similarity(texts[0].clone(), vec![texts[0].clone(), texts[1].clone()])
        .await
        .unwrap();
    assert!((scores[0] - 1.0).abs() < 1e-5);
    let want = cosine(&out.vectors[0], &out.vectors[1]);
    assert!((scores[1] - want).abs() < 1e-4);
    assert!(tokens > 0);

    // An embedding model does not classify.
    let err = model
        .classify(
            vec![TextInput::Single("x".into())],
            ClassifyOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongTask { .. }));
}

#[tokio::test]
async fn minilm_classifier_matches_pytorch() {
    let Some(minilm) = minilm_dir("minilm_classifier_matches_pytorch") else {
        return;
    };
    let dir = classifier_dir(&minilm);
    let model = load(&dir, None, EngineConfig::default()).await;
    assert_eq!(model.info().task, Task::TextClassification);
    assert_eq!(model.info().labels, vec!["negative", "neutral", "positive"]);
    let reference = fixture_json("classifier-reference.json");
    let rows = reference["inputs"].as_array().unwrap();
    let inputs = classifier_inputs(rows);
    let (logits, tokens) = model.logits(inputs.clone(), true).await.unwrap();
    let want_tokens: usize = rows
        .iter()
        .map(|r| r["tokens"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(tokens, want_tokens);
    for (i, (got, r)) in logits.iter().zip(rows).enumerate() {
        let want = f32s(&r["logits"]);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-4,
                "input {i}: logits {got:?} vs {want:?}"
            );
        }
    }
    // Scores: softmax, sorted, top_k.
    let out = model
        .classify(
            inputs[..1].to_vec(),
            ClassifyOptions {
                top_k: Some(2),
                ..ClassifyOptions::default()
            },
        )
        .await
        .unwrap();
    let want = hub_worker::engine::scores(&f32s(&rows[0]["logits"]), ScoreFn::Softmax);
    let best = want
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    assert_eq!(out.labels[0].len(), 2);
    assert_eq!(
        out.labels[0][0].label,
        ["negative", "neutral", "positive"][best.0]
    );
    assert!((out.labels[0][0].score - best.1).abs() < 1e-4);
    assert!(out.labels[0][0].score >= out.labels[0][1].score);

    // The same classifier served for embeddings pools the encoder (no head needed).
    let emb = load(&dir, Some(Task::FeatureExtraction), EngineConfig::default()).await;
    assert_eq!(emb.info().dim, 384);
}

#[tokio::test]
async fn tiny_distilbert_and_xlm_roberta_match_transformers() {
    let Some(minilm) = minilm_dir("tiny_distilbert_and_xlm_roberta_match_transformers") else {
        return;
    };
    let reference = fixture_json("tiny-reference.json");
    for model_type in ["distilbert", "xlm-roberta"] {
        let r = &reference["models"][model_type];
        let (dir, digest) = tiny_dir(model_type, &minilm);
        assert_eq!(
            digest,
            r["weights_digest"].as_str().unwrap(),
            "{model_type} generators disagree"
        );
        let sentences = r["sentences"].as_array().unwrap();
        let texts: Vec<String> = sentences
            .iter()
            .map(|s| s["text"].as_str().unwrap().to_string())
            .collect();

        let cls = load(&dir, None, EngineConfig::default()).await;
        assert_eq!(cls.info().task, Task::TextClassification);
        let (logits, _) = cls
            .logits(texts.iter().cloned().map(TextInput::Single).collect(), true)
            .await
            .unwrap();
        for (i, (got, s)) in logits.iter().zip(sentences).enumerate() {
            let want = f32s(&s["logits"]);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-4,
                    "{model_type} {i}: {got:?} vs {want:?}"
                );
            }
        }

        let emb = load(&dir, Some(Task::FeatureExtraction), EngineConfig::default()).await;
        assert!(!emb.info().normalize);
        let out = emb
            .embed(texts.clone(), EmbedOptions::default())
            .await
            .unwrap();
        for (i, (got, s)) in out.vectors.iter().zip(sentences).enumerate() {
            let want = f32s(&s["mean_pooled"]);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{model_type} {i} pooled: {g} vs {w}");
            }
        }
    }
}

/// A small model that needs no download: tiny DistilBERT with an in-test tokenizer.
async fn small_model(max_concurrent: usize) -> Model {
    let (dir, _) = tiny_dir("distilbert", &small_tokenizer_dir());
    load(
        &dir,
        Some(Task::FeatureExtraction),
        EngineConfig {
            max_concurrent,
            ..EngineConfig::default()
        },
    )
    .await
}

#[tokio::test]
async fn admission_refuses_instead_of_queueing() {
    let model = small_model(4).await;
    assert_eq!(model.max_inputs(), 4);
    let err = model
        .embed(vec!["a".into(); 5], EmbedOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::TooManyInputs { count: 5, max: 4 }),
        "{err}"
    );
    // Similarity counts the source sentence against the same limit.
    let err = model
        .similarity("a".into(), vec!["b".into(); 4])
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::TooManyInputs { count: 4, max: 3 }),
        "{err}"
    );
    let (scores, _) = model
        .similarity("a".into(), vec!["b".into(); 3])
        .await
        .unwrap();
    assert_eq!(scores.len(), 3);
    let err = model
        .embed(vec![], EmbedOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::EmptyInput);
    let err = model
        .embed(vec!["a".into(), "".into()], EmbedOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::EmptyString { index: 1 });

    // Hold 3 of 4 permits with a request that has been admitted but not finished.
    let mut held = Box::pin(model.embed(
        vec!["the quick brown fox".into(); 3],
        EmbedOptions::default(),
    ));
    assert!(
        (&mut held).now_or_never().is_none(),
        "request finished synchronously"
    );
    assert_eq!(model.stats().in_flight, 3);
    let err = model
        .embed(vec!["a".into(), "b".into()], EmbedOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Overloaded { limit: 4, .. }),
        "{err}"
    );
    // One more still fits.
    model
        .embed(vec!["a".into()], EmbedOptions::default())
        .await
        .unwrap();
    let out = held.await.unwrap();
    assert_eq!(out.vectors.len(), 3);
    assert_eq!(model.stats().in_flight, 0);
    model
        .embed(vec!["a".into(), "b".into()], EmbedOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn abandoned_requests_release_permits() {
    let model = small_model(8).await;
    for _ in 0..20 {
        let fut = model.embed(vec!["hello world".into(); 4], EmbedOptions::default());
        // Dropped after being admitted: the client went away.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(10), fut).await;
    }
    // Everything released; the model still answers.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(model.stats().in_flight, 0);
    let out = model
        .embed(vec!["hello".into(); 8], EmbedOptions::default())
        .await
        .unwrap();
    assert_eq!(out.vectors.len(), 8);
}

/// Four concurrent single-input requests, admitted together, share one forward pass: the
/// queue waits for the ones still tokenizing instead of running the first alone (issue 19);
/// a lone sequential client never waits. Observed through the model's batching counters
/// (the worker's `/info` shows them). On the tiny model with candle, and on MiniLM with
/// the engine `auto` picks when `PADDOCK_MINILM_DIR` is set.
#[tokio::test]
async fn concurrent_single_inputs_share_a_forward_pass() {
    let (tiny, _) = tiny_dir("distilbert", &small_tokenizer_dir());
    let mut models = vec![(tiny, EnginePreference::Candle)];
    if let Some(minilm) = minilm_dir("concurrent_single_inputs_share_a_forward_pass (MiniLM)") {
        models.push((minilm, EnginePreference::Auto));
    }
    for (dir, engine) in models {
        let cfg = EngineConfig {
            engine,
            replicas: 1,
            forward_batch_size: 8,
            // Generous, so a loaded machine cannot make it flaky: the wave below is all
            // admitted before its first input is queued, so the wait ends on the last one.
            fill_wait_us: 2_000_000,
            ..EngineConfig::default()
        };
        let model = load(&dir, Some(Task::FeatureExtraction), cfg).await;
        let label = format!("{} on {}", dir.display(), model.info().engine);
        let stats = || model.batch_stats().expect("an encoder");
        assert_eq!(stats(), BatchStats::default(), "{label}");

        // A lone client, one request at a time: a pass each, no wait.
        for i in 0..3 {
            let t = std::time::Instant::now();
            let out = model
                .embed(
                    vec![format!("sentence number {i}")],
                    EmbedOptions::default(),
                )
                .await
                .unwrap();
            assert_eq!(out.vectors.len(), 1);
            assert!(
                t.elapsed() < std::time::Duration::from_secs(1),
                "{label}: a sequential request took {:?} (it waited for a batch)",
                t.elapsed()
            );
        }
        assert_eq!(
            stats(),
            BatchStats {
                passes: 3,
                inputs: 3,
                fill_waits: 0
            },
            "{label}"
        );

        // Four clients at once, one sentence each.
        let texts = [
            "The cat sits on the mat.",
            "A quick brown fox.",
            "Gateways should be fast.",
            "Batching helps throughput on CPUs.",
        ];
        let alone: Vec<Vec<f32>> = {
            let mut v = Vec::new();
            for t in texts {
                v.push(
                    model
                        .embed(vec![t.to_string()], EmbedOptions::default())
                        .await
                        .unwrap()
                        .vectors
                        .remove(0),
                );
            }
            v
        };
        // One wave of four makes one pass of four. On a machine starved by
        // other processes a request can miss the fill wait and go in a second
        // pass; that is scheduling noise, not a batching fault, so the wave is
        // tried up to three times and one of them must be a single pass.
        let mut waves = Vec::new();
        let outs = loop {
            let before = stats();
            let outs = futures::future::join_all(
                texts
                    .iter()
                    .map(|t| model.embed(vec![t.to_string()], EmbedOptions::default())),
            )
            .await;
            let after = stats();
            assert_eq!(after.inputs - before.inputs, 4, "{label}");
            assert!(
                after.fill_waits - before.fill_waits <= 1,
                "{label}: one wave, at most one fill wait: {before:?} -> {after:?}"
            );
            waves.push(after.passes - before.passes);
            if after.passes - before.passes == 1 || waves.len() == 3 {
                break outs;
            }
        };
        assert_eq!(
            waves.last(),
            Some(&1),
            "{label}: four concurrent requests should make one pass of four (passes per wave: {waves:?})"
        );
        // Batched (padded) or alone, each gets its own embedding.
        for (i, out) in outs.into_iter().enumerate() {
            let got = out.unwrap().vectors.remove(0);
            let c = cosine(&got, &alone[i]);
            assert!(
                c >= 0.9999,
                "{label}: input {i} batched vs alone: cosine {c}"
            );
        }
        assert_eq!(model.stats().in_flight, 0, "{label}");
    }
}

#[test]
fn unservable_models_say_why() {
    let d = tempfile::tempdir().unwrap();
    // (llama is a decoder now, served by the generation family: t5 is served by none.)
    let cfg = serde_json::json!({"model_type": "t5", "vocab_size": 10, "hidden_size": 8});
    std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Model::load(d.path(), None, &EngineConfig::default())
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::UnknownArchitecture { .. }));
    assert!(err.to_string().contains("t5"), "{err}");

    // Too big for the memory we say is available.
    let (dir, _) = tiny_dir("distilbert", &small_tokenizer_dir());
    let err = Model::load(
        &dir,
        None,
        &EngineConfig {
            memory_available_bytes: Some(1000),
            ..EngineConfig::default()
        },
    )
    .err()
    .unwrap();
    assert!(matches!(err, LoadError::TooBig { .. }), "{err}");
    assert!(err.to_string().contains("too big"), "{err}");

    // Bytes that are not a safetensors file (the hub stores any bytes under
    // that name, as the Hub does; it just derives no parameter counts).
    let junk = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.join(f), junk.path().join(f)).unwrap();
    }
    let random: Vec<u8> = (0..4096u64)
        .map(|i| (hub_worker::fixtures::splitmix64(i) >> 24) as u8)
        .collect();
    std::fs::write(junk.path().join("model.safetensors"), random).unwrap();
    let err = Model::load(junk.path(), None, &EngineConfig::default())
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Weights(_)), "{err}");

    // Classification asked of weights without a head.
    let plain = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.join(f), plain.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("distilbert."))
        .collect();
    safetensors::serialize_to_file(kept, None, &plain.path().join("model.safetensors")).unwrap();
    let err = Model::load(
        plain.path(),
        Some(Task::TextClassification),
        &EngineConfig::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, LoadError::UnsupportedTask { .. }), "{err}");
    assert!(err.to_string().contains("pre_classifier"), "{err}");
    // ... but it embeds.
    Model::load(
        plain.path(),
        Some(Task::FeatureExtraction),
        &EngineConfig::default(),
    )
    .unwrap();
}
