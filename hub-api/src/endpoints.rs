//! Inference endpoints as the management API and the dashboard see them:
//! validation of what a tenant asks for, the supported tasks (detected from
//! the repo: `pipeline_tag`, `config.json` architectures, a GGUF header's
//! `general.architecture`), the weights a decoder is sized by, and the JSON
//! shape of an endpoint.

use crate::db::endpoints::{EndpointRow, EventRow, ReplicaRow};
use crate::db::git::Entry;
use crate::domain::Sha256;
use crate::error::{ApiError, ApiResult};
use crate::heavy::Tenant;
use crate::state::AppState;
use hub_types::decoder::DecoderDims;
use serde_json::{json, Value};

/// Tasks the workers serve today (the names of [`hub_types::Task`]).
pub const SUPPORTED_TASKS: &[&str] = &hub_types::Task::NAMES;
/// Most replicas one endpoint may ask for.
pub const MAX_REPLICAS: i32 = 8;
/// Idle time before an endpoint with `min_replicas = 0` scales to zero, when unset.
pub const DEFAULT_SCALE_TO_ZERO_S: i32 = 900;

/// An endpoint spec the workers cannot serve (400 `validation_failed`).
#[derive(Debug, thiserror::Error)]
pub enum EndpointSpecError {
    #[error("the repo declares no task (pipeline_tag) and none could be derived from its config; pass \"task\"")]
    NoTask,
    #[error("task {0:?} is not supported; supported tasks: {tasks}", tasks = SUPPORTED_TASKS.join(", "))]
    Task(String),
    #[error("min_replicas must be between 0 and {max}", max = MAX_REPLICAS)]
    MinReplicas,
    #[error("max_replicas must be between max(1, min_replicas) and {max}", max = MAX_REPLICAS)]
    MaxReplicas,
    #[error("scale_to_zero_after_s must be at least 10")]
    ScaleToZero,
    #[error("{field} {value} is out of range")]
    OutOfRange { field: &'static str, value: i64 },
    #[error("endpoint name: {0}")]
    Name(String),
    #[error("the endpoint's repository was deleted")]
    RepoDeleted,
    #[error("task {task:?} needs {needs}, but this repo holds {holds} ({evidence})")]
    TaskMismatch {
        task: String,
        needs: &'static str,
        holds: &'static str,
        evidence: String,
    },
    #[error("this decoder's attention shape is unknown, so its KV cache cannot be sized: {0}")]
    NoDecoderShape(String),
}

/// What a repo's files say about the model it holds (task detection).
#[derive(Debug, Clone, Copy, Default)]
pub struct RepoSignals<'a> {
    pub pipeline_tag: Option<&'a str>,
    /// `config.json` `architectures`.
    pub architectures: &'a [String],
    /// `general.architecture` of the repo's GGUF file, when it has one.
    pub gguf_architecture: Option<&'a str>,
}

/// GGUF architectures that are not decoders (embedding encoders, encoder-decoders,
/// vision towers); any other GGUF architecture is taken for a decoder.
pub const NON_DECODER_GGUF_ARCHITECTURES: &[&str] = &[
    "bert",
    "nomic-bert",
    "nomic-bert-moe",
    "jina-bert-v2",
    "jina-bert-v3",
    "neo-bert",
    "modern-bert",
    "t5",
    "t5encoder",
    "clip",
];

/// Which family a repo's model belongs to, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Decoder(String),
    Encoder(String),
}

fn is_encoder_task(t: &str) -> bool {
    hub_types::Task::parse(t).is_ok_and(|t| !t.is_generation())
}

/// The family of the repo's model: its pipeline tag first (an HF-declared task), then
/// `config.json` architectures, then the GGUF header.
fn kind(s: &RepoSignals<'_>) -> Option<Kind> {
    match s.pipeline_tag {
        Some(t @ "text-generation") => return Some(Kind::Decoder(format!("pipeline_tag {t}"))),
        Some(t) if is_encoder_task(t) => return Some(Kind::Encoder(format!("pipeline_tag {t}"))),
        _ => {}
    }
    if let Some(a) = s.architectures.iter().find(|a| a.ends_with("ForCausalLM")) {
        return Some(Kind::Decoder(format!("architecture {a}")));
    }
    if let Some(a) = s.gguf_architecture {
        if !NON_DECODER_GGUF_ARCHITECTURES.contains(&a) {
            return Some(Kind::Decoder(format!("a GGUF file of architecture {a}")));
        }
    }
    if let Some(a) = s
        .architectures
        .iter()
        .find(|a| a.ends_with("ForSequenceClassification") || a.ends_with("Model"))
    {
        return Some(Kind::Encoder(format!("architecture {a}")));
    }
    if let Some(a) = s.gguf_architecture {
        return Some(Kind::Encoder(format!("a GGUF file of architecture {a}")));
    }
    None
}

