//! The Hugging Face-compatible API: what `huggingface_hub`, the `hf` CLI,
//! `transformers` and the `hf-hub` crate call (see the protocol reference).

pub mod access;
pub mod commit;
pub mod discussions;
pub mod info;
pub mod lfs;
pub mod lfs_files;
pub mod likes;
pub mod refs;
pub mod repos;
pub mod resolve;
pub mod tree;
pub mod upload;
pub mod webhooks;
pub mod whoami;
