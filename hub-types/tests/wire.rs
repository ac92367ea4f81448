//! The JSON shape of every control-plane message, pinned: each golden document is what
//! one side sends, and must both come out of serializing the type and parse back into
//! it. A change here is a change to the contract between hub and worker.

use hub_types::control::*;
use hub_types::{Precision, ReplicaStatus, Task};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// `value` serializes to exactly `golden` and parses back from it.
fn pinned<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T, golden: Value) {
    assert_eq!(serde_json::to_value(&value).unwrap(), golden);
    assert_eq!(serde_json::from_value::<T>(golden).unwrap(), value);
}

#[test]
fn register() {
    pinned(
        RegisterRequest {
            name: "w1".into(),
            url: "http://127.0.0.1:9000".into(),
            capacity: Capacity {
                memory_bytes: 8 << 30,
                cores: 2,
            },
            version: "0.1.0".into(),
        },
        json!({
            "name": "w1",
            "url": "http://127.0.0.1:9000",
            "capacity": {"memory_bytes": 8u64 << 30, "cores": 2},
            "version": "0.1.0"
        }),
    );
    pinned(
        RegisterResponse {
            worker_id: "3f2b8c1e-0000-4000-8000-000000000001".into(),
            heartbeat_interval_s: 2,
            gateway_secret: "ab".repeat(32),
        },
        json!({
            "worker_id": "3f2b8c1e-0000-4000-8000-000000000001",
            "heartbeat_interval_s": 2,
            "gateway_secret": "ab".repeat(32)
        }),
    );
}

#[test]
fn register_is_lenient_where_the_hub_was() {
    let r: RegisterRequest = serde_json::from_value(json!({
        "name": "w", "url": "http://h", "capacity": {"memory_bytes": 1024.0, "cores": 2.0}
    }))
    .unwrap();
    assert_eq!(r.version, "");
    assert_eq!(
        r.capacity,
        Capacity {
            memory_bytes: 1024,
            cores: 2
        }
    );
    for bad in [json!(2.5), json!(-1), json!("2")] {
        let body =
            json!({"name": "w", "url": "http://h", "capacity": {"memory_bytes": 1, "cores": bad}});
        assert!(serde_json::from_value::<RegisterRequest>(body).is_err());
    }
}

#[test]
fn heartbeat() {
    pinned(
        Heartbeat {
            free_memory_bytes: 4 << 30,
            cache_room_bytes: Some(7 << 30),
            models: vec![
                HeartbeatModel {
                    assignment_id: "a1".into(),
                    status: ReplicaStatus::Running.as_str().into(),
                    message: None,
                    in_flight: 3,
                    queue_depth: 1,
                },
                HeartbeatModel {
                    assignment_id: "a2".into(),
                    status: ReplicaStatus::Failed.as_str().into(),
                    message: Some("unsupported architecture".into()),
                    in_flight: 0,
                    queue_depth: 0,
                },
            ],
        },
        json!({
            "free_memory_bytes": 4u64 << 30,
            "cache_room_bytes": 7u64 << 30,
            "models": [
                {"assignment_id": "a1", "status": "running", "message": null, "in_flight": 3, "queue_depth": 1},
                {"assignment_id": "a2", "status": "failed", "message": "unsupported architecture", "in_flight": 0, "queue_depth": 0}
            ]
        }),
    );
    pinned(HeartbeatResponse { ok: true }, json!({"ok": true}));
}

