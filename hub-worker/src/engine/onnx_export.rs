//! Derives an ONNX graph from a BERT-family model's safetensors weights, so ONNX Runtime
//! can serve repos that ship only safetensors.

use super::error::LoadError;
use super::spec::ModelSpec;
use super::task::Task;

/// Serialised ONNX `ModelProto` for `spec`'s encoder (and head, for classification).
pub fn export(_spec: &ModelSpec, _task: Task) -> Result<Vec<u8>, LoadError> {
    Err(LoadError::Onnx(
        "deriving ONNX graphs is not implemented yet".to_string(),
    ))
}
