//! Replays the checked-in corpora of the worker's fuzz targets (`fuzz/corpus/<target>/`
//! for each of `hub_worker::fuzzing::TARGETS`: hand-made seeds and the inputs the
//! coverage-guided fuzzer kept) through the same entry points the harness drives, so
//! every `cargo test` re-checks that no known input panics or hangs. The hub's targets
//! are replayed by `hub-api/tests/fuzz_replay.rs`.

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
fn every_worker_corpus_input_runs_to_completion() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (target, run) in hub_worker::fuzzing::TARGETS {
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
fn every_worker_target_has_a_corpus_and_a_harness_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    let script = std::fs::read_to_string(root.join("scripts/fuzz.sh")).expect("scripts/fuzz.sh");
    for (target, _) in hub_worker::fuzzing::TARGETS {
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
        assert!(
            script.contains(&format!(" {target}")),
            "scripts/fuzz.sh does not run {target} by default"
        );
    }
}