#[test]
fn heartbeat_is_lenient_where_the_hub_was() {
    let hb: Heartbeat = serde_json::from_value(json!({"free_memory_bytes": 1.0})).unwrap();
    assert!(hb.models.is_empty());
    // A worker that does not report its cache's room (older ones), or reports null.
    assert_eq!(hb.cache_room_bytes, None);
    let hb: Heartbeat =
        serde_json::from_value(json!({"free_memory_bytes": 1, "cache_room_bytes": null})).unwrap();
    assert_eq!(hb.cache_room_bytes, None);
    let hb: Heartbeat =
        serde_json::from_value(json!({"free_memory_bytes": 1, "cache_room_bytes": 5.0})).unwrap();
    assert_eq!(hb.cache_room_bytes, Some(5));
    for bad in [json!(-1), json!(1.5), json!("5")] {
        let body = json!({"free_memory_bytes": 1, "cache_room_bytes": bad});
        assert!(serde_json::from_value::<Heartbeat>(body).is_err(), "{bad}");
    }
    let hb: Heartbeat = serde_json::from_value(json!({
        "free_memory_bytes": 1, "models": [{"assignment_id": "a", "status": "loading"}]
    }))
    .unwrap();
    assert_eq!(
        hb.models[0],
        HeartbeatModel {
            assignment_id: "a".into(),
            status: "loading".into(),
            message: None,
            in_flight: 0,
            queue_depth: 0
        }
    );
}

fn assignment() -> Assignment {
    Assignment {
        assignment_id: "5d1c6a0e-0000-4000-8000-000000000002".into(),
        model_key: "5d1c6a0e-0000-4000-8000-000000000002".into(),
        repo_type: "model".into(),
        repo_id: "acme/minilm".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        task: Task::SentenceSimilarity,
        pull_token: "hf_pull".into(),
        max_batch_tokens: None,
        max_concurrent: None,
        precision: Some(Precision::Bf16),
    }
}

#[test]
fn assignments() {
    // What the hub sends: no batch or concurrency overrides.
    let golden = json!({
        "assignment_id": "5d1c6a0e-0000-4000-8000-000000000002",
        "model_key": "5d1c6a0e-0000-4000-8000-000000000002",
        "repo_type": "model",
        "repo_id": "acme/minilm",
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "task": "sentence-similarity",
        "precision": "bf16",
        "pull_token": "hf_pull"
    });
    pinned(assignment(), golden.clone());
    pinned(
        AssignmentsResponse {
            version: 7,
            assignments: vec![assignment()],
        },
        json!({"version": 7, "assignments": [golden.clone()]}),
    );
    // What a worker reads: the items as raw JSON, parsed one by one.
    let raw: AssignmentsResponse<Value> =
        serde_json::from_value(json!({"version": 7, "assignments": [golden]})).unwrap();
    assert_eq!(
        serde_json::from_value::<Assignment>(raw.assignments[0].clone()).unwrap(),
        assignment()
    );
    pinned(
        AssignmentsQuery {
            version: 7,
            wait_s: Some(25),
        },
        json!({"version": 7, "wait_s": 25}),
    );
}

#[test]
fn assignment_defaults_and_overrides() {
    let a: Assignment = serde_json::from_value(json!({
        "assignment_id": "a", "model_key": "k", "repo_id": "o/m", "revision": "r",
        "task": "feature-extraction", "pull_token": "t",
        "max_batch_tokens": 512, "max_concurrent": 2
    }))
    .unwrap();
    assert_eq!(a.repo_type, "model");
    assert_eq!(a.precision, None);
    assert_eq!((a.max_batch_tokens, a.max_concurrent), (Some(512), Some(2)));
    // Unknown names fail the item, naming the value.
    let mut bad = serde_json::to_value(assignment()).unwrap();
    bad["task"] = json!("translation");
    let e = serde_json::from_value::<Assignment>(bad.clone()).unwrap_err();
    assert!(
        e.to_string().contains("\"translation\" is not supported"),
        "{e}"
    );
    bad["task"] = json!("feature-extraction");
    bad["precision"] = json!("fp8");
    let e = serde_json::from_value::<Assignment>(bad).unwrap_err();
    assert!(e.to_string().contains("\"fp8\" is not supported"), "{e}");
}

