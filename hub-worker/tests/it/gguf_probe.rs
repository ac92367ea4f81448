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

#[test]
fn a_good_gguf_passes_the_probe_once_and_loads() {
    use_the_probe();
    let Some(fixture) = std::env::var_os("PADDOCK_GEMMA_GGUF").map(PathBuf::from) else {
        eprintln!(
            "\n*** SKIPPED a_good_gguf_passes_the_probe_once_and_loads: PADDOCK_GEMMA_GGUF \
             is not set ***\n"
        );
        return;
    };
    // A cache-shaped copy (blobs/sha256/<hex>, a model directory linking to it), so the
    // probe's result is recorded as the worker's cache would keep it.
    let fixture = std::fs::canonicalize(fixture).unwrap();
    let root = tempfile::tempdir().unwrap();
    let hex = "0123456789abcdef".repeat(4);
    let blobs = root.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::hard_link(&fixture, blobs.join(&hex))
        .or_else(|_| std::fs::copy(&fixture, blobs.join(&hex)).map(|_| ()))
        .unwrap();
    let model_dir = root.path().join("models/gemma");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/sha256/{hex}"),
        model_dir.join("gemma-3-270m-q4_k_m.gguf"),
    )
    .unwrap();
    let model = load(&model_dir).expect("the fixture loads after its probe");
    assert!(model.decoder().is_some());
    let probed = std::fs::read_dir(root.path().join("blobs/probed"))
        .expect("the probe's result is recorded beside the blobs")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert_eq!(probed.len(), 1, "{probed:?}");
    assert!(probed[0].starts_with(&hex), "{probed:?}");
}
