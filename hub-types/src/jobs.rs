//! The fine-tuning job contract between hub-api and the worker that runs a job
//! (`/api/v1/job-runner/...`), and the job's parameters as a client sends them
//! (`POST /api/v1/jobs/{ns}`), declared once: the hub validates and stores
//! [`Hyperparameters`], the worker trains with exactly what it is handed.
//!
//! A worker claims a queued job ([`ClaimResponse`], with a lease and a claim id),
//! reports [`Progress`] (the answer says whether to stop: cancelled, over the
//! wall-time limit or the namespace's CPU quota), uploads the output files one by
//! one, and ends with [`Finish`]; the hub then commits the files to the output repo.

use crate::number::whole;
use serde::{Deserialize, Serialize};

/// What a job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobTask {
    /// A sequence-classification head on a BERT encoder, trained with the encoder
    /// (cross-entropy on the dataset's `label` column).
    TextClassification,
    /// A BERT sentence encoder (mean pooling, L2 normalisation, as
    /// sentence-transformers' all-MiniLM models) trained on `anchor`/`positive`
    /// sentence pairs with MultipleNegativesRankingLoss (in-batch negatives).
    SentenceEmbedding,
    /// LoRA adapters on the attention (and optionally MLP) projections of a
    /// safetensors decoder (llama, mistral, qwen2, qwen3, gemma3), trained with
    /// the causal-LM loss on the dataset's `prompt`/`completion`, `messages` or
    /// `text` rows; the result is the merged model plus the PEFT adapter.
    CausalLmLora,
}

/// A task name no job runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "task {0:?} is not supported by fine-tuning jobs (text-classification, sentence-embedding, causal-lm-lora)"
)]
pub struct UnknownJobTask(pub String);

impl JobTask {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobTask::TextClassification => "text-classification",
            JobTask::SentenceEmbedding => "sentence-embedding",
            JobTask::CausalLmLora => "causal-lm-lora",
        }
    }

    /// The endpoint task that serves the result (`POST /api/v1/endpoints/{ns}`).
    pub const fn endpoint_task(self) -> crate::Task {
        match self {
            JobTask::TextClassification => crate::Task::TextClassification,
            JobTask::SentenceEmbedding => crate::Task::FeatureExtraction,
            JobTask::CausalLmLora => crate::Task::TextGeneration,
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<JobTask, UnknownJobTask> {
        match s {
            "text-classification" => Ok(JobTask::TextClassification),
            "sentence-embedding" => Ok(JobTask::SentenceEmbedding),
            "causal-lm-lora" => Ok(JobTask::CausalLmLora),
            other => Err(UnknownJobTask(other.chars().take(64).collect())),
        }
    }

    /// The peak learning rate a job of this task uses when the request names
    /// none: 5e-5 for the encoders (full fine-tuning), 2e-4 for LoRA adapters
    /// (PEFT's usual starting point: the adapters start at zero and are small).
    pub const fn default_learning_rate(self) -> f64 {
        match self {
            JobTask::TextClassification | JobTask::SentenceEmbedding => 5e-5,
            JobTask::CausalLmLora => 2e-4,
        }
    }
}

crate::wire_name!(JobTask, UnknownJobTask);

/// The training knobs. Every field has a default; [`Hyperparameters::check`] is the
/// one place their bounds are decided (the hub refuses out-of-bounds values with 400,
/// the worker re-checks what it is handed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    /// Passes over the train split (1-50, default 3).
    #[serde(default = "d_epochs", deserialize_with = "whole")]
    pub epochs: u32,
    /// Peak learning rate of AdamW (0 < lr <= 0.01, default 5e-5).
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Examples per optimizer step (1-256, default 16).
    #[serde(default = "d_batch", deserialize_with = "whole")]
    pub batch_size: u32,
    /// Tokens per example after truncation, special tokens included (8-512, default
    /// 128). Also accepted as `max_length` (the name PEFT/TRL scripts use).
    #[serde(default = "d_seq", deserialize_with = "whole", alias = "max_length")]
    pub max_seq_length: u32,
    /// Seeds the head's initialisation and the shuffling (default 42).
    #[serde(default = "d_seed", deserialize_with = "whole")]
    pub seed: u64,
    /// AdamW decoupled weight decay (0-1, default 0.01).
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Fraction of the steps spent warming the learning rate up linearly from 0;
    /// it then decays linearly to 0 (0-0.5, default 0.1).
    #[serde(default = "d_warmup")]
    pub warmup_ratio: f64,
    /// Column of the text (default `text`).
    #[serde(default = "d_text")]
    pub text_column: String,
    /// Column of the label (default `label`): strings or integers.
    #[serde(default = "d_label")]
    pub label_column: String,
    /// `sentence-embedding` only: column of the anchor sentence (a query; default
    /// `anchor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_column: Option<String>,
    /// `sentence-embedding` only: column of the sentence that belongs with the
    /// anchor (default `positive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_column: Option<String>,
    /// `causal-lm-lora` only: the rank `r` of each adapter (1-256, default 8).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_whole"
    )]
    pub lora_rank: Option<u32>,
    /// `causal-lm-lora` only: the adapters' scale numerator; an adapter adds
    /// `lora_alpha / lora_rank * B A` to its weight (above 0, at most 1024,
    /// default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<f64>,
    /// `causal-lm-lora` only: the projections that get adapters, in every layer
    /// (any of `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
    /// `down_proj`; default the four attention projections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_targets: Option<Vec<String>>,
}

