//! Cold start and wake of an encoder on the real MiniLM fixture (`PADDOCK_MINILM_DIR`)
//! with OpenVINO (`PADDOCK_OPENVINO_LIB`; feature `engine-openvino`): the compiled-model
//! cache is used on the second load of a graph and not for another graph or another CPU
//! class, and a fast start serves on candle, then moves to OpenVINO with the same
//! embeddings and without losing a request. A binary of its own: it initialises OpenVINO
//! for its process. Skipped loudly without the fixture or the library.
#![cfg(feature = "engine-openvino")]

mod common;

use common::*;
use hub_worker::engine::backend::Backend;
use hub_worker::engine::openvino::{self, OvBackend};
use hub_worker::engine::{onnx_export, spec};
use hub_worker::engine::{EmbedOptions, EngineConfig, Precision, Task};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The MiniLM fixture with OpenVINO started, or `None` (skipped, with a note).
fn ready(test: &str) -> Option<PathBuf> {
    // The phase timings and cache hits are logged (`--nocapture` shows them).
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = minilm_dir(test)?;
    match std::env::var_os(openvino::LIB_ENV) {
        Some(p) => openvino::init(Some(Path::new(&p)), 2)
            .unwrap_or_else(|e| panic!("{} is set but unusable: {e}", openvino::LIB_ENV)),
        None => {
            eprintln!(
                "\n*** SKIPPED {test}: {} is not set ***\n",
                openvino::LIB_ENV
            );
            return None;
        }
    }
    Some(dir)
}

/// Compiles MiniLM (one replica) with `cache`; whether it came from the cache, the
/// mean-pooled embedding of a fixed input, and how many graphs the load derived.
fn compile(dir: &Path, cache: &Path) -> (Option<bool>, Vec<f32>, u64) {
    let spec = spec::inspect(dir).unwrap();
    let exports = onnx_export::exports_on_this_thread();
    let mut b = OvBackend::load_cached(
        &spec,
        Task::FeatureExtraction,
        1,
        Precision::F32,
        Some(cache),
    )
    .unwrap()
    .remove(0);
    let derived = onnx_export::exports_on_this_thread() - exports;
    let batch = hub_worker::engine::backend::Batch::pad(&[(&[101, 7592, 2088, 102], &[0; 4])], 0);
    let hidden = b.embed(&batch).unwrap();
    let row = hidden.row(0, batch.max_len);
    let mut mean = vec![0f32; hidden.dim];
    for t in 0..batch.max_len {
        for (m, x) in mean
            .iter_mut()
            .zip(&row[t * hidden.dim..(t + 1) * hidden.dim])
        {
            *m += x / batch.max_len as f32;
        }
    }
    (b.compiled_from_cache(), mean, derived)
}

/// Files in `dir` (the blobs OpenVINO wrote).
fn blobs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

/// The second compile of a graph imports the blob the first stored (same embeddings); a
/// changed graph (another `layer_norm_eps` in `config.json`) and another CPU class
/// (`ONEDNN_MAX_CPU_ISA` capped differently: another directory) compile afresh.
#[test]
fn compiled_models_are_cached_per_graph_and_cpu_class() {
    let Some(dir) = ready("compiled_models_are_cached_per_graph_and_cpu_class") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let here = openvino::cache_dir(root.path(), None);

    let (first, a, derived) = compile(&dir, &here);
    assert_eq!(first, Some(false), "an empty cache compiles");
    assert_eq!(derived, 1, "a compile derives the graph");
    let stored = blobs(&here);
    assert!(
        stored >= 1,
        "the compiled model is stored in {}",
        here.display()
    );

    let (second, b, derived) = compile(&dir, &here);
    assert_eq!(
        second,
        Some(true),
        "the second load imports the stored blob"
    );
    assert_eq!(derived, 0, "an import does not derive the graph");
    assert!(cosine(&a, &b) >= 0.99999, "cosine {}", cosine(&a, &b));
    assert_eq!(blobs(&here), stored, "nothing new compiled");

    // Another graph: same weights, another layer-norm epsilon.
    let changed = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let to = changed.path().join(entry.file_name());
        if entry.file_name() == "config.json" {
            let mut config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
            config["layer_norm_eps"] = serde_json::json!(1e-11);
            std::fs::write(&to, serde_json::to_vec(&config).unwrap()).unwrap();
        } else {
            std::os::unix::fs::symlink(entry.path(), &to).unwrap();
        }
    }
    let (other_graph, _, _) = compile(changed.path(), &here);
    assert_eq!(
        other_graph,
        Some(false),
        "a changed model is not served a stale blob"
    );
    assert!(blobs(&here) > stored);

    // Another CPU class gets its own directory, so nothing compiled for this one is used.
    let native = here.file_name().unwrap().to_string_lossy().into_owned();
    let cap = if native.contains("-avx2-") {
        "sse41"
    } else {
        "avx2"
    };
    let other_class = openvino::cache_dir(root.path(), Some(cap));
    assert_ne!(other_class, here);
    let (other_cpu, _, _) = compile(&dir, &other_class);
    assert_eq!(other_cpu, Some(false), "another CPU class compiles afresh");
}

