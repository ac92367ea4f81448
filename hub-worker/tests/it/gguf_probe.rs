//! GGUF files run in a probe child before the worker loads them
//! (`engine::generate::llama::probe`): a file on which llama.cpp aborts fails to load with
//! the failed check named, and this process lives on; a good file loads, and its probe
//! result is kept.

use hub_worker::engine::generate::llama::probe;
use hub_worker::engine::{EngineConfig, LoadError, Model};
use hub_worker::fixtures::GgufValue as V;
use std::path::{Path, PathBuf};

/// Every GGUF load of this test binary goes through the probe, run by the `hub-worker`
/// binary (a test harness cannot serve the probe argument itself).
pub(crate) fn use_the_probe() {
    probe::use_probe_exe(env!("CARGO_BIN_EXE_hub-worker"));
}

/// A GGUF file with the metadata `kv` and no tensors, written into `dir`.
fn gguf(dir: &Path, name: &str, kv: &[(&str, V)]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, hub_worker::fixtures::gguf_header(kv)).unwrap();
    path
}

/// A small llama header whose BPE vocabulary is `tokens`: with a token listed twice,
/// llama.cpp's vocabulary loader fails `GGML_ASSERT(id_to_token.size() ==
/// token_to_id.size())` and aborts its process. The header passes `read_meta`'s checks.
fn llama_header(dir: &Path, tokens: Vec<String>) -> PathBuf {
    gguf(
        dir,
        "model.gguf",
        &[
            ("general.architecture", V::Str("llama".into())),
            ("llama.block_count", V::U32(1)),
            ("llama.context_length", V::U32(128)),
            ("llama.embedding_length", V::U32(64)),
            ("llama.feed_forward_length", V::U32(128)),
            ("llama.attention.head_count", V::U32(4)),
            ("llama.attention.head_count_kv", V::U32(4)),
            ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
            ("tokenizer.ggml.model", V::Str("gpt2".into())),
            ("tokenizer.ggml.pre", V::Str("default".into())),
            ("tokenizer.ggml.tokens", V::Strs(tokens)),
            ("tokenizer.ggml.merges", V::Strs(Vec::new())),
        ],
    )
}

fn load(dir: &Path) -> Result<Model, LoadError> {
    let cfg = EngineConfig {
        gen_slots: 2,
        gen_context: 128,
        ..EngineConfig::default()
    };
    Model::load(dir, None, &cfg)
}

fn letters() -> Vec<String> {
    ('a'..='z').map(String::from).collect()
}

#[test]
fn a_gguf_that_aborts_llama_cpp_fails_to_load_and_the_worker_lives() {
    use_the_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut tokens = letters();
    tokens.push("q".to_string());
    llama_header(dir.path(), tokens);
    let err = load(dir.path()).err().expect("the load is refused");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::Weights(_)), "{err:?}");
    assert!(
        msg.contains("aborted")
            && msg.contains("GGML_ASSERT(id_to_token.size() == token_to_id.size())"),
        "the message names llama.cpp's failed check: {msg}"
    );
    // Refused every time: a failed probe is not remembered as passed.
    let again = load(dir.path()).err().expect("refused again").to_string();
    assert!(again.contains("aborted"), "{again}");
}

#[test]
fn a_gguf_llama_cpp_refuses_cleanly_fails_with_its_reason() {
    use_the_probe();
    let dir = tempfile::tempdir().unwrap();
    // A valid vocabulary, but no tensors: llama.cpp's loader reports the missing weights.
    llama_header(dir.path(), letters());
    let msg = load(dir.path())
        .err()
        .expect("the load is refused")
        .to_string();
    assert!(
        msg.contains("llama.cpp cannot load the GGUF file"),
        "the child's own error comes through: {msg}"
    );
}

/// The Gemma fixture, or `None` (the test says it is skipped).
fn gemma_fixture(test: &str) -> Option<PathBuf> {
    let Some(fixture) = std::env::var_os("PADDOCK_GEMMA_GGUF").map(PathBuf::from) else {
        eprintln!("\n*** SKIPPED {test}: PADDOCK_GEMMA_GGUF is not set ***\n");
        return None;
    };
    Some(std::fs::canonicalize(fixture).unwrap())
}

/// A cache-shaped root: `blobs/sha256/<hex>` (not created) and a model directory
/// `models/gemma` whose GGUF links to it, so a probe's result is recorded as the worker's
/// cache keeps it. Returns the blob's path and the model directory.
fn cache_shaped(root: &Path, hex: &str) -> (PathBuf, PathBuf) {
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let model_dir = root.join("models/gemma");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/sha256/{hex}"),
        model_dir.join("gemma-3-270m-q4_k_m.gguf"),
    )
    .unwrap();
    (blobs.join(hex), model_dir)
}

/// A copy of `fixture` at `to` (a hard link where the file system allows).
fn place(fixture: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::hard_link(fixture, to)
        .or_else(|_| std::fs::copy(fixture, to).map(|_| ()))
        .unwrap();
}

/// The probe markers recorded under `root`.
fn probed(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("blobs/probed"))
        .expect("the probe's result is recorded beside the blobs")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_good_gguf_passes_the_probe_once_and_loads() {
    use_the_probe();
    let Some(fixture) = gemma_fixture("a_good_gguf_passes_the_probe_once_and_loads") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let hex = "0123456789abcdef".repeat(4);
    let (blob, model_dir) = cache_shaped(root.path(), &hex);
    place(&fixture, &blob);
    let model = load(&model_dir).expect("the fixture loads after its probe");
    assert!(model.decoder().is_some());
    let probed = probed(root.path());
    assert_eq!(probed.len(), 1, "{probed:?}");
    assert!(probed[0].starts_with(&hex), "{probed:?}");
}

/// The worker's pull starts the probe as a GGUF download ends (`engine::load::on_download`),
/// before the file is hashed and renamed into the blob store; the load takes it over.
#[test]
fn a_probe_started_on_the_download_is_taken_over_by_the_load() {
    use_the_probe();
    let Some(fixture) = gemma_fixture("a_probe_started_on_the_download_is_taken_over_by_the_load")
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let hex = "fedcba9876543210".repeat(4);
    let (blob, model_dir) = cache_shaped(root.path(), &hex);
    let download = root.path().join("tmp/dl-1").join(&hex);
    place(&fixture, &download);
    let files = [
        "gemma-3-270m-q4_k_m.gguf".to_string(),
        "config.json".to_string(),
    ];
    let cfg = EngineConfig {
        gen_slots: 2,
        gen_context: 128,
        ..EngineConfig::default()
    };
    let early = hub_worker::engine::load::on_download(&files[0], &files, &download, &blob, &cfg)
        .expect("a probe starts on the download");
    let early = (&early as &dyn std::any::Any)
        .downcast_ref::<probe::EarlyProbe>()
        .expect("the GGUF probe");
    // What the pull does once the digest matches: the child reads on regardless.
    std::fs::rename(&download, &blob).unwrap();
    let model = load(&model_dir).expect("the fixture loads");
    assert!(model.decoder().is_some());
    assert!(early.taken(), "the load took the early probe over");
    assert_eq!(probed(root.path()).len(), 1);

    // Not for a repo with two GGUF files (its load refuses it), nor for other files.
    let two = [files[0].clone(), "other-q8_0.gguf".to_string()];
    assert!(hub_worker::engine::load::on_download(&two[0], &two, &blob, &blob, &cfg).is_none());
    assert!(hub_worker::engine::load::on_download(&files[1], &files, &blob, &blob, &cfg).is_none());
}