#[test]
fn secrets_stay_out_of_debug() {
    let a = format!("{:?}", assignment());
    assert!(!a.contains("hf_pull") && a.contains("<redacted>"), "{a}");
    let r = RegisterResponse {
        worker_id: "w".into(),
        heartbeat_interval_s: 2,
        gateway_secret: "s3cret".into(),
    };
    assert!(!format!("{r:?}").contains("s3cret"));
}

#[test]
fn the_fingerprint_ignores_the_pull_token_only() {
    let a = assignment();
    let mut b = a.clone();
    b.pull_token = "rotated".into();
    assert_eq!(a.fingerprint(), b.fingerprint());
    b.precision = None;
    assert_ne!(a.fingerprint(), b.fingerprint());
}

/// The fine-tuning job runner's messages (`/api/v1/job-runner/...`).
#[test]
fn job_runner() {
    use hub_types::jobs::*;
    let pull = |repo: &str| RepoPull {
        repo_id: repo.into(),
        revision: "a".repeat(40),
        pull_token: "jwt".into(),
    };
    pinned(
        ClaimResponse {
            job: Some(JobSpec {
                job_id: "3f2b8c1e-0000-4000-8000-000000000009".into(),
                claim: "3f2b8c1e-0000-4000-8000-00000000000a".into(),
                task: JobTask::TextClassification,
                base: pull("acme/bert"),
                dataset: pull("acme/reviews"),
                train_files: vec!["train.csv".into()],
                test_files: vec!["test.csv".into()],
                hyperparameters: Hyperparameters::default(),
                output_repo: "acme/tuned".into(),
                max_wall_seconds: 600,
                lease_seconds: 60,
            }),
        },
        json!({"job": {
            "job_id": "3f2b8c1e-0000-4000-8000-000000000009",
            "claim": "3f2b8c1e-0000-4000-8000-00000000000a",
            "task": "text-classification",
            "base": {"repo_id": "acme/bert", "revision": "a".repeat(40), "pull_token": "jwt"},
            "dataset": {"repo_id": "acme/reviews", "revision": "a".repeat(40), "pull_token": "jwt"},
            "train_files": ["train.csv"],
            "test_files": ["test.csv"],
            "hyperparameters": {"epochs": 3, "learning_rate": 5e-5, "batch_size": 16,
                "max_seq_length": 128, "seed": 42, "weight_decay": 0.01, "warmup_ratio": 0.1,
                "text_column": "text", "label_column": "label"},
            "output_repo": "acme/tuned",
            "max_wall_seconds": 600,
            "lease_seconds": 60
        }}),
    );
    pinned(ClaimResponse { job: None }, json!({"job": null}));
    let mut metrics = serde_json::Map::new();
    metrics.insert("loss".into(), json!(0.5));
    pinned(
        Progress {
            step: 3,
            total_steps: 15,
            cpu_seconds: 4.5,
            logs: vec!["epoch 1/1".into()],
            metrics: metrics.clone(),
        },
        json!({"step": 3, "total_steps": 15, "cpu_seconds": 4.5, "logs": ["epoch 1/1"], "metrics": {"loss": 0.5}}),
    );
    pinned(
        ProgressAnswer {
            stop: Some(StopReason::WallTime),
        },
        json!({"stop": "wall_time"}),
    );
    pinned(ProgressAnswer { stop: None }, json!({"stop": null}));
    pinned(
        Finish {
            outcome: Outcome::Stopped,
            error: Some("cancelled".into()),
            reason: Some(StopReason::Cancelled),
            cpu_seconds: 9.0,
            metrics,
            logs: vec![],
            files: vec![],
        },
        json!({"outcome": "stopped", "error": "cancelled", "reason": "cancelled", "cpu_seconds": 9.0,
               "metrics": {"loss": 0.5}, "logs": [], "files": []}),
    );
    pinned(
        FinishAnswer {
            state: "succeeded".into(),
            output_commit: Some("b".repeat(40)),
        },
        json!({"state": "succeeded", "output_commit": "b".repeat(40)}),
    );
}
