//! Fine-tuning jobs on the CPU, in Rust: a BERT encoder with a classification head
//! trained by candle (`model`: trainable weights and a forward pass of ops that have
//! backward passes; `train`: the loop, evaluation and the written result; `optim`:
//! AdamW updated in place), the
//! dataset's CSV / JSON Lines splits (`data`), the model card (`card`), and the
//! runner that claims jobs from the hub and reports back (`runner`). Nothing from a
//! repo is executed: weights are read from safetensors only, data files as text.

pub mod card;
pub mod data;
pub mod model;
pub mod optim;
pub mod runner;
pub mod train;