/// Picks the task: the one asked for, else `text-generation` for a decoder
/// repo, else the repo's pipeline tag, else one derived from its config.
/// Refuses tasks the workers cannot serve, and a task of the other family than
/// the repo's model (an encoder task on a decoder, or the reverse).
pub fn choose_task_for(asked: Option<&str>, repo: &RepoSignals<'_>) -> Result<String, ApiError> {
    let kind = kind(repo);
    let task = match asked {
        Some(t) => t.to_string(),
        None => match (&kind, repo.pipeline_tag) {
            (Some(Kind::Decoder(_)), _) => hub_types::Task::TextGeneration.as_str().into(),
            (_, Some(p)) if SUPPORTED_TASKS.contains(&p) => p.to_string(),
            _ if repo
                .architectures
                .iter()
                .any(|a| a.ends_with("ForSequenceClassification")) =>
            {
                "text-classification".into()
            }
            _ if repo.architectures.iter().any(|a| a.ends_with("Model")) => {
                "feature-extraction".into()
            }
            (_, Some(p)) => p.to_string(),
            (_, None) => return Err(EndpointSpecError::NoTask.into()),
        },
    };
    let Ok(parsed) = hub_types::Task::parse(&task) else {
        return Err(EndpointSpecError::Task(task).into());
    };
    match (parsed.is_generation(), kind) {
        (true, Some(Kind::Encoder(evidence))) => Err(EndpointSpecError::TaskMismatch {
            task,
            needs: "a decoder (config.json architectures ending in ForCausalLM, or a GGUF file)",
            holds: "an encoder",
            evidence,
        }
        .into()),
        (false, Some(Kind::Decoder(evidence))) => Err(EndpointSpecError::TaskMismatch {
            task,
            needs: "an encoder",
            holds: "a decoder",
            evidence,
        }
        .into()),
        _ => Ok(task),
    }
}

/// [`choose_task_for`] from the pipeline tag and `config.json` architectures alone
/// (no GGUF header read): what the dashboard pre-fills.
pub fn choose_task(
    asked: Option<&str>,
    pipeline_tag: Option<&str>,
    architectures: &[String],
) -> Result<String, ApiError> {
    choose_task_for(
        asked,
        &RepoSignals {
            pipeline_tag,
            architectures,
            gguf_architecture: None,
        },
    )
}

/// What a GGUF header says, as the hub keeps it (content-addressed: never stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufFacts {
    pub architecture: Option<String>,
    /// The KV-cache shape, when the header has it.
    pub dims: Option<DecoderDims>,
}

/// The GGUF file a decoder endpoint loads: the largest top-level `*.gguf` that is not
/// a multimodal projector (`mmproj`).
pub fn decoder_gguf(files: &[Entry]) -> Option<(&Entry, &crate::db::git::BlobInfo)> {
    files
        .iter()
        .filter(|f| {
            let p = f.path.to_ascii_lowercase();
            !p.contains('/') && p.ends_with(".gguf") && !p.contains("mmproj")
        })
        .filter_map(|f| f.blob.as_ref().map(|b| (f, b)))
        .max_by_key(|(_, b)| b.size)
}

/// Reads (once per process and blob) a GGUF file's header with the bounded reader of
/// `validate::gguf`, off the async workers under a heavy-work slot of `tenant`.
pub async fn gguf_facts(
    state: &AppState,
    tenant: Tenant,
    sha256: &str,
    size: u64,
) -> ApiResult<GgufFacts> {
    if let Some(f) = state.scheduler.gguf_cached(sha256) {
        return Ok(f);
    }
    let digest = Sha256::parse(sha256)?;
    let end = size.min(crate::validate::gguf::MAX_HEADER_BYTES);
    let summary = state
        .tenancy
        .heavy
        .run_reading(tenant, &state.storage, &digest, 0..end, move |r| {
            crate::validate::gguf::check_stream(r, size)
        })
        .await?
        .map_err(|reason| ApiError::InvalidGguf {
            path: sha256.to_string(),
            reason,
        })?;
    let dims = summary
        .architecture
        .as_deref()
        .and_then(|arch| hub_types::decoder::from_gguf(arch, |k| summary.integers.get(k).copied()));
    let facts = GgufFacts {
        architecture: summary.architecture.clone(),
        dims,
    };
    state.scheduler.gguf_store(sha256, facts.clone());
    Ok(facts)
}

/// The largest `config.json` read for a decoder's shape.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A decoder's weights and KV-cache shape, as the scheduler sizes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderWeights {
    /// Bytes of the weights one replica holds: the GGUF file (mapped in place), else the
    /// top-level safetensors files as candle loads them: 4 bytes per tensor element
    /// (twice a bf16 file, four times an f8 one).
    pub weight_bytes: u64,
    pub dims: Option<DecoderDims>,
    /// A GGUF file (llama.cpp, which also keeps a prompt cache), else safetensors.
    pub gguf: bool,
}

