//! Validation of uploaded weight files at commit time: safetensors headers
//! (and GGUF headers), with explicit bounds, before a commit can reference them.

pub mod gguf;
pub mod safetensors;
