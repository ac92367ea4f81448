//! Shared by the crates' `tests/fuzz_replay.rs` (included with `#[path]`): replays the
//! checked-in corpora (`fuzz/corpus/<target>/`: hand-made seeds and the inputs the
//! coverage-guided fuzzer kept) through the entry points the harness drives, and checks
//! that every target has a corpus and a harness binary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fuzz target: its name and the entry point the harness drives.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// The repository's `fuzz/` directory (both crates sit one level below the root).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

pub fn corpus_dir(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
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

/// Runs every corpus input of every target; fails naming each input that panicked or
/// took over 10 s (a debug build on a shared machine: far beyond any input's budget).
pub fn replay_all(targets: &[Target<'_>]) {
    let mut failures = Vec::new();
    let mut total = 0;
    for (target, run) in targets {
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
                failures.push(format!("{target} {}: took {took:?}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total > 100, "only {total} corpus inputs");
}

/// Every target has a corpus, a `[[bin]]` in `fuzz/Cargo.toml` and is run by default by
/// `scripts/fuzz.sh`.
pub fn check_harness(targets: &[Target<'_>]) {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let script =
        std::fs::read_to_string(fuzz_dir().join("../scripts/fuzz.sh")).expect("scripts/fuzz.sh");
    for (target, _) in targets {
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
        let listed = script
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .any(|word| word == *target);
        assert!(listed, "scripts/fuzz.sh does not run {target} by default");
    }
}
