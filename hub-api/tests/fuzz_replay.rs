//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`: hand-made
//! seeds and the inputs the coverage-guided fuzzer kept) through the same
//! entry points the harness drives (`hub_api::fuzzing`), so every
//! `cargo test` re-checks that no known input panics, and that the files
//! written by the reference writers still validate. The replay itself is
//! `fuzz/replay.rs`, shared with the worker's `tests/fuzz_replay.rs`.

#[path = "../../fuzz/replay.rs"]
mod replay;

use replay::corpus_dir;

#[test]
fn every_corpus_input_runs_to_completion() {
    replay::replay_all(hub_api::fuzzing::TARGETS);
}

#[test]
fn every_target_has_a_corpus_and_a_harness_binary() {
    replay::check_harness(hub_api::fuzzing::TARGETS);
}

/// The seeds written by the reference writers (PyPI `safetensors` and `gguf`)
/// are valid files: the validators accept them, so the corpus exercises the
/// accepting paths and not only the refusals.
#[test]
fn reference_writer_seeds_validate() {
    use hub_api::validate::{gguf, safetensors};
    for name in [
        "seed-f32-i64.safetensors",
        "seed-mixed-dtypes.safetensors",
        "seed-empty.safetensors",
        "seed-padded.safetensors",
        "seed-f4-half-bytes.safetensors",
    ] {
        let b = std::fs::read(corpus_dir("safetensors").join(name)).expect(name);
        safetensors::check_file(&b).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in [
        "seed-overlap.safetensors",
        "seed-duplicate.safetensors",
        "seed-shape-overflow.safetensors",
        "seed-header-len-max.safetensors",
        "seed-f4-odd-count.safetensors",
    ] {
        let b = std::fs::read(corpus_dir("safetensors").join(name)).expect(name);
        assert!(safetensors::check_file(&b).is_err(), "{name} was accepted");
    }
    for name in [
        "seed-small.gguf",
        "seed-aligned64.gguf",
        "seed-quantized-q4k.gguf",
    ] {
        let b = std::fs::read(corpus_dir("gguf").join(name)).expect(name);
        gguf::check(&b, b.len() as u64).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in [
        "seed-tensor-count-huge.gguf",
        "seed-string-len-huge.gguf",
        "seed-dims-overflow.gguf",
        "seed-offset-overflow.gguf",
        "seed-nested-array.gguf",
    ] {
        let b = std::fs::read(corpus_dir("gguf").join(name)).expect(name);
        assert!(
            gguf::check(&b, b.len() as u64).is_err(),
            "{name} was accepted"
        );
    }
}

/// What the fuzzer found, stated directly (the inputs are also in the corpora
/// as `found-*`): each of these panicked before its fix.
#[test]
fn fuzz_findings_stay_fixed() {
    // `.gitattributes` / gitIgnore: a bracket expression "[[:]" sliced
    // `rest[2..1]` looking for the class name's end, and panicked.
    let rules = hub_api::git::attributes::LfsRules::parse("[[:] filter=lfs\n")
        .expect("\"[[:]\" is within the pattern limits");
    let _ = rules.is_lfs("[:");
    assert!(!rules.is_lfs("x"));
    // Dashboard tensor table: dimensions whose product passes u128 overflowed
    // (a panic with overflow checks, a wrong count without); now saturating.
    let max = u64::MAX;
    let header =
        format!(r#"{{"a":{{"dtype":"F64","shape":[{max},{max},{max}],"data_offsets":[0,8]}}}}"#);
    let t = hub_api::dashboard::tensors::parse_table(header.as_bytes()).expect("a table");
    assert_eq!(t.count, 1);
    assert_eq!(t.total_exact, hub_api::dashboard::text::count(i64::MAX));
}
