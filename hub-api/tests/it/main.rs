//! hub-api's integration tests, as one test binary: every module links the whole app and
//! its dependencies, so one binary instead of seven saves gigabytes of `target/` and most
//! of the link time. `secrets_in_logs` stays a binary of its own because it installs a
//! process-wide trace-level log subscriber.

#[path = "../common/mod.rs"]
mod common;

mod access_matrix;
mod app_stack;
mod bounds;
mod concurrency;
mod dashboard;
mod discussions;
mod endpoints;
mod faults;
mod garbage;
mod gated_bytes;
mod gateway_caches;
mod gateway_paths;
mod generation;
mod git_http;
mod git_ids;
mod git_push;
mod hf_compat;
mod jobs;
mod listing;
mod metrics;
mod native_multipart;
mod registry;
mod repo_cache;
mod resolve_cache;
mod scheduler_scale;
mod strict_inputs;
mod tenancy;
mod viewer;
mod webhooks;
mod worktree;
mod xet;
mod xet_gc;
