//! Wire types of the control-plane contract between a worker and hub-api
//! (`/api/v1/workers/...`). The hub side implements the same shapes.

use serde::{Deserialize, Serialize};

/// What a worker can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub cores: u32,
}

/// `POST /api/v1/workers/register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub name: String,
    /// Base URL where the gateway reaches this worker, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    pub capacity: Capacity,
    pub version: String,
}

/// `POST /api/v1/workers/register` answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub worker_id: String,
    pub heartbeat_interval_s: u64,
    /// Bearer secret the gateway presents on `/models/...`.
    pub gateway_secret: String,
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("worker_id", &self.worker_id)
            .field("heartbeat_interval_s", &self.heartbeat_interval_s)
            .field("gateway_secret", &"<redacted>")
            .finish()
    }
}

/// One model's state in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatModel {
    pub assignment_id: String,
    /// `pulling`, `loading`, `running` or `failed`.
    pub status: String,
    pub message: Option<String>,
    pub in_flight: u32,
    pub queue_depth: u32,
}

/// `POST /api/v1/workers/{worker_id}/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub free_memory_bytes: u64,
    pub models: Vec<HeartbeatModel>,
}

/// `POST /api/v1/workers/{worker_id}/heartbeat` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub ok: bool,
}

/// One model the hub wants on this worker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub assignment_id: String,
    /// Routes serve it under `/models/{model_key}`.
    pub model_key: String,
    #[serde(default = "model_repo_type")]
    pub repo_type: String,
    /// `namespace/name`.
    pub repo_id: String,
    /// A 40-hex commit id.
    pub revision: String,
    /// `feature-extraction`, `sentence-similarity` or `text-classification`.
    pub task: String,
    /// Bearer token for `/resolve` downloads of this repo.
    pub pull_token: String,
    #[serde(default)]
    pub max_batch_tokens: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// `f32` (also when absent) or `bf16` (needs the OpenVINO engine).
    #[serde(default)]
    pub precision: Option<String>,
}

fn model_repo_type() -> String {
    "model".to_string()
}

impl Assignment {
    /// Identity of what is asked for; a change means the model must be reloaded. The pull
    /// token is left out: it rotates without changing the model.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{:?}|{:?}|{:?}",
            self.model_key,
            self.repo_type,
            self.repo_id,
            self.revision,
            self.task,
            self.max_batch_tokens,
            self.max_concurrent,
            self.precision
        )
    }
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment")
            .field("assignment_id", &self.assignment_id)
            .field("model_key", &self.model_key)
            .field("repo_type", &self.repo_type)
            .field("repo_id", &self.repo_id)
            .field("revision", &self.revision)
            .field("task", &self.task)
            .field("pull_token", &"<redacted>")
            .field("max_batch_tokens", &self.max_batch_tokens)
            .field("max_concurrent", &self.max_concurrent)
            .field("precision", &self.precision)
            .finish()
    }
}

/// `GET /api/v1/workers/{worker_id}/assignments?version=N&wait_s=25` answer: the full
/// desired set. Items are parsed one by one ([`parse_assignment`]) so one malformed
/// assignment fails alone instead of hiding the whole set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentsResponse {
    pub version: u64,
    pub assignments: Vec<serde_json::Value>,
}

/// One item of the desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Valid(Assignment),
    /// Malformed, but with an id: reported `failed` with the parse error.
    Invalid {
        assignment_id: String,
        model_key: String,
        error: String,
    },
}

impl Desired {
    /// The assignment id.
    pub fn id(&self) -> &str {
        match self {
            Desired::Valid(a) => &a.assignment_id,
            Desired::Invalid { assignment_id, .. } => assignment_id,
        }
    }

    /// What identifies this item's content (see [`Assignment::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        match self {
            Desired::Valid(a) => a.fingerprint(),
            Desired::Invalid { error, .. } => format!("invalid|{error}"),
        }
    }
}

/// Parses one item of the desired set; `None` when it has no `assignment_id` at all.
pub fn parse_assignment(v: &serde_json::Value) -> Option<Desired> {
    match serde_json::from_value::<Assignment>(v.clone()) {
        Ok(a) => Some(Desired::Valid(a)),
        Err(e) => {
            let id = v.get("assignment_id")?.as_str()?.to_string();
            Some(Desired::Invalid {
                assignment_id: id,
                model_key: v
                    .get("model_key")
                    .and_then(|k| k.as_str())
                    .unwrap_or("")
                    .to_string(),
                error: e.to_string(),
            })
        }
    }
}
