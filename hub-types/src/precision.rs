//! The arithmetic of an endpoint's replicas.

use serde::{Deserialize, Serialize};

/// `f32`: full precision, embeddings as PyTorch's fp32. `bf16`: bfloat16 with fp32
/// accumulation on CPUs with AMX / AVX512-BF16 (several times faster there; embeddings
/// within cosine 0.9999 of fp32); needs workers with the OpenVINO engine, else the
/// endpoint fails with that reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = EndpointPrecision))]
pub enum Precision {
    /// Full fp32 (every engine; results as PyTorch's fp32 to ~1e-6).
    #[default]
    F32,
    /// bfloat16 with fp32 accumulation where the CPU has it (AMX / AVX512-BF16; fp32
    /// elsewhere). OpenVINO only; the other engines refuse it.
    Bf16,
}

/// A precision name that is neither `f32` nor `bf16`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("precision {0:?} is not supported (f32, bf16)")]
pub struct UnknownPrecision(pub String);

impl Precision {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Result<Precision, UnknownPrecision> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(UnknownPrecision(other.chars().take(100).collect())),
        }
    }
}

crate::wire_name!(Precision, UnknownPrecision);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(Precision::parse(p.as_str()), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(
                serde_json::from_value::<Precision>(p.as_str().into()).unwrap(),
                p
            );
        }
        assert_eq!(Precision::default(), Precision::F32);
    }

    #[test]
    fn unknown_precisions_are_named_in_the_error() {
        let e = Precision::parse("fp8").unwrap_err();
        assert_eq!(
            e.to_string(),
            "precision \"fp8\" is not supported (f32, bf16)"
        );
        let e = serde_json::from_str::<Precision>("\"F32\"").unwrap_err();
        assert!(e.to_string().contains("\"F32\" is not supported"), "{e}");
    }
}
