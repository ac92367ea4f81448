//! Fine-tuning jobs on the CPU, in Rust: a BERT encoder with a classification head,
//! or pooled into sentence embeddings, trained by candle (`model`: trainable weights
//! and a forward pass of ops that have backward passes; `train`: the classification
//! loop, evaluation and the written result; `embed`: the sentence-embedding loop with
//! in-batch negatives and retrieval evaluation; `optim`: AdamW updated in place), the
//! dataset's CSV / JSON Lines splits (`data`), the model card (`card`), and the
//! runner that claims jobs from the hub and reports back (`runner`). Nothing from a
//! repo is executed: weights are read from safetensors only, data files as text.

pub mod card;
pub mod data;
pub mod embed;
pub mod model;
pub mod optim;
pub mod runner;
pub mod train;