impl DecoderWeights {
    /// Bytes a replica needs ([`hub_types::decoder::default_decoder_bytes`], plus the
    /// prompt cache for GGUF: `default_gguf_decoder_bytes`); without a shape, the weights,
    /// the fixed overhead and the prompt cache only.
    pub fn need_bytes(&self) -> u64 {
        use hub_types::decoder::{default_decoder_bytes, default_gguf_decoder_bytes};
        let cache = if self.gguf {
            hub_types::memory::DEFAULT_GEN_PROMPT_CACHE_BYTES
        } else {
            0
        };
        match self.dims {
            Some(d) if self.gguf => default_gguf_decoder_bytes(self.weight_bytes, d),
            Some(d) => default_decoder_bytes(self.weight_bytes, d),
            None => hub_types::memory::decoder_bytes(self.weight_bytes, 0).saturating_add(cache),
        }
    }
}

/// The weights and shape of the decoder in a commit's files: from the GGUF header when
/// the repo has a GGUF file, else from the safetensors sizes and `config.json`.
pub async fn decoder_weights(
    state: &AppState,
    tenant: Tenant,
    files: &[Entry],
) -> ApiResult<DecoderWeights> {
    if let Some((_, blob)) = decoder_gguf(files) {
        let size = blob.size.max(0) as u64;
        let facts = gguf_facts(state, tenant, &blob.sha256, size).await?;
        return Ok(DecoderWeights {
            weight_bytes: size,
            dims: facts.dims,
            gguf: true,
        });
    }
    // candle holds every tensor as f32: 4 bytes per element, whatever the files' dtype
    // (an f8 checkpoint takes four times its size), counted from the parameter counts
    // validated at commit (`safetensors_meta`), never from config.json's `torch_dtype`,
    // which the tenant writes. A file without counts has no valid header (the worker
    // refuses it) and counts at its worst, 4 bytes per byte.
    let blobs: Vec<_> = files
        .iter()
        .filter(|f| {
            let p = f.path.to_ascii_lowercase();
            !p.contains('/') && p.ends_with(".safetensors")
        })
        .filter_map(|f| f.blob.as_ref())
        .collect();
    let shas: Vec<String> = blobs.iter().map(|b| b.sha256.clone()).collect();
    let elements: std::collections::HashMap<String, i64> =
        crate::db::git::safetensors_params(&state.db, &shas)
            .await?
            .into_iter()
            .map(|(sha, _, total)| (sha, total))
            .collect();
    let weight_bytes = blobs
        .iter()
        .map(|b| {
            let units = elements.get(&b.sha256).copied().unwrap_or(b.size);
            (units.max(0) as u64).saturating_mul(4)
        })
        .fold(0, u64::saturating_add);
    let config_blob = files
        .iter()
        .find(|f| f.path == "config.json")
        .and_then(|f| f.blob.as_ref());
    let config = match config_blob {
        Some(b) if (b.size as u64) <= MAX_CONFIG_BYTES => {
            let bytes = state
                .storage
                .read_prefix(&Sha256::parse(&b.sha256)?, MAX_CONFIG_BYTES)
                .await?;
            serde_json::from_slice::<Value>(&bytes).ok()
        }
        _ => None,
    };
    let dims = config.as_ref().and_then(hub_types::decoder::from_config);
    Ok(DecoderWeights {
        weight_bytes,
        dims,
        gguf: false,
    })
}

/// Checks replica settings; returns the effective scale-to-zero timeout.
pub fn check_scaling(
    min: i32,
    max: i32,
    scale_to_zero_after_s: Option<i32>,
) -> Result<Option<i32>, ApiError> {
    if !(0..=MAX_REPLICAS).contains(&min) {
        return Err(EndpointSpecError::MinReplicas.into());
    }
    if !(1..=MAX_REPLICAS).contains(&max) || max < min {
        return Err(EndpointSpecError::MaxReplicas.into());
    }
    match scale_to_zero_after_s {
        Some(s) if s < 10 => Err(EndpointSpecError::ScaleToZero.into()),
        Some(s) => Ok(Some(s)),
        None if min == 0 => Ok(Some(DEFAULT_SCALE_TO_ZERO_S)),
        None => Ok(None),
    }
}

