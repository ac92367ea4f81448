//! hub-worker's integration tests (candle engine, pulling, control plane, HTTP API), as
//! one test binary to save link time and `target/` space. `ort.rs` stays a binary of its
//! own: it initialises ONNX Runtime for its process, which would switch the `auto` engine
//! of these tests from candle to ONNX Runtime.

#[path = "../common/mod.rs"]
mod common;

mod candle_generate;
mod control;
mod decoder_host;
mod engine;
mod finetune;
mod generate;
mod gguf_probe;
mod http_api;
mod http_generate;
mod prompt_cache;
mod pull;
mod template_sandbox;
