//! Fine-tuning jobs, the hub's half (issue 16): what a job request may ask for
//! ([`JobSpecError`], 400 `invalid_job`), the dataset splits a job trains and
//! evaluates on (the dataset viewer's discovery: `train` and `test`), the daily
//! CPU-seconds quota (429 `job_quota_exceeded`), and the job's JSON. The queue is
//! `db::jobs`; the routes are `routes::v1::jobs` (members) and
//! `routes::inference::job_runner` (workers). The training itself runs on a worker
//! (`hub_worker::finetune`): this crate links no engine.

use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::viewer::discover::Format;
use chrono::Utc;
use serde_json::{json, Value};

/// A job request the hub refuses (400 `invalid_job`).
#[derive(Debug, thiserror::Error)]
pub enum JobSpecError {
    #[error(transparent)]
    Task(#[from] hub_types::jobs::UnknownJobTask),
    #[error("{0}")]
    Hyperparameter(#[from] hub_types::jobs::BadHyperparameter),
    #[error("max_wall_seconds must be an integer from {MIN_WALL_S} to {MAX_WALL_S}")]
    WallTime,
    #[error("base_model {0} has no config.json and *.safetensors weights at that revision")]
    BaseWeights(String),
    #[error(
        "fine-tuning supports BERT models (config.json model_type bert); {repo} is {model_type:?}"
    )]
    BaseArchitecture { repo: String, model_type: String },
    #[error("the dataset {repo} cannot be read: {reason}")]
    Dataset { repo: String, reason: String },
    #[error("the dataset {repo} has no {split} split (files named like {split}.csv or data/{split}.jsonl, or a configs: block in its README)")]
    MissingSplit { repo: String, split: &'static str },
    #[error("the {split} split of {repo} has {path}: fine-tuning reads CSV and JSON Lines files")]
    SplitFormat {
        repo: String,
        split: &'static str,
        path: String,
    },
    #[error("output_repo must be a model repo in the namespace {0} (where the job runs)")]
    OutputNamespace(String),
    #[error("output_repo must not be base_model: the result is a new model")]
    OutputIsBase,
}

/// Bounds of `max_wall_seconds` (default [`DEFAULT_WALL_S`]).
pub const MIN_WALL_S: i64 = 5;
pub const MAX_WALL_S: i64 = 86_400;
pub const DEFAULT_WALL_S: i64 = 3600;

/// The train and test files of a dataset commit: the first config's (the
/// viewer's discovery), `train` and `test` splits. CSV and JSON Lines only.
pub async fn splits(
    state: &AppState,
    repo: &str,
    tree_oid: &str,
) -> ApiResult<(Vec<String>, Vec<String>)> {
    let plan = crate::viewer::jobs::plan_tree(state, tree_oid)
        .await?
        .map_err(|reason| JobSpecError::Dataset {
            repo: repo.to_string(),
            reason,
        })?;
    let config = plan.first();
    let pick = |split: &'static str| -> Result<Vec<String>, JobSpecError> {
        let s = config
            .and_then(|c| c.splits.iter().find(|s| s.name == split))
            .ok_or(JobSpecError::MissingSplit {
                repo: repo.to_string(),
                split,
            })?;
        s.files
            .iter()
            .map(|f| match Format::of(&f.path) {
                Some(Format::Csv | Format::Json) => Ok(f.path.clone()),
                _ => Err(JobSpecError::SplitFormat {
                    repo: repo.to_string(),
                    split,
                    path: crate::error::clip(&f.path, 200),
                }),
            })
            .collect()
    };
    Ok((pick("train")?, pick("test")?))
}

/// CPU-seconds the namespace's jobs used today (UTC) and its daily limit.
pub async fn quota_today(state: &AppState, namespace_id: i64) -> ApiResult<(f64, Option<i64>)> {
    let s = crate::quota::settings(&state.db, namespace_id).await?;
    let since = crate::token_quota::day_start(Utc::now());
    let used = db::jobs::cpu_seconds_since(&state.db, namespace_id, since).await?;
    Ok((used, s.daily_job_cpu_seconds))
}

