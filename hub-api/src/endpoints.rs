//! Inference endpoints as the management API and the dashboard see them:
//! validation of what a tenant asks for, the supported tasks, and the JSON
//! shape of an endpoint.

use crate::db::endpoints::{EndpointRow, EventRow, ReplicaRow};
use crate::error::ApiError;
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
}

/// Picks the task: the one asked for, else the repo's pipeline tag, else one
/// derived from its config. Refuses tasks the workers cannot serve.
pub fn choose_task(
    asked: Option<&str>,
    pipeline_tag: Option<&str>,
    architectures: &[String],
) -> Result<String, ApiError> {
    let task = match asked {
        Some(t) => t.to_string(),
        None => match pipeline_tag {
            Some(p) if SUPPORTED_TASKS.contains(&p) => p.to_string(),
            _ if architectures
                .iter()
                .any(|a| a.ends_with("ForSequenceClassification")) =>
            {
                "text-classification".into()
            }
            _ if architectures.iter().any(|a| a.ends_with("Model")) => "feature-extraction".into(),
            Some(p) => p.to_string(),
            None => return Err(EndpointSpecError::NoTask.into()),
        },
    };
    if !SUPPORTED_TASKS.contains(&task.as_str()) {
        return Err(EndpointSpecError::Task(task).into());
    }
    Ok(task)
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

    #[test]
    fn tasks() {
        assert_eq!(
            choose_task(None, Some("sentence-similarity"), &[]).unwrap(),
            "sentence-similarity"
        );
        assert_eq!(
            choose_task(None, None, &["BertForSequenceClassification".into()]).unwrap(),
            "text-classification"
        );
        assert_eq!(
            choose_task(None, None, &["BertModel".into()]).unwrap(),
            "feature-extraction"
        );
        assert!(choose_task(None, Some("text-generation"), &[]).is_err());
        assert!(choose_task(Some("translation"), None, &[]).is_err());
        assert!(choose_task(None, None, &[]).is_err());
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
