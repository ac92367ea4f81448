//! Replays the checked-in corpora of the worker's fuzz targets
//! (`hub_worker::fuzzing::TARGETS`) through the same entry points the harness drives, so
//! every `cargo test` re-checks that no known input panics or hangs. The hub's targets
//! are replayed by `hub-api/tests/fuzz_replay.rs`; both share `fuzz/replay.rs`.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn every_worker_corpus_input_runs_to_completion() {
    replay::replay_all(hub_worker::fuzzing::TARGETS);
}

#[test]
fn every_worker_target_has_a_corpus_and_a_harness_binary() {
    replay::check_harness(hub_worker::fuzzing::TARGETS);
}
