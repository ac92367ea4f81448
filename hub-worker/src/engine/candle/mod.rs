//! The candle backend (pure Rust, safetensors by mmap): the shared encoder plus the
//! sequence-classification heads candle-transformers does not provide for BERT,
//! RoBERTa-style and DistilBERT checkpoints.

pub mod encoder;

use crate::engine::backend::{Backend, Batch, HiddenStates};
use crate::engine::error::{LoadError, RunError};
use crate::engine::spec::{Arch, ModelSpec};
use crate::engine::task::Task;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use encoder::{find_prefix, first_token, Encoder};

/// Classification heads, applied to the first token's hidden state.
enum Head {
    /// `BertForSequenceClassification`: `bert.pooler.dense` + tanh, then `classifier`.
    Bert { pooler: Linear, classifier: Linear },
    /// `RobertaClassificationHead`: `classifier.dense` + tanh, then `classifier.out_proj`.
    Roberta { dense: Linear, out_proj: Linear },
    /// DistilBERT: `pre_classifier` + ReLU, then `classifier`.
    DistilBert {
        pre_classifier: Linear,
        classifier: Linear,
    },
}

impl Head {
    fn forward(&self, cls: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Head::Bert { pooler, classifier } => classifier.forward(&pooler.forward(cls)?.tanh()?),
            Head::Roberta { dense, out_proj } => out_proj.forward(&dense.forward(cls)?.tanh()?),
            Head::DistilBert {
                pre_classifier,
                classifier,
            } => classifier.forward(&pre_classifier.forward(cls)?.relu()?),
        }
    }
}

fn linear(vb: VarBuilder, out: usize, inp: usize) -> candle_core::Result<Linear> {
    Ok(Linear::new(
        vb.get((out, inp), "weight")?,
        Some(vb.get(out, "bias")?),
    ))
}

/// A model loaded into candle on the CPU.
pub struct CandleBackend {
    encoder: Encoder,
    head: Option<Head>,
}

/// Maps the weight files. The files are blobs of the worker's content-addressed cache:
/// written once, verified, renamed into place read-only and never modified afterwards,
/// which is the condition `from_mmaped_safetensors` needs.
#[allow(unsafe_code)]
fn map_weights(spec: &ModelSpec) -> Result<VarBuilder<'static>, LoadError> {
    // SAFETY: see above; the mapping is read-only and the files are immutable.
    unsafe { VarBuilder::from_mmaped_safetensors(&spec.safetensors, DType::F32, &Device::Cpu) }
        .map_err(|e| LoadError::Weights(e.to_string()))
}

/// The weights of `spec`, mapped: `(root, base)` where `base` is positioned at the model
/// prefix (`bert.`, `roberta.`, `distilbert.` or none) and `root` at the top (heads).
pub(crate) fn open_weights(
    spec: &ModelSpec,
) -> Result<(VarBuilder<'static>, VarBuilder<'static>), LoadError> {
    if spec.safetensors.is_empty() {
        return Err(LoadError::NoWeights {
            onnx_hint: " (the candle engine reads safetensors only)",
        });
    }
    let vb = map_weights(spec)?;
    let model_prefix = format!("{}.", spec.model_type.replace('-', "_"));
    let candidates: Vec<&str> = match spec.encoder.arch {
        Arch::Bert => vec!["bert.", "", &model_prefix],
        Arch::Roberta => vec!["roberta.", "", &model_prefix],
        Arch::DistilBert => vec!["distilbert.", ""],
    };
    let prefix =
        find_prefix(&vb, &candidates, "embeddings.word_embeddings.weight").ok_or_else(|| {
            LoadError::Weights(format!(
                "no embeddings.word_embeddings.weight tensor under any of the prefixes {candidates:?}"
            ))
        })?;
    let base = if prefix.is_empty() {
        vb.clone()
    } else {
        vb.pp(prefix.trim_end_matches('.'))
    };
    Ok((vb, base))
}

impl CandleBackend {
    /// Loads the encoder (and, for text classification, its head) from `spec`.
    pub fn load(spec: &ModelSpec, task: Task) -> Result<CandleBackend, LoadError> {
        let (vb, base) = open_weights(spec)?;
        let encoder = Encoder::load(base.clone(), &spec.encoder)
            .map_err(|e| LoadError::Weights(e.to_string()))?;
        let head = if task == Task::TextClassification {
            Some(load_head(spec, &vb, &base)?)
        } else {
            None
        };
        Ok(CandleBackend { encoder, head })
    }
}

fn load_head(spec: &ModelSpec, root: &VarBuilder, base: &VarBuilder) -> Result<Head, LoadError> {
    let h = spec.encoder.hidden_size;
    let n = spec.labels.len();
    if n == 0 {
        return Err(LoadError::UnsupportedTask {
            task: Task::TextClassification.to_string(),
            reason: "config.json has no id2label or num_labels".to_string(),
        });
    }
    let missing = |what: &str, e: candle_core::Error| LoadError::UnsupportedTask {
        task: Task::TextClassification.to_string(),
        reason: format!("no classification head in the weights ({what}: {e})"),
    };
    Ok(match spec.encoder.arch {
        Arch::Bert => Head::Bert {
            pooler: linear(base.pp("pooler.dense"), h, h)
                .map_err(|e| missing("pooler.dense", e))?,
            classifier: linear(root.pp("classifier"), n, h)
                .map_err(|e| missing("classifier", e))?,
        },
        Arch::Roberta => Head::Roberta {
            dense: linear(root.pp("classifier.dense"), h, h)
                .map_err(|e| missing("classifier.dense", e))?,
            out_proj: linear(root.pp("classifier.out_proj"), n, h)
                .map_err(|e| missing("classifier.out_proj", e))?,
        },
        Arch::DistilBert => Head::DistilBert {
            pre_classifier: linear(root.pp("pre_classifier"), h, h)
                .map_err(|e| missing("pre_classifier", e))?,
            classifier: linear(root.pp("classifier"), n, h)
                .map_err(|e| missing("classifier", e))?,
        },
    })
}

impl Backend for CandleBackend {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn embed(&mut self, batch: &Batch) -> Result<HiddenStates, RunError> {
        let run = || -> candle_core::Result<HiddenStates> {
            let hidden = self.encoder.forward(batch)?;
            let dim = hidden.dim(2)?;
            let data = hidden.flatten_all()?.to_vec1::<f32>()?;
            Ok(HiddenStates { data, dim })
        };
        run().map_err(run_err)
    }

    fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>, RunError> {
        let head = self.head.as_ref().ok_or(RunError::NoClassifier)?;
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let hidden = self.encoder.forward(batch)?;
            head.forward(&first_token(&hidden)?)?.to_vec2::<f32>()
        };
        run().map_err(run_err)
    }
}

fn run_err(e: candle_core::Error) -> RunError {
    RunError::Candle(e.to_string())
}