/// Refuses a new job when the namespace's daily CPU-seconds are spent.
pub async fn check_quota(state: &AppState, namespace: &str, namespace_id: i64) -> ApiResult<()> {
    let (used, limit) = quota_today(state, namespace_id).await?;
    if let Some(limit) = limit {
        if used >= limit as f64 {
            let now = Utc::now();
            let reset = crate::token_quota::next_reset(now);
            return Err(ApiError::JobQuotaExceeded {
                namespace: namespace.to_string(),
                limit,
                used: used.ceil() as i64,
                resets_at: crate::registry::hf_date(reset),
                retry_after_s: (reset - now).num_seconds().max(1) as u64,
            });
        }
    }
    Ok(())
}

/// What replaces a hidden repo's name in a job's error and log lines.
pub const HIDDEN_NAME: &str = "[hidden repository]";

/// Which of a job's input repos a caller may see named. A job's base model
/// and dataset may be another namespace's private repos that its creator
/// could read but other members of the job's namespace may not (nor a
/// member's inference-only or restricted token): a repo's name, revision and
/// files are shown only to whoever may read that repo now (`ReadRepo`, as if
/// they looked it up), and to the job's creator, who named it. A hidden
/// repo's name is also cut out of the job's error and log lines ([`Shown::redact`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    pub base: bool,
    pub dataset: bool,
    /// The names to cut out (lower case): those recorded in the job and the
    /// repos' current ones, of the repos not shown.
    hidden: Vec<String>,
}

impl Shown {
    /// Everything shown (the job's creator).
    pub fn all() -> Shown {
        Shown {
            base: true,
            dataset: true,
            hidden: vec![],
        }
    }

    /// `text` with every hidden repo name replaced by [`HIDDEN_NAME`] (ASCII
    /// case-insensitive: repo names are ASCII and matched so).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for name in &self.hidden {
            if name.is_empty() {
                continue;
            }
            let mut next = String::with_capacity(out.len());
            let lower = out.to_ascii_lowercase();
            let mut from = 0;
            while let Some(at) = lower[from..].find(name.as_str()) {
                next.push_str(&out[from..from + at]);
                next.push_str(HIDDEN_NAME);
                from += at + name.len();
            }
            next.push_str(&out[from..]);
            out = next;
        }
        out
    }
}

/// Decides [`Shown`] for one caller, reading each repo once.
pub struct Viewer<'a> {
    state: &'a AppState,
    p: Option<&'a crate::auth::Principal>,
    /// repo id -> (may read, current full name).
    seen: std::collections::HashMap<i64, (bool, Option<String>)>,
}

impl<'a> Viewer<'a> {
    pub fn new(state: &'a AppState, p: Option<&'a crate::auth::Principal>) -> Self {
        Self {
            state,
            p,
            seen: Default::default(),
        }
    }

    /// What of `j` this caller may see.
    pub async fn shown(&mut self, j: &db::jobs::JobRow) -> ApiResult<Shown> {
        let creator = self.p.is_some_and(|p| {
            j.created_by == Some(p.user_id) && crate::gating::user_grant(p).is_some()
        });
        if creator {
            return Ok(Shown::all());
        }
        let mut shown = Shown::default();
        let (base, base_name) = self.may_read(j.base_repo_id).await?;
        let (dataset, dataset_name) = self.may_read(j.dataset_repo_id).await?;
        shown.base = base;
        shown.dataset = dataset;
        for (ok, recorded, current) in [
            (base, &j.base_model, base_name),
            (dataset, &j.dataset, dataset_name),
        ] {
            if !ok {
                shown.hidden.push(recorded.to_ascii_lowercase());
                shown.hidden.extend(current.map(|c| c.to_ascii_lowercase()));
            }
        }
        // The longest first, so a name containing another is cut whole.
        shown.hidden.sort_by_key(|n| std::cmp::Reverse(n.len()));
        shown.hidden.dedup();
        Ok(shown)
    }