/// The projections LoRA adapters may target, in PEFT's module names.
pub const LORA_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The default `lora_targets`: the attention projections.
pub const DEFAULT_LORA_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

fn opt_whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "whole")] u32);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

fn d_epochs() -> u32 {
    3
}
fn d_lr() -> f64 {
    5e-5
}
fn d_batch() -> u32 {
    16
}
fn d_seq() -> u32 {
    128
}
fn d_seed() -> u64 {
    42
}
fn d_wd() -> f64 {
    0.01
}
fn d_warmup() -> f64 {
    0.1
}
fn d_text() -> String {
    "text".into()
}
fn d_label() -> String {
    "label".into()
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Hyperparameters {
            epochs: d_epochs(),
            learning_rate: d_lr(),
            batch_size: d_batch(),
            max_seq_length: d_seq(),
            seed: d_seed(),
            weight_decay: d_wd(),
            warmup_ratio: d_warmup(),
            text_column: d_text(),
            label_column: d_label(),
            anchor_column: None,
            positive_column: None,
            lora_rank: None,
            lora_alpha: None,
            lora_targets: None,
        }
    }
}

/// A hyperparameter out of bounds: the field and its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hyperparameters.{field} must be {rule}")]
pub struct BadHyperparameter {
    pub field: &'static str,
    pub rule: &'static str,
}

