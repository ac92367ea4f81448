//! The control-plane contract between a worker and hub-api (`/api/v1/workers/...`):
//! the worker registers, heartbeats the status of each replica, and long-polls its
//! desired set of assignments. Both sides serialize and parse these types, so the JSON
//! on the wire has one declaration; `tests/wire.rs` pins its shape.
//!
//! Receivers are lenient where the hub always was: whole numbers may be spelled `16.0`,
//! and a heartbeat may leave out `message`, `in_flight`, `queue_depth` and `models`.

use crate::number::{whole, whole_opt};
use crate::{Precision, Task};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The header a worker sends on its own heartbeat and assignment calls: the
/// `gateway_secret` its registration returned. A worker-scope credential is a
/// fleet credential; this ties each call to the worker that registered, so
/// holding the credential and another worker's id is not enough to poll that
/// worker's assignments (their pull tokens) or report on its replicas.
pub const WORKER_SECRET_HEADER: &str = "X-Paddock-Worker-Secret";

/// Set by a worker on an error answer to a request it did not start: the model is not
/// on this worker, not ready, or its process is being started again. The gateway sends
/// such a request to another replica of the endpoint when there is one (it holds the
/// body), and relays the answer otherwise.
pub const NOT_STARTED_HEADER: &str = "X-Paddock-Not-Started";

/// How long the hub's and a worker's HTTP servers keep an idle keep-alive
/// connection open (nginx's default). It must outlast the idle time after
/// which clients drop a pooled connection themselves: httpx's 5 s, and the
/// gateway's own pool to workers (`hub-api`'s `gateway::upstream`, 30 s).
/// A server that closes first (actix's default is 5 s, cut up to 0.5 s short
/// by its coarse clock) races a client that reuses the connection at that
/// moment: the request meets a closing socket and the client sees "server
/// disconnected without sending a response".
pub const SERVER_KEEP_ALIVE: Duration = Duration::from_secs(75);

/// What a worker can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capacity {
    /// Total memory of the worker's host.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(deserialize_with = "whole")]
    pub memory_bytes: u64,
    /// Compute threads the worker uses (the hub clamps to 4096).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 4096))]
    #[serde(deserialize_with = "whole")]
    pub cores: u32,
}

/// `POST /api/v1/workers/register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// Shown in the dashboard and the logs (1-200 characters).
    pub name: String,
    /// Base URL where the gateway reaches this worker, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    pub capacity: Capacity,
    /// The worker's version (empty when absent).
    #[serde(default)]
    pub version: String,
}

/// `POST /api/v1/workers/register` answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The id to heartbeat and poll under.
    pub worker_id: String,
    /// How often the hub wants a heartbeat; silent for 3 intervals is lost.
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

/// One replica's state in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatModel {
    /// The `assignment_id` of the assignment this replica serves.
    pub assignment_id: String,
    /// A [`crate::ReplicaStatus`] name: `pulling`, `loading`, `running` or `failed`.
    /// Text on the wire, parsed by the hub with [`crate::ReplicaStatus::parse`], so an
    /// unknown one is the hub's own validation error rather than a malformed body.
    pub status: String,
    /// Why a replica failed.
    #[serde(default)]
    pub message: Option<String>,
    /// Requests being computed.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(default, deserialize_with = "whole")]
    pub in_flight: u32,
    /// Requests waiting.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(default, deserialize_with = "whole")]
    pub queue_depth: u32,
}

/// `POST /api/v1/workers/{worker_id}/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    /// Memory available on the worker's host now.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(deserialize_with = "whole")]
    pub free_memory_bytes: u64,
    /// Bytes the worker's model cache could give a new model's download now: the room
    /// under its limits (`--cache-max-gib`, `--cache-min-free-gib`) less what downloads
    /// in progress still take, plus what it could evict (content no loaded or loading
    /// model uses). The scheduler prefers workers where a model's files fit. Absent from
    /// workers that do not report it.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_opt"
    )]
    pub cache_room_bytes: Option<u64>,
    /// Every replica the worker holds.
    #[serde(default)]
    pub models: Vec<HeartbeatModel>,
}

/// `POST /api/v1/workers/{worker_id}/heartbeat` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub ok: bool,
}

/// `GET /api/v1/workers/{worker_id}/assignments` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct AssignmentsQuery {
    /// The `version` of the last answer; the poll returns when it changes.
    #[serde(default)]
    pub version: i64,
    /// Longest wait in seconds (default 25, at most 60).
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 60))]
    #[serde(default)]
    pub wait_s: Option<u64>,
}

/// One model the hub wants on a worker.
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
    pub task: Task,
    /// Bearer token for `/resolve` downloads of this repo.
    pub pull_token: String,
    /// Overrides the worker's token budget per forward pass (the hub does not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_tokens: Option<u64>,
    /// Overrides the worker's concurrent requests per model (the hub does not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// `f32` when absent.
    #[serde(default)]
    pub precision: Option<Precision>,
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

/// `GET /api/v1/workers/{worker_id}/assignments` answer: the full desired set. The hub
/// writes `AssignmentsResponse<Assignment>`; a worker reads the items as
/// `serde_json::Value` and parses them one by one, so that one malformed assignment
/// fails alone instead of hiding the whole set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentsResponse<A = Assignment> {
    /// Changes whenever the set does; pass it back as the poll's `version`.
    pub version: i64,
    pub assignments: Vec<A>,
}

/// Why a fresh control-plane token could not be had.
pub type TokenRefreshError = Box<dyn std::error::Error + Send + Sync>;

/// Mints a fresh control-plane token. A hub that runs a worker in-process gives one, so
/// the worker survives the retirement of the key that signed its token (and the token's
/// expiry): on 401/403 the worker asks for a new token once and retries; only a
/// rejection of the fresh token is final.
pub type TokenRefresh = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, TokenRefreshError>> + Send>>
        + Send
        + Sync,
>;
