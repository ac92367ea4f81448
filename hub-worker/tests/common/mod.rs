//! Shared helpers of the hub-worker integration tests: fixture locations and loaders.
#![allow(dead_code)]

pub mod fake_hub;

use hub_worker::engine::{EngineConfig, Model, Task, TextInput};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The MiniLM fixture (`scripts/worker/fetch-fixtures.sh` prints `PADDOCK_MINILM_DIR=...`).
/// `None`, with a loud message, when it is not set: the test is skipped.
pub fn minilm_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("PADDOCK_MINILM_DIR") {
        Some(d) if Path::new(&d).join("model.safetensors").is_file() => Some(PathBuf::from(d)),
        Some(d) => panic!(
            "PADDOCK_MINILM_DIR={} has no model.safetensors; run scripts/worker/fetch-fixtures.sh",
            Path::new(&d).display()
        ),
        None => {
            eprintln!(
                "\n*** SKIPPED {test}: PADDOCK_MINILM_DIR is not set. Run \
                 `eval \"$(scripts/worker/fetch-fixtures.sh | tail -n1)\" && export PADDOCK_MINILM_DIR` ***\n"
            );
            None
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture_json(name: &str) -> Value {
    let p = repo_root().join("fixtures/worker").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// A temp dir that lives for the whole test process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The MiniLM classifier fixture, generated once per test process.
pub fn classifier_dir(minilm: &Path) -> PathBuf {
    static DIR: OnceLock<(PathBuf, String)> = OnceLock::new();
    let (dir, digest) = DIR.get_or_init(|| {
        let dir = scratch().join("minilm-classifier");
        let digest = hub_worker::fixtures::make_classifier(minilm, &dir).unwrap();
        (dir, digest)
    });
    assert_eq!(
        digest,
        fixture_json("classifier-reference.json")["weights_digest"]
            .as_str()
            .unwrap(),
        "Rust and Python classifier generators disagree"
    );
    dir.clone()
}

/// A tiny deterministic model (`distilbert`, `xlm-roberta`) with a tokenizer, built once
/// per process (tests run in parallel). Needs only a `tokenizer.json`: the MiniLM one if
/// present, else [`small_tokenizer_dir`].
pub fn tiny_dir(model_type: &str, tokenizer_dir: &Path) -> (PathBuf, String) {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, String>>> =
        OnceLock::new();
    let dir = scratch().join(format!(
        "tiny-{model_type}-{}",
        tokenizer_dir.file_name().unwrap().to_string_lossy()
    ));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    let digest = built
        .entry(dir.clone())
        .or_insert_with(|| {
            hub_worker::fixtures::make_tiny(model_type, tokenizer_dir, &dir).unwrap()
        })
        .clone();
    (dir, digest)
}

/// A small WordPiece `tokenizer.json` (lower-casing BERT pre-tokenizer), so tests that
/// need any working model do not depend on the MiniLM download.
pub fn small_tokenizer_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("small-tokenizer");
        std::fs::create_dir_all(&dir).unwrap();
        let mut vocab = serde_json::Map::new();
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jumps",
            "over", "lazy", "dog", "hello", "world", "a", "b", "c", "ok", "long", "word", ".", ",",
            "!", "?", "i", "love", "this", "movie", "##s", "##ing",
        ];
        for (i, w) in words.iter().enumerate() {
            vocab.insert(w.to_string(), serde_json::json!(i));
        }
        let tok = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 4, "content": "[MASK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
                }
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
        });
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tok).unwrap()).unwrap();
        dir
    })
    .clone()
}

/// Loads a model on a blocking thread.
pub async fn load(dir: &Path, task: Option<Task>, cfg: EngineConfig) -> Model {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Model::load(&dir, task, &cfg))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("load failed: {e}"))
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    hub_worker::engine::pooling::cosine(a, b)
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The inputs of `classifier-reference.json` (a string, or a `[text, pair]` array each).
pub fn classifier_inputs(rows: &[Value]) -> Vec<TextInput> {
    rows.iter()
        .map(|r| match &r["input"] {
            Value::String(s) => TextInput::Single(s.clone()),
            Value::Array(p) => TextInput::Pair(
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            ),
            other => panic!("bad input {other}"),
        })
        .collect()
}