/// Why a request's `hyperparameters` were refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestHyperparametersError {
    /// Not the object's shape: an unknown field, a wrong type.
    #[error("hyperparameters: {0}")]
    Json(#[from] serde_json::Error),
    /// A field out of its bounds, or one the task does not read.
    #[error(transparent)]
    Bad(#[from] BadHyperparameter),
}

fn column_ok(c: &str) -> bool {
    !c.is_empty() && c.len() <= 128 && !c.chars().any(char::is_control)
}

impl Hyperparameters {
    /// Checks every bound.
    pub fn check(&self) -> Result<(), BadHyperparameter> {
        let bad = |field, rule| Err(BadHyperparameter { field, rule });
        if !(1..=50).contains(&self.epochs) {
            return bad("epochs", "an integer from 1 to 50");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 0.01) {
            return bad("learning_rate", "a number above 0 and at most 0.01");
        }
        if !(1..=256).contains(&self.batch_size) {
            return bad("batch_size", "an integer from 1 to 256");
        }
        if !(8..=512).contains(&self.max_seq_length) {
            return bad("max_seq_length", "an integer from 8 to 512");
        }
        if !(0.0..=1.0).contains(&self.weight_decay) {
            return bad("weight_decay", "a number from 0 to 1");
        }
        if !(0.0..=0.5).contains(&self.warmup_ratio) {
            return bad("warmup_ratio", "a number from 0 to 0.5");
        }
        if !column_ok(&self.text_column) {
            return bad("text_column", "1-128 characters without control characters");
        }
        if !column_ok(&self.label_column) || self.label_column == self.text_column {
            return bad(
                "label_column",
                "1-128 characters without control characters, other than text_column",
            );
        }
        for (field, c) in [
            ("anchor_column", &self.anchor_column),
            ("positive_column", &self.positive_column),
        ] {
            if c.as_deref().is_some_and(|c| !column_ok(c)) {
                return bad(field, "1-128 characters without control characters");
            }
        }
        if self.anchor() == self.positive() {
            return bad("positive_column", "a column other than anchor_column");
        }
        if self.lora_rank.is_some_and(|r| !(1..=256).contains(&r)) {
            return bad("lora_rank", "an integer from 1 to 256");
        }
        if self.lora_alpha.is_some_and(|a| !(a > 0.0 && a <= 1024.0)) {
            return bad("lora_alpha", "a number above 0 and at most 1024");
        }
        if let Some(t) = &self.lora_targets {
            let known = t.iter().all(|m| LORA_MODULES.contains(&m.as_str()));
            let mut uniq = t.clone();
            uniq.sort();
            uniq.dedup();
            if t.is_empty() || !known || uniq.len() != t.len() {
                return bad(
                    "lora_targets",
                    "a non-empty list of distinct module names among q_proj, k_proj, \
                     v_proj, o_proj, gate_proj, up_proj, down_proj",
                );
            }
        }
        Ok(())
    }

    /// Parses a request's `hyperparameters` object for `task`: the task's defaults
    /// where the request is silent (the learning rate: see
    /// [`JobTask::default_learning_rate`]), then [`Hyperparameters::for_task`].
    pub fn from_request(
        task: JobTask,
        raw: Option<serde_json::Value>,
    ) -> Result<Hyperparameters, RequestHyperparametersError> {
        let mut raw = raw.unwrap_or_else(|| serde_json::json!({}));
        if let Some(obj) = raw.as_object_mut() {
            obj.entry("learning_rate")
                .or_insert_with(|| serde_json::json!(task.default_learning_rate()));
        }
        let hp: Hyperparameters = serde_json::from_value(raw)?;
        Ok(hp.for_task(task)?)
    }

    /// Checks every bound and the fields that belong to `task`, and fills in the
    /// task's column defaults, so the stored hyperparameters name every column the
    /// job reads.
    pub fn for_task(mut self, task: JobTask) -> Result<Hyperparameters, BadHyperparameter> {
        self.check()?;
        let pair_rule = "left out: it applies to sentence-embedding jobs";
        let lora_rule = "left out: it applies to causal-lm-lora jobs";
        let pairs = [
            ("anchor_column", self.anchor_column.is_some()),
            ("positive_column", self.positive_column.is_some()),
        ];
        let lora = [
            ("lora_rank", self.lora_rank.is_some()),
            ("lora_alpha", self.lora_alpha.is_some()),
            ("lora_targets", self.lora_targets.is_some()),
        ];
        let refuse = |fields: &[(&'static str, bool)], rule: &'static str| match fields
            .iter()
            .find(|(_, set)| *set)
        {
            Some(&(field, _)) => Err(BadHyperparameter { field, rule }),
            None => Ok(()),
        };
        match task {
            JobTask::TextClassification => {
                refuse(&pairs, pair_rule)?;
                refuse(&lora, lora_rule)?;
            }
            JobTask::SentenceEmbedding => {
                refuse(&lora, lora_rule)?;
                self.anchor_column = Some(self.anchor().to_string());
                self.positive_column = Some(self.positive().to_string());
            }
            JobTask::CausalLmLora => {
                refuse(&pairs, pair_rule)?;
                self.lora_rank = Some(self.rank());
                self.lora_alpha = Some(self.alpha());
                self.lora_targets = Some(self.targets());
            }
        }
        Ok(self)
    }

    /// The LoRA rank of a `causal-lm-lora` job.
    pub fn rank(&self) -> u32 {
        self.lora_rank.unwrap_or(8)
    }

    /// The LoRA alpha of a `causal-lm-lora` job.
    pub fn alpha(&self) -> f64 {
        self.lora_alpha.unwrap_or(16.0)
    }

    /// The projections a `causal-lm-lora` job adapts.
    pub fn targets(&self) -> Vec<String> {
        match &self.lora_targets {
            Some(t) => t.clone(),
            None => DEFAULT_LORA_TARGETS.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// The anchor column of a `sentence-embedding` job.
    pub fn anchor(&self) -> &str {
        self.anchor_column.as_deref().unwrap_or("anchor")
    }

    /// The positive column of a `sentence-embedding` job.
    pub fn positive(&self) -> &str {
        self.positive_column.as_deref().unwrap_or("positive")
    }
}

/// A repo at a commit, with a token that reads it (`/resolve`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoPull {
    /// `namespace/name`.
    pub repo_id: String,
    /// A 40-hex commit id.
    pub revision: String,
    /// Read access to this repo only, short-lived.
    pub pull_token: String,
}

impl std::fmt::Debug for RepoPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoPull")
            .field("repo_id", &self.repo_id)
            .field("revision", &self.revision)
            .field("pull_token", &"<redacted>")
            .finish()
    }
}

/// A claimed job: everything the worker needs to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's id (a UUID).
    pub job_id: String,
    /// Names this claim of the job; every later call sends it (`X-Job-Claim`), and a
    /// call with a claim that is no longer the job's is refused (409).
    pub claim: String,
    pub task: JobTask,
    /// The model to start from.
    pub base: RepoPull,
    /// The dataset, with its split files (paths in the dataset repo, CSV or JSON Lines).
    pub dataset: RepoPull,
    pub train_files: Vec<String>,
    pub test_files: Vec<String>,
    pub hyperparameters: Hyperparameters,
    /// `namespace/name` of the model repo the result is committed to.
    pub output_repo: String,
    /// The wall-time limit, counted from the claim.
    #[serde(deserialize_with = "whole")]
    pub max_wall_seconds: u64,
    /// How long the lease lasts without a progress report.
    #[serde(deserialize_with = "whole")]
    pub lease_seconds: u64,
}

/// `POST /api/v1/job-runner/claim` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The worker's name (shown in the job; the hub shows the registered
    /// worker's name).
    pub runner: String,
    /// The registration the claim is made by (`RegisterResponse::worker_id`),
    /// proved by its `gateway_secret` in `control::WORKER_SECRET_HEADER`; the
    /// claim's progress, files and finish calls must send the same secret.
    /// Required by the hub (absent only in requests of older workers, which it
    /// refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// `POST /api/v1/job-runner/claim` answer: a job, or none queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    pub job: Option<JobSpec>,
}