/// The public JSON of an endpoint.
pub fn to_json(
    public_url: &str,
    e: &EndpointRow,
    replicas: &[ReplicaRow],
    events: &[EventRow],
) -> Value {
    let running = replicas.iter().filter(|r| r.status == "running").count();
    json!({
        "name": e.name,
        "namespace": e.namespace,
        "repository": e.repository,
        "repo_type": e.repo_type,
        "revision": e.revision,
        "commit": e.commit_oid,
        "task": e.task,
        "precision": e.precision,
        "min_replicas": e.min_replicas,
        "max_replicas": e.max_replicas,
        "scale_to_zero_after_s": e.scale_to_zero_after_s,
        "access": e.access,
        "status": e.status,
        "message": e.message,
        "url": format!("{public_url}/endpoints/{}/{}", e.namespace, e.name),
        "replicas": {
            "target": e.target_replicas,
            "running": running,
            "total": replicas.len(),
            "items": replicas.iter().map(|r| json!({
                "id": r.id,
                "worker": r.worker_name,
                "status": r.status,
                "message": r.message,
                "in_flight": r.in_flight,
            })).collect::<Vec<_>>(),
        },
        "created_at": crate::registry::hf_date(e.created_at),
        "updated_at": crate::registry::hf_date(e.updated_at),
        "last_request_at": e.last_request_at.map(crate::registry::hf_date),
        "events": events.iter().map(|ev| json!({
            "at": crate::registry::hf_date(ev.at),
            "status": ev.status,
            "message": ev.message,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(
        asked: Option<&str>,
        tag: Option<&str>,
        archs: &[&str],
        gguf: Option<&str>,
    ) -> Result<String, String> {
        let archs: Vec<String> = archs.iter().map(|a| a.to_string()).collect();
        choose_task_for(
            asked,
            &RepoSignals {
                pipeline_tag: tag,
                architectures: &archs,
                gguf_architecture: gguf,
            },
        )
        .map_err(|e| {
            assert_eq!(e.code(), "validation_failed", "{e}");
            e.to_string()
        })
    }

    fn ok(a: Option<&str>, t: Option<&str>, archs: &[&str], g: Option<&str>) -> String {
        choose(a, t, archs, g).unwrap()
    }

    #[test]
    fn tasks() {
        assert_eq!(
            ok(None, Some("sentence-similarity"), &[], None),
            "sentence-similarity"
        );
        assert_eq!(
            ok(None, None, &["BertForSequenceClassification"], None),
            "text-classification"
        );
        assert_eq!(ok(None, None, &["BertModel"], None), "feature-extraction");
        assert!(choose(Some("translation"), None, &[], None).is_err());
        assert!(choose(None, None, &[], None).is_err());
        assert!(choose(
            None,
            Some("text2text-generation"),
            &["T5ForConditionalGeneration"],
            None
        )
        .is_err());
    }

    #[test]
    fn decoders_are_detected() {
        let tg = "text-generation";
        assert_eq!(ok(None, Some(tg), &[], None), tg);
        assert_eq!(ok(None, None, &["Qwen3ForCausalLM"], None), tg);
        assert_eq!(ok(None, None, &[], Some("gemma3")), tg);
        // An encoder GGUF is not a decoder.
        assert_eq!(
            ok(None, Some("feature-extraction"), &[], Some("bert")),
            "feature-extraction"
        );
        // The declared task wins where the families agree.
        assert_eq!(ok(Some(tg), None, &[], Some("llama")), tg);
        // A decoder's embeddings (pipeline tag) are an encoder task.
        assert_eq!(
            ok(
                None,
                Some("feature-extraction"),
                &["Qwen3ForCausalLM"],
                None
            ),
            "feature-extraction"
        );
    }

    #[test]
    fn the_wrong_family_is_a_clear_400() {
        let e = choose(
            Some("feature-extraction"),
            None,
            &["LlamaForCausalLM"],
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("needs an encoder") && e.contains("LlamaForCausalLM"),
            "{e}"
        );
        let e = choose(Some("feature-extraction"), None, &[], Some("gemma3")).unwrap_err();
        assert!(e.contains("GGUF file of architecture gemma3"), "{e}");
        let e = choose(Some("text-generation"), None, &["BertModel"], None).unwrap_err();
        assert!(
            e.contains("needs a decoder") && e.contains("BertModel"),
            "{e}"
        );
        let e = choose(
            Some("text-generation"),
            Some("sentence-similarity"),
            &[],
            None,
        )
        .unwrap_err();
        assert!(e.contains("pipeline_tag sentence-similarity"), "{e}");
    }

    #[test]
    fn scaling() {
        assert_eq!(
            check_scaling(0, 1, None).unwrap(),
            Some(DEFAULT_SCALE_TO_ZERO_S)
        );
        assert_eq!(check_scaling(1, 2, None).unwrap(), None);
        assert!(check_scaling(2, 1, None).is_err());
        assert!(check_scaling(0, 0, None).is_err());
        assert!(check_scaling(0, 9, None).is_err());
        assert!(check_scaling(0, 1, Some(5)).is_err());
    }
}