/// A fast start answers on candle as soon as the model is loaded, then moves to OpenVINO:
/// requests sent without pause across the switch all succeed, every answer matches
/// sentence-transformers (cosine ≥ 0.9999) whichever engine computed it, and the same
/// sentence embeds alike before and after. Loading again with the compiled-model cache
/// the switch imports the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_start_moves_from_candle_to_openvino_without_losing_a_request() {
    let Some(dir) = ready("fast_start_moves_from_candle_to_openvino_without_losing_a_request")
    else {
        return;
    };
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
    let cache = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        fast_start: true,
        compiled_cache: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let started = Instant::now();
    let model = load(&dir, None, cfg.clone()).await;
    let loaded = started.elapsed();
    assert_eq!(model.info().engine, "candle", "serves at once on candle");
    let before = model
        .embed(vec![refs[0].0.clone()], EmbedOptions::default())
        .await
        .unwrap()
        .vectors
        .remove(0);

    // Four clients, each sending one reference sentence at a time, until the switch is
    // done and a few more requests went to OpenVINO.
    let mut clients = Vec::new();
    for c in 0..4 {
        let model = model.clone();
        let refs = refs.clone();
        clients.push(tokio::spawn(async move {
            let mut answered = 0usize;
            let mut after_switch = 0usize;
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut i = c;
            while after_switch < 5 {
                assert!(Instant::now() < deadline, "no switch to openvino in 300 s");
                let engine = model.info().engine;
                let (text, want) = &refs[i % refs.len()];
                let got = model
                    .embed(vec![text.clone()], EmbedOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("request {answered} of client {c} failed: {e}"));
                let cos = cosine(&got.vectors[0], want);
                assert!(
                    cos >= 0.9999,
                    "client {c}, sentence {i} on {engine}: cosine {cos}"
                );
                answered += 1;
                if engine == "openvino" {
                    after_switch += 1;
                }
                i += 4;
            }
            answered
        }));
    }
    let mut answered = 0;
    for c in clients {
        answered += c.await.unwrap();
    }
    assert_eq!(model.info().engine, "openvino");
    assert!(answered >= 20);
    let after = model
        .embed(vec![refs[0].0.clone()], EmbedOptions::default())
        .await
        .unwrap()
        .vectors
        .remove(0);
    let c = cosine(&before, &after);
    assert!(c >= 0.9999, "candle and OpenVINO differ: cosine {c}");
    eprintln!("fast start: candle ready in {loaded:?}, {answered} requests across the switch");

    // A second load of the same model (a wake, another replica) imports the compiled blob.
    drop(model);
    let again = load(&dir, None, cfg).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while again.info().engine != "openvino" {
        assert!(Instant::now() < deadline, "no switch on the second load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let class_dir = openvino::cache_dir_here(cache.path());
    assert!(
        blobs(&class_dir) >= 1,
        "blobs under {}",
        class_dir.display()
    );
}
