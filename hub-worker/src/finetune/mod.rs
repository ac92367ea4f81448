//! Fine-tuning jobs on the CPU, in Rust: a BERT encoder with a classification head,
//! or pooled into sentence embeddings, or LoRA adapters on a decoder LLM, trained by
//! candle (`model`: trainable BERT weights and a forward pass of ops that have
//! backward passes; `train`: the classification loop, evaluation and the written
//! result; `embed`: the sentence-embedding loop with in-batch negatives and retrieval
//! evaluation; `decoder`: a trainable forward of the llama, mistral, qwen2, qwen3 and
//! gemma3 families with LoRA adapters, built from the differentiable blocks of `ops`;
//! `lora`: the causal-LM loop, perplexity and exact-match evaluation, merged weights
//! and the PEFT adapter; `optim`: AdamW updated in place), the dataset's CSV / JSON Lines splits (`data`), the model card (`card`),
//! and the runner that claims jobs from the hub and reports back (`runner`). Nothing
//! from a repo is executed: weights are read from safetensors only, data files as
//! text, chat templates in the sandboxed template engine.

pub mod card;
pub mod data;
pub mod decoder;
pub mod embed;
pub mod fused;
pub mod lora;
pub mod model;
pub mod ops;
pub mod optim;
pub mod runner;
pub mod train;