/// `POST /api/v1/job-runner/{job}/progress` body (also renews the lease).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps done, of `total_steps`.
    #[serde(deserialize_with = "whole")]
    pub step: u64,
    #[serde(deserialize_with = "whole")]
    pub total_steps: u64,
    /// CPU time the job has used so far.
    pub cpu_seconds: f64,
    /// New log lines since the last report.
    #[serde(default)]
    pub logs: Vec<String>,
    /// Metrics so far (the untuned head's accuracy, the running loss).
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// Why the hub wants a job stopped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A member cancelled it.
    Cancelled,
    /// It ran past its `max_wall_seconds`.
    WallTime,
    /// The namespace's daily CPU-seconds quota is spent.
    Quota,
}

/// `POST /api/v1/job-runner/{job}/progress` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressAnswer {
    /// Stop as soon as the current step ends, and finish with this reason.
    pub stop: Option<StopReason>,
}

/// How a run ended, as the worker reports it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Trained and evaluated; the uploaded files are the result.
    Succeeded,
    /// Could not run (bad data, unsupported model, ...): `error` says why.
    Failed,
    /// Stopped on the hub's request (`reason`).
    Stopped,
}

/// `POST /api/v1/job-runner/{job}/finish` body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub outcome: Outcome,
    /// Why it failed, or the stop reason's message.
    #[serde(default)]
    pub error: Option<String>,
    /// Set with [`Outcome::Stopped`].
    #[serde(default)]
    pub reason: Option<StopReason>,
    pub cpu_seconds: f64,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Last log lines.
    #[serde(default)]
    pub logs: Vec<String>,
    /// With [`Outcome::Succeeded`]: the uploaded paths to commit, in order.
    #[serde(default)]
    pub files: Vec<String>,
}

/// `POST /api/v1/job-runner/{job}/finish` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishAnswer {
    /// The job's final state.
    pub state: String,
    /// The output repo's new commit, when it succeeded.
    pub output_commit: Option<String>,
}

