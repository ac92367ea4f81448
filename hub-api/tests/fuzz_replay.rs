//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`: hand-made
//! seeds and the inputs the coverage-guided fuzzer kept) through the same
//! entry points the harness drives (`hub_api::fuzzing`), so every
//! `cargo test` re-checks that no known input panics, and that the files
//! written by the reference writers still validate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_input_runs_to_completion() {
    // The panic message names the input; keep the default hook quiet meanwhile.
    let mut failures = Vec::new();
    let mut total = 0;
    for (target, run) in hub_api::fuzzing::TARGETS {
        let inputs = files(target);
        assert!(!inputs.is_empty(), "corpus of {target} is empty");
        for path in inputs {
            let data = std::fs::read(&path).expect("read corpus file");
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(|| run(&data));
            let took = started.elapsed();
            total += 1;
            if let Err(e) = outcome {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{target} {}: panicked: {msg}", path.display()));
            } else if took > Duration::from_secs(10) {
                // Debug build, shared machine: 10 s is far beyond any input's budget.
                failures.push(format!("{target} {}: took {took:?}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total > 100, "only {total} corpus inputs");
}

#[test]
fn every_target_has_a_corpus_and_a_harness_binary() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
    for (target, _) in hub_api::fuzzing::TARGETS {
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
    }
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