    /// Whether the caller may read the repo `id` (a deleted one: no), and its
    /// current name.
    async fn may_read(&mut self, id: Option<i64>) -> ApiResult<(bool, Option<String>)> {
        let Some(id) = id else {
            return Ok((false, None));
        };
        if let Some(known) = self.seen.get(&id) {
            return Ok(known.clone());
        }
        let known = match db::repos::by_id(&self.state.db, id).await? {
            None => (false, None),
            Some(repo) => {
                use crate::auth::access::{decide, Action, Standing};
                let standing = Standing::load_repo(&self.state.db, self.p, &repo).await?;
                let ok = decide(self.p, &standing, Action::ReadRepo).is_ok();
                (ok, Some(repo.full_id()))
            }
        };
        self.seen.insert(id, known.clone());
        Ok(known)
    }
}

/// A job as the API shows it to a caller who may see `shown` of it: a hidden
/// base model or dataset is `{"repository": null, "revision": null, "hidden":
/// true}` (the dataset's `train_files` and `test_files` null too), and its
/// name is cut out of `error`.
pub fn to_json(j: &db::jobs::JobRow, shown: &Shown) -> Value {
    let date = |d: Option<chrono::DateTime<Utc>>| d.map(crate::registry::hf_date);
    let base = if shown.base {
        json!({"repository": j.base_model, "revision": j.base_revision})
    } else {
        json!({"repository": null, "revision": null, "hidden": true})
    };
    let dataset = if shown.dataset {
        json!({
            "repository": j.dataset,
            "revision": j.dataset_revision,
            "train_files": j.train_files,
            "test_files": j.test_files,
        })
    } else {
        json!({"repository": null, "revision": null, "train_files": null, "test_files": null, "hidden": true})
    };
    let mut v = json!({
        "id": j.id.to_string(),
        "namespace": j.namespace,
        "task": j.task,
        "state": j.state,
        "cancel_requested": j.cancel_requested,
        "base_model": base,
        "dataset": dataset,
        "output_repo": j.output_repo,
        "hyperparameters": j.hyperparameters,
        "max_wall_seconds": j.max_wall_seconds,
        "progress": {
            "step": j.step,
            "total_steps": j.total_steps,
            "fraction": if j.total_steps > 0 { j.step as f64 / j.total_steps as f64 } else { 0.0 },
        },
        "metrics": j.metrics,
        "cpu_seconds": j.cpu_seconds,
        "attempts": j.attempts,
        "runner": j.runner,
        "error": j.error.as_deref().map(|e| shown.redact(e)),
        "output_commit": j.output_commit,
        "created_at": crate::registry::hf_date(j.created_at),
        "started_at": date(j.started_at),
        "finished_at": date(j.finished_at),
    });
    if let (Some(commit), "succeeded") = (&j.output_commit, j.state.as_str()) {
        // The body of `POST /api/v1/endpoints/{ns}` that serves the result.
        let task = hub_types::jobs::JobTask::parse(&j.task)
            .map(|t| t.endpoint_task().as_str())
            .unwrap_or(j.task.as_str());
        v["deploy"] = json!({
            "repository": j.output_repo,
            "revision": commit,
            "task": task,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_cuts_every_hidden_name_whatever_its_case() {
        let shown = Shown {
            base: false,
            dataset: true,
            hidden: vec!["other/secret-bert-v2".into(), "other/secret-bert".into()],
        };
        assert_eq!(
            shown.redact(
                "pulled Other/Secret-BERT@abc, then other/secret-bert-v2 and other/secret-bert"
            ),
            "pulled [hidden repository]@abc, then [hidden repository] and [hidden repository]"
        );
        assert_eq!(
            shown.redact("nothing here: other/public"),
            "nothing here: other/public"
        );
        assert_eq!(
            Shown::all().redact("other/secret-bert"),
            "other/secret-bert"
        );
        // Multi-byte text around a name stays intact.
        assert_eq!(
            shown.redact("é other/secret-bert ü"),
            "é [hidden repository] ü"
        );
    }
}