/// The header a runner sends its claim id in.
pub const CLAIM_HEADER: &str = "x-job-claim";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bounds_refuse() {
        let h: Hyperparameters = serde_json::from_str("{}").unwrap();
        assert_eq!(h, Hyperparameters::default());
        h.check().unwrap();
        let h: Hyperparameters = serde_json::from_str(r#"{"epochs": 2.0}"#).unwrap();
        assert_eq!(h.epochs, 2);
        for (json, field) in [
            (r#"{"epochs": 0}"#, "epochs"),
            (r#"{"learning_rate": 0}"#, "learning_rate"),
            (r#"{"learning_rate": 0.5}"#, "learning_rate"),
            (r#"{"batch_size": 1000}"#, "batch_size"),
            (r#"{"max_seq_length": 4}"#, "max_seq_length"),
            (r#"{"warmup_ratio": 0.9}"#, "warmup_ratio"),
            (r#"{"label_column": "text"}"#, "label_column"),
        ] {
            let h: Hyperparameters = serde_json::from_str(json).unwrap();
            assert_eq!(h.check().unwrap_err().field, field, "{json}");
        }
        assert!(serde_json::from_str::<Hyperparameters>(r#"{"epoch": 1}"#).is_err());
        assert!(serde_json::from_str::<Hyperparameters>(r#"{"epochs": 1.5}"#).is_err());
        // Pair columns: filled in for sentence-embedding, refused for classification.
        let h = Hyperparameters::default()
            .for_task(JobTask::SentenceEmbedding)
            .unwrap();
        assert_eq!(
            (h.anchor_column.as_deref(), h.positive_column.as_deref()),
            (Some("anchor"), Some("positive"))
        );
        let h: Hyperparameters = serde_json::from_str(r#"{"anchor_column": "q"}"#).unwrap();
        assert_eq!(
            h.clone()
                .for_task(JobTask::TextClassification)
                .unwrap_err()
                .field,
            "anchor_column"
        );
        assert_eq!(
            h.for_task(JobTask::SentenceEmbedding).unwrap().anchor(),
            "q"
        );
        let h: Hyperparameters = serde_json::from_str(r#"{"positive_column": "anchor"}"#).unwrap();
        assert_eq!(h.check().unwrap_err().field, "positive_column");
        assert_eq!(
            serde_json::to_value(Hyperparameters::default()).unwrap()["anchor_column"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn lora_fields_belong_to_the_lora_task() {
        let h = Hyperparameters::from_request(JobTask::CausalLmLora, None).unwrap();
        assert_eq!(h.learning_rate, 2e-4);
        assert_eq!(
            (h.lora_rank, h.lora_alpha, h.lora_targets.clone()),
            (
                Some(8),
                Some(16.0),
                Some(vec![
                    "q_proj".to_string(),
                    "k_proj".into(),
                    "v_proj".into(),
                    "o_proj".into()
                ])
            )
        );
        let h = Hyperparameters::from_request(JobTask::TextClassification, None).unwrap();
        assert_eq!(h, Hyperparameters::default());
        let h = Hyperparameters::from_request(
            JobTask::CausalLmLora,
            Some(serde_json::json!({"learning_rate": 1e-3, "max_length": 64, "lora_rank": 4.0})),
        )
        .unwrap();
        assert_eq!(
            (h.learning_rate, h.max_seq_length, h.lora_rank),
            (1e-3, 64, Some(4))
        );
        for (json, field) in [
            (r#"{"lora_rank": 0}"#, "lora_rank"),
            (r#"{"lora_rank": 300}"#, "lora_rank"),
            (r#"{"lora_alpha": 0}"#, "lora_alpha"),
            (r#"{"lora_targets": []}"#, "lora_targets"),
            (r#"{"lora_targets": ["q_proj", "q_proj"]}"#, "lora_targets"),
            (r#"{"lora_targets": ["lm_head"]}"#, "lora_targets"),
            (r#"{"anchor_column": "q"}"#, "anchor_column"),
        ] {
            let raw = serde_json::from_str(json).unwrap();
            match Hyperparameters::from_request(JobTask::CausalLmLora, Some(raw)) {
                Err(RequestHyperparametersError::Bad(e)) => assert_eq!(e.field, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        let raw = serde_json::json!({"lora_rank": 4});
        assert!(matches!(
            Hyperparameters::from_request(JobTask::SentenceEmbedding, Some(raw)),
            Err(RequestHyperparametersError::Bad(BadHyperparameter {
                field: "lora_rank",
                ..
            }))
        ));
        let raw = serde_json::json!({"lora_rnak": 4});
        assert!(matches!(
            Hyperparameters::from_request(JobTask::CausalLmLora, Some(raw)),
            Err(RequestHyperparametersError::Json(_))
        ));
    }

    #[test]
    fn task_names() {
        assert_eq!(
            JobTask::parse("text-classification").unwrap(),
            JobTask::TextClassification
        );
        assert_eq!(
            JobTask::parse("sentence-embedding").unwrap(),
            JobTask::SentenceEmbedding
        );
        assert_eq!(
            JobTask::SentenceEmbedding.endpoint_task(),
            crate::Task::FeatureExtraction
        );
        assert_eq!(
            JobTask::parse("causal-lm-lora").unwrap().endpoint_task(),
            crate::Task::TextGeneration
        );
        assert!(JobTask::parse("translation").is_err());
    }
}
