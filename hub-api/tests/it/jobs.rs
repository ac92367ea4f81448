//! Fine-tuning jobs against a real PostgreSQL, with the workers' side spoken by
//! the test (the real training runs in hub-worker's tests and end to end in
//! tests/conformance/test_finetune.py): every bad request is a 4xx with its
//! code, another tenant neither sees nor cancels a job, a runner's claim holds
//! the job (a stale one gets 409), cancel and the wall-time limit stop a running
//! job, the daily CPU-seconds quota refuses new jobs (429) and stops running
//! ones, and a finished job's files become a commit of the output repo.

use crate::common::*;
use actix_web::test::TestRequest;
use hub_testkit::{app, TestState};
use serde_json::{json, Value};

/// A valid one-tensor safetensors file.
fn safetensors() -> Vec<u8> {
    let mut header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(1.0f32.to_le_bytes());
    out
}

const BERT: &[u8] = br#"{"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 4}"#;
const TRAIN: &[u8] = b"text,label\ngood,pos\nbad,neg\n";
const TEST: &[u8] = b"text,label\nfine,pos\nawful,neg\n";

struct Fixture {
    t: TestState,
    alice: String,
    bob: String,
    worker: String,
    root: String,
}

async fn fixture() -> Fixture {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let (_, worker) = t.user("ops", true, &["worker"]).await;
    let (_, root) = t.user("root", true, &["read", "write", "admin"]).await;
    let a = app(&t.state).await;
    create_repo(&a, &alice, "alice/bert", false).await;
    commit_files(
        &a,
        &alice,
        "alice/bert",
        &[("config.json", BERT), ("model.safetensors", &safetensors())],
    )
    .await;
    create_repo(&a, &alice, "alice/roberta", false).await;
    commit_files(
        &a,
        &alice,
        "alice/roberta",
        &[
            ("config.json", br#"{"model_type": "roberta"}"#),
            ("model.safetensors", &safetensors()),
        ],
    )
    .await;
    create_repo(&a, &alice, "alice/private", true).await;
    commit_files(&a, &alice, "alice/private", &[("secret.txt", b"s")]).await;
    create_repo(&a, &alice, "alice/noweights", false).await;
    commit_files(&a, &alice, "alice/noweights", &[("config.json", BERT)]).await;
    for (name, files) in [
        ("reviews", vec![("train.csv", TRAIN), ("test.csv", TEST)]),
        ("trainonly", vec![("train.csv", TRAIN)]),
    ] {
        let (st, _, b) = call(
            &a,
            TestRequest::post()
                .uri("/api/repos/create")
                .insert_header(bearer(&alice))
                .set_json(json!({"name": name, "organization": "alice", "type": "dataset"})),
        )
        .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        commit_files_to(&a, &alice, "datasets", &format!("alice/{name}"), &files).await;
    }
    Fixture {
        t,
        alice,
        bob,
        worker,
        root,
    }
}

fn job_body() -> Value {
    json!({
        "task": "text-classification",
        "base_model": "alice/bert",
        "dataset": "alice/reviews",
        "output_repo": "alice/bert-reviews",
        "hyperparameters": {"epochs": 1, "batch_size": 2},
        "max_wall_seconds": 600,
    })
}

async fn post_job(a: &impl App, tok: &str, ns: &str, body: Value) -> (u16, Value) {
    let (st, _, b) = call(
        a,
        TestRequest::post()
            .uri(&format!("/api/v1/jobs/{ns}"))
            .insert_header(bearer(tok))
            .set_json(body),
    )
    .await;
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn req(a: &impl App, tok: &str, r: TestRequest) -> (u16, Value) {
    let (st, _, b) = call(a, r.insert_header(bearer(tok))).await;
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn every_bad_job_request_is_a_4xx_with_its_code() {
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let with = |k: &str, v: Value| {
        let mut b = job_body();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            with("task", json!("translation")),
            400,
            "invalid_job",
            "translation",
        ),
        (
            with("hyperparameters", json!({"epochs": 0})),
            400,
            "invalid_job",
            "hyperparameters.epochs",
        ),
        (
            with("hyperparameters", json!({"learning_rate": 1.0})),
            400,
            "invalid_job",
            "learning_rate",
        ),
        (
            with("hyperparameters", json!({"anchor_column": "q"})),
            400,
            "invalid_job",
            "hyperparameters.anchor_column must be left out",
        ),
        (
            with("hyperparameters", json!({"batch_size": 1.5})),
            400,
            "invalid_request",
            "not an integer",
        ),
        (
            with("hyperparameters", json!({"epoch": 1})),
            400,
            "invalid_request",
            "epoch",
        ),
        (
            with("max_wall_seconds", json!(1)),
            400,
            "invalid_job",
            "max_wall_seconds",
        ),
        (
            with("base_model", json!("alice/missing")),
            404,
            "repo_not_found",
            "",
        ),
        (
            with("base_model", json!("../x")),
            400,
            "invalid_namespace_name",
            "",
        ),
        (
            with("base_revision", json!("nope")),
            404,
            "revision_not_found",
            "",
        ),
        (
            with("base_model", json!("alice/noweights")),
            400,
            "invalid_job",
            "safetensors",
        ),
        (
            with("base_model", json!("alice/roberta")),
            400,
            "invalid_job",
            "BERT",
        ),
        (
            with("dataset", json!("alice/missing")),
            404,
            "repo_not_found",
            "",
        ),
        (
            with("dataset", json!("alice/trainonly")),
            400,
            "invalid_job",
            "no test split",
        ),
        (
            with("output_repo", json!("bob/out")),
            400,
            "invalid_job",
            "namespace alice",
        ),
        (
            with("output_repo", json!("alice/bert")),
            400,
            "invalid_job",
            "new model",
        ),
        (
            json!({"task": "text-classification"}),
            400,
            "invalid_request",
            "base_model",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (st, v) = post_job(&a, &f.alice, "alice", body.clone()).await;
        assert_eq!(
            (st, v["code"].as_str().unwrap_or("")),
            (status, code),
            "{body}: {v}"
        );
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    // Nothing was queued, and no output repo was made by a refused request.
    let (_, list) = req(&a, &f.alice, TestRequest::get().uri("/api/v1/jobs/alice")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (st, _) = req(
        &a,
        &f.alice,
        TestRequest::get().uri("/api/models/alice/bert-reviews"),
    )
    .await;
    assert_eq!(st, 404);
    // A reader of another namespace's public repos may not queue jobs there.
    let (st, v) = post_job(&a, &f.bob, "alice", job_body()).await;
    assert_eq!(st, 404, "{v}");
    let (st, _) = post_job(&a, &f.alice, "alice", Value::Null).await;
    assert_eq!(st, 400);

    // A good one: revisions resolved, splits found, the output repo created.
    let (st, job) = post_job(&a, &f.alice, "alice", job_body()).await;
    assert_eq!(st, 201, "{job}");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["base_model"]["revision"].as_str().unwrap().len(), 40);
    assert_eq!(job["dataset"]["train_files"], json!(["train.csv"]));
    assert_eq!(job["dataset"]["test_files"], json!(["test.csv"]));
    assert_eq!(job["hyperparameters"]["epochs"], 1);
    assert_eq!(job["hyperparameters"]["learning_rate"], 5e-5);
    assert!(
        job["hyperparameters"].get("anchor_column").is_none(),
        "{job}"
    );
    let (st, _) = req(
        &a,
        &f.alice,
        TestRequest::get().uri("/api/models/alice/bert-reviews"),
    )
    .await;
    assert_eq!(st, 200);

    // A sentence-embedding job: its pair columns are stored with their defaults.
    let mut emb = job_body();
    emb["task"] = json!("sentence-embedding");
    emb["output_repo"] = json!("alice/bert-pairs");
    emb["hyperparameters"] = json!({"positive_column": "answer"});
    let (st, job) = post_job(&a, &f.alice, "alice", emb.clone()).await;
    assert_eq!(st, 201, "{job}");
    assert_eq!(job["task"], "sentence-embedding");
    assert_eq!(job["hyperparameters"]["anchor_column"], "anchor");
    assert_eq!(job["hyperparameters"]["positive_column"], "answer");
    emb["hyperparameters"] = json!({"anchor_column": "answer", "positive_column": "answer"});
    let (st, v) = post_job(&a, &f.alice, "alice", emb).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("invalid_job")), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("positive_column"),
        "{v}"
    );
}

/// The runner's side: claim, progress, files, finish, as a registered worker
/// (its `gateway_secret` on every call).
struct Runner<'a, A: App> {
    app: &'a A,
    token: String,
    worker_id: String,
    secret: String,
}

/// Registers a worker with `token`: (worker id, gateway secret).
async fn register_worker(a: &impl App, token: &str, name: &str) -> (String, String) {
    let (st, v) = req(
        a,
        token,
        TestRequest::post()
            .uri("/api/v1/workers/register")
            .set_json(json!({
                "name": name, "url": "http://127.0.0.1:1",
                "capacity": {"memory_bytes": 1u64 << 30, "cores": 2}, "version": "test"
            })),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    (
        v["worker_id"].as_str().unwrap().to_string(),
        v["gateway_secret"].as_str().unwrap().to_string(),
    )
}

const SECRET: &str = hub_types::control::WORKER_SECRET_HEADER;

impl<'a, A: App> Runner<'a, A> {
    /// A worker registered with `token`.
    async fn new(app: &'a A, token: &str) -> Runner<'a, A> {
        let (worker_id, secret) = register_worker(app, token, "test-runner").await;
        Runner {
            app,
            token: token.to_string(),
            worker_id,
            secret,
        }
    }
    async fn claim(&self) -> Value {
        let (st, v) = req(
            self.app,
            &self.token,
            TestRequest::post()
                .uri("/api/v1/job-runner/claim")
                .insert_header((SECRET, self.secret.clone()))
                .set_json(json!({"runner": "test-runner", "worker_id": self.worker_id})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        v["job"].clone()
    }
    async fn progress(&self, job: &Value, claim: &str, cpu: f64) -> (u16, Value) {
        req(
            self.app,
            &self.token,
            TestRequest::post()
                .uri(&format!("/api/v1/job-runner/{}/progress", job["job_id"].as_str().unwrap()))
                .insert_header(("X-Job-Claim", claim.to_string()))
                .insert_header((SECRET, self.secret.clone()))
                .set_json(json!({"step": 1, "total_steps": 4, "cpu_seconds": cpu, "logs": ["step 1"], "metrics": {"loss": 0.5}})),
        )
        .await
    }
    async fn finish(&self, job: &Value, body: Value) -> (u16, Value) {
        req(
            self.app,
            &self.token,
            TestRequest::post()
                .uri(&format!(
                    "/api/v1/job-runner/{}/finish",
                    job["job_id"].as_str().unwrap()
                ))
                .insert_header(("X-Job-Claim", job["claim"].as_str().unwrap().to_string()))
                .insert_header((SECRET, self.secret.clone()))
                .set_json(body),
        )
        .await
    }
    async fn put(&self, job: &Value, path: &str, bytes: &[u8]) -> u16 {
        req(
            self.app,
            &self.token,
            TestRequest::put()
                .uri(&format!(
                    "/api/v1/job-runner/{}/files?path={path}",
                    job["job_id"].as_str().unwrap()
                ))
                .insert_header(("X-Job-Claim", job["claim"].as_str().unwrap().to_string()))
                .insert_header((SECRET, self.secret.clone()))
                .insert_header(("Content-Length", bytes.len().to_string()))
                .set_payload(bytes.to_vec()),
        )
        .await
        .0
    }
}

#[actix_web::test]
async fn cancel_tenancy_and_stale_claims() {
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let (_, job) = post_job(&a, &f.alice, "alice", job_body()).await;
    let id = job["id"].as_str().unwrap().to_string();
    // Another tenant sees nothing and cancels nothing: the 404 of a missing job.
    for r in [
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}/logs")),
        TestRequest::post().uri(&format!("/api/v1/jobs/alice/{id}/cancel")),
        TestRequest::get().uri("/api/v1/jobs/alice"),
    ] {
        assert_eq!(req(&a, &f.bob, r).await.0, 404);
    }
    // Nor through their own namespace.
    assert_eq!(
        req(
            &a,
            &f.bob,
            TestRequest::get().uri(&format!("/api/v1/jobs/bob/{id}"))
        )
        .await
        .0,
        404
    );
    let (_, mine) = req(&a, &f.bob, TestRequest::get().uri("/api/v1/jobs/bob")).await;
    assert_eq!(mine["items"], json!([]));
    // Users cannot use the runner's routes.
    let (st, _) = req(
        &a,
        &f.alice,
        TestRequest::post()
            .uri("/api/v1/job-runner/claim")
            .set_json(json!({"runner": "x"})),
    )
    .await;
    assert_eq!(st, 403);

    let runner = Runner::new(&a, &f.worker).await;
    let spec = runner.claim().await;
    assert_eq!(spec["job_id"], json!(id));
    assert_eq!(spec["base"]["repo_id"], "alice/bert");
    assert_eq!(spec["train_files"], json!(["train.csv"]));
    // The dataset's pull token reads the dataset, and only it.
    let tok = spec["dataset"]["pull_token"].as_str().unwrap();
    let rev = spec["dataset"]["revision"].as_str().unwrap();
    let (st, _, body) = call(
        &a,
        TestRequest::get()
            .uri(&format!("/datasets/alice/reviews/resolve/{rev}/train.csv"))
            .insert_header(bearer(tok)),
    )
    .await;
    assert_eq!((st, body.as_slice()), (200, TRAIN));
    let (st, _, _) = call(
        &a,
        TestRequest::get()
            .uri("/alice/private/resolve/main/secret.txt")
            .insert_header(bearer(tok)),
    )
    .await;
    assert!(st == 401 || st == 404, "{st}");
    assert_eq!(runner.claim().await, Value::Null, "one job, claimed once");
    let claim = spec["claim"].as_str().unwrap();
    let (st, v) = runner.progress(&spec, claim, 1.0).await;
    assert_eq!((st, &v["stop"]), (200, &Value::Null), "{v}");
    let (st, v) = runner
        .progress(&spec, &uuid::Uuid::new_v4().to_string(), 1.0)
        .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("conflict")));
    let (_, got) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
    )
    .await;
    assert_eq!(got["state"], "running");
    assert_eq!(got["progress"]["step"], 1);
    assert_eq!(got["metrics"]["loss"], 0.5);
    let (_, logs) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}/logs")),
    )
    .await;
    assert_eq!(logs["items"][0]["line"], "step 1");

    // Cancel: the runner is told at its next report, and the job ends cancelled.
    let (st, v) = req(
        &a,
        &f.alice,
        TestRequest::post().uri(&format!("/api/v1/jobs/alice/{id}/cancel")),
    )
    .await;
    assert_eq!(
        (st, v["cancel_requested"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    let (_, v) = runner.progress(&spec, claim, 2.0).await;
    assert_eq!(v["stop"], "cancelled");
    let (st, v) = runner
        .finish(
            &spec,
            json!({"outcome": "stopped", "reason": "cancelled", "cpu_seconds": 2.5}),
        )
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let (_, got) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
    )
    .await;
    assert_eq!(got["state"], "cancelled");
    assert_eq!(got["cpu_seconds"], 2.5);
    let (st, v) = req(
        &a,
        &f.alice,
        TestRequest::post().uri(&format!("/api/v1/jobs/alice/{id}/cancel")),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("conflict")));
    // The ended claim can do nothing more.
    assert_eq!(runner.progress(&spec, claim, 3.0).await.0, 409);
    // Nor can its pull tokens read anything (decided again on every use).
    let (st, _, body) = call(
        &a,
        TestRequest::get()
            .uri(&format!("/datasets/alice/reviews/resolve/{rev}/train.csv"))
            .insert_header(bearer(tok)),
    )
    .await;
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("has ended or is held by another claim"));

    // A queued job is cancelled at once.
    let (_, job2) = post_job(&a, &f.alice, "alice", job_body()).await;
    let id2 = job2["id"].as_str().unwrap();
    let (_, v) = req(
        &a,
        &f.alice,
        TestRequest::post().uri(&format!("/api/v1/jobs/alice/{id2}/cancel")),
    )
    .await;
    assert_eq!(v["state"], "cancelled");
    assert_eq!(runner.claim().await, Value::Null);

    // A lapsed lease: the job is claimed again and the old claim is refused.
    let (_, job3) = post_job(&a, &f.alice, "alice", job_body()).await;
    let first = runner.claim().await;
    sqlx::query(
        "UPDATE finetune_jobs SET leased_until = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(job3["id"].as_str().unwrap())
    .execute(&f.t.state.db)
    .await
    .unwrap();
    let second = runner.claim().await;
    assert_eq!(second["job_id"], job3["id"]);
    assert_ne!(second["claim"], first["claim"]);
    // The first claim's pull tokens stop; the second claim's read.
    let pulls = |spec: &Value| {
        TestRequest::get()
            .uri(&format!(
                "/datasets/alice/reviews/resolve/{}/train.csv",
                spec["dataset"]["revision"].as_str().unwrap()
            ))
            .insert_header(bearer(spec["dataset"]["pull_token"].as_str().unwrap()))
    };
    assert_eq!(call(&a, pulls(&first)).await.0, 401);
    assert_eq!(call(&a, pulls(&second)).await.0, 200);
    assert_eq!(
        runner
            .progress(&first, first["claim"].as_str().unwrap(), 1.0)
            .await
            .0,
        409
    );
    assert_eq!(runner.put(&first, "README.md", b"x").await, 409);
    assert_eq!(
        runner
            .progress(&second, second["claim"].as_str().unwrap(), 1.0)
            .await
            .0,
        200
    );
}

#[actix_web::test]
async fn wall_time_and_quota_stop_jobs_and_the_quota_refuses_new_ones() {
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let runner = Runner::new(&a, &f.worker).await;
    let mut body = job_body();
    body["max_wall_seconds"] = json!(5);
    let (_, job) = post_job(&a, &f.alice, "alice", body).await;
    let spec = runner.claim().await;
    assert_eq!(spec["max_wall_seconds"], 5);
    let claim = spec["claim"].as_str().unwrap();
    assert_eq!(
        runner.progress(&spec, claim, 1.0).await.1["stop"],
        Value::Null
    );
    // Past the limit (and its grace): the hub says stop even if the worker did not.
    sqlx::query(
        "UPDATE finetune_jobs SET started_at = now() - interval '60 seconds' WHERE id = $1::uuid",
    )
    .bind(job["id"].as_str().unwrap())
    .execute(&f.t.state.db)
    .await
    .unwrap();
    assert_eq!(
        runner.progress(&spec, claim, 1.0).await.1["stop"],
        "wall_time"
    );
    let (_, v) = runner
        .finish(
            &spec,
            json!({"outcome": "stopped", "reason": "wall_time", "cpu_seconds": 4}),
        )
        .await;
    assert_eq!(v["state"], "failed");
    let (_, got) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!(
            "/api/v1/jobs/alice/{}",
            job["id"].as_str().unwrap()
        )),
    )
    .await;
    assert!(
        got["error"]
            .as_str()
            .unwrap()
            .contains("wall-time limit of 5 s"),
        "{got}"
    );

    // A daily quota of 10 CPU-seconds (site admins set it; members read it).
    let (st, _) = req(
        &a,
        &f.alice,
        TestRequest::put()
            .uri("/api/v1/namespaces/alice/quota")
            .set_json(json!({"daily_job_cpu_seconds": 10})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, v) = req(
        &a,
        &f.root,
        TestRequest::put()
            .uri("/api/v1/namespaces/alice/quota")
            .set_json(json!({"daily_job_cpu_seconds": -1})),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (400, Some("validation_failed")));
    let (st, _) = req(
        &a,
        &f.root,
        TestRequest::put()
            .uri("/api/v1/namespaces/alice/quota")
            .set_json(json!({"daily_job_cpu_seconds": 10})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, _job2) = post_job(&a, &f.alice, "alice", job_body()).await;
    let spec = runner.claim().await;
    let claim = spec["claim"].as_str().unwrap();
    // 4 used by the first job + 5 of this one: within the quota.
    assert_eq!(
        runner.progress(&spec, claim, 5.0).await.1["stop"],
        Value::Null
    );
    let (_, q) = req(
        &a,
        &f.alice,
        TestRequest::get().uri("/api/v1/namespaces/alice/quota"),
    )
    .await;
    assert_eq!(q["daily_job_cpu_seconds"], 10);
    assert_eq!(q["job_cpu_seconds_today"], 9.0);
    // 4 + 7 > 10: the running job is stopped, and new jobs are refused.
    assert_eq!(runner.progress(&spec, claim, 7.0).await.1["stop"], "quota");
    let (_, v) = runner
        .finish(
            &spec,
            json!({"outcome": "stopped", "reason": "quota", "cpu_seconds": 7.5}),
        )
        .await;
    assert_eq!(v["state"], "failed");
    let (st, h, b) = call(
        &a,
        TestRequest::post()
            .uri("/api/v1/jobs/alice")
            .insert_header(bearer(&f.alice))
            .set_json(job_body()),
    )
    .await;
    let v = json_of(&b);
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("job_quota_exceeded")),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("10 CPU-seconds per UTC day"),
        "{v}"
    );
    assert!(h.get("retry-after").is_some());
    // Another namespace's quota is its own.
    create_repo(&a, &f.bob, "bob/bert", false).await;
    let mut other = job_body();
    other["output_repo"] = json!("bob/bert-reviews");
    let (st, v) = post_job(&a, &f.bob, "bob", other).await;
    assert_eq!(st, 201, "{v}");
}

#[actix_web::test]
async fn a_finished_job_commits_its_files_to_the_output_repo() {
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let runner = Runner::new(&a, &f.worker).await;
    let (_, job) = post_job(&a, &f.alice, "alice", job_body()).await;
    let id = job["id"].as_str().unwrap();
    let spec = runner.claim().await;
    let card = b"---\nbase_model: alice/bert\npipeline_tag: text-classification\n---\n# tuned\n";
    let cfg = br#"{"model_type": "bert", "architectures": ["BertForSequenceClassification"], "id2label": {"0": "neg", "1": "pos"}}"#;
    let weights = safetensors();
    assert_eq!(runner.put(&spec, "model.safetensors", &weights).await, 200);
    assert_eq!(runner.put(&spec, "config.json", cfg).await, 200);
    assert_eq!(runner.put(&spec, "README.md", b"draft").await, 200);
    assert_eq!(
        runner.put(&spec, "README.md", card).await,
        200,
        "a file sent again replaces the first"
    );
    assert_eq!(runner.put(&spec, "../escape", b"x").await, 422);
    // A file the finish names but never sent fails the job rather than commit half.
    let (_, v) = runner
        .finish(
            &spec,
            json!({"outcome": "succeeded", "cpu_seconds": 3, "metrics": {"test_accuracy": 0.9},
                               "files": ["model.safetensors", "config.json", "README.md"]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let commit = v["output_commit"].as_str().unwrap().to_string();
    let (_, got) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
    )
    .await;
    assert_eq!(got["state"], "succeeded");
    assert_eq!(got["metrics"]["test_accuracy"], 0.9);
    assert_eq!(
        got["deploy"],
        json!({"repository": "alice/bert-reviews", "revision": commit, "task": "text-classification"})
    );
    // A sentence encoder deploys as feature extraction, module configs in folders.
    let mut emb = job_body();
    emb["task"] = json!("sentence-embedding");
    emb["output_repo"] = json!("alice/bert-pairs");
    let (_, ejob) = post_job(&a, &f.alice, "alice", emb).await;
    let espec = runner.claim().await;
    assert_eq!(espec["job_id"], ejob["id"]);
    assert_eq!(espec["task"], "sentence-embedding");
    assert_eq!(espec["hyperparameters"]["anchor_column"], "anchor");
    let pooling = br#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#;
    assert_eq!(runner.put(&espec, "model.safetensors", &weights).await, 200);
    assert_eq!(
        runner.put(&espec, "1_Pooling/config.json", pooling).await,
        200
    );
    let (_, v) = runner
        .finish(
            &espec,
            json!({"outcome": "succeeded", "cpu_seconds": 2,
                               "files": ["model.safetensors", "1_Pooling/config.json"]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let (_, got) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!(
            "/api/v1/jobs/alice/{}",
            ejob["id"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(got["deploy"]["task"], "feature-extraction", "{got}");
    let paths = tree_paths(&a, "/api/models/alice/bert-pairs/tree/main?recursive=true").await;
    assert!(
        paths.contains(&"1_Pooling/config.json".to_string()),
        "{paths:?}"
    );
    let paths = tree_paths(&a, "/api/models/alice/bert-reviews/tree/main").await;
    for p in ["README.md", "config.json", "model.safetensors"] {
        assert!(paths.contains(&p.to_string()), "{paths:?}");
    }
    let (st, _, b) = call(
        &a,
        TestRequest::get().uri("/alice/bert-reviews/resolve/main/README.md"),
    )
    .await;
    assert_eq!((st, b.as_slice()), (200, card.as_slice()));
    let (_, info) = req(
        &a,
        &f.alice,
        TestRequest::get().uri("/api/models/alice/bert-reviews"),
    )
    .await;
    assert_eq!(info["pipeline_tag"], "text-classification", "{info}");

    // A second job whose runner names a file it did not upload fails, committing nothing.
    let (_, job2) = post_job(&a, &f.alice, "alice", job_body()).await;
    let spec2 = runner.claim().await;
    assert_eq!(spec2["job_id"], job2["id"]);
    assert_eq!(runner.put(&spec2, "config.json", cfg).await, 200);
    let (_, v) = runner
        .finish(&spec2, json!({"outcome": "succeeded", "cpu_seconds": 1, "files": ["config.json", "model.safetensors"]}))
        .await;
    assert_eq!(v["state"], "failed");
    let (_, got) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!(
            "/api/v1/jobs/alice/{}",
            job2["id"].as_str().unwrap()
        )),
    )
    .await;
    assert!(
        got["error"]
            .as_str()
            .unwrap()
            .contains("model.safetensors was not uploaded"),
        "{got}"
    );
    let (_, info2) = req(
        &a,
        &f.alice,
        TestRequest::get().uri("/api/models/alice/bert-reviews"),
    )
    .await;
    assert_eq!(info2["sha"], info["sha"]);
}

async fn html(a: &impl App, tok: &str, uri: &str) -> (u16, String) {
    let (st, _, b) = call(
        a,
        TestRequest::get()
            .uri(uri)
            .insert_header(("Accept", "text/html"))
            .insert_header(bearer(tok)),
    )
    .await;
    (st, String::from_utf8_lossy(&b).into_owned())
}

/// The dashboard's job pages: the list, a job's state, logs and hyperparameters,
/// Cancel only for the write role and only while the job can stop, the Deploy
/// link (with the endpoint task) once it succeeded; members only.
#[actix_web::test]
async fn job_pages_show_state_logs_cancel_and_deploy() {
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let alice_id = hub_api::db::namespaces::by_name(&f.t.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let acme = f.t.org("acme", alice_id).await;
    let bob_id = hub_api::db::namespaces::by_name(&f.t.state.db, "bob")
        .await
        .unwrap()
        .unwrap()
        .id;
    hub_api::db::namespaces::set_member(
        &f.t.state.db,
        acme,
        bob_id,
        hub_api::db::namespaces::Role::Read,
    )
    .await
    .unwrap();
    let mut body = job_body();
    body["task"] = json!("sentence-embedding");
    body["output_repo"] = json!("acme/bert-pairs");
    let (st, job) = post_job(&a, &f.alice, "acme", body).await;
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let page = format!("/jobs/acme/{id}");

    let (st, list) = html(&a, &f.alice, "/jobs/acme").await;
    assert_eq!(st, 200);
    assert!(
        list.contains(&format!("href=\"/jobs/acme/{id}\"")),
        "{list}"
    );
    assert!(list.contains("status-queued") && list.contains("sentence-embedding"));
    let (st, all) = html(&a, &f.alice, "/jobs").await;
    assert_eq!(st, 200);
    assert!(all.contains(&id[..8]));
    let (st, p) = html(&a, &f.alice, &page).await;
    assert_eq!(st, 200);
    assert!(
        p.contains("data-job-cancel"),
        "a writer may cancel a queued job"
    );
    assert!(p.contains("anchor_column") && p.contains("positive"), "{p}");
    assert!(
        !p.contains("label_column"),
        "only the columns the task reads"
    );
    assert!(!p.contains("data-job-deploy"));
    // A reader sees the job but no Cancel; an outsider gets the missing job's 404.
    let (_, bob_page) = html(&a, &f.bob, &page).await;
    assert!(bob_page.contains("status-queued") && !bob_page.contains("data-job-cancel"));
    let (_, carol) = f.t.user("carol", false, &["read", "write"]).await;
    let (_, carol_list) = html(&a, &carol, "/jobs").await;
    assert!(!carol_list.contains(&id[..8]), "not a member of acme");
    let (st, _) = html(&a, &carol, &page).await;
    assert_eq!(st, 404);
    let (st, _) = html(&a, &f.alice, "/jobs/acme/not-a-uuid").await;
    assert_eq!(st, 404);
    let (st, form) = html(&a, &f.alice, "/jobs/new?ns=acme&dataset=alice/reviews").await;
    assert_eq!(st, 200);
    assert!(
        form.contains("<option selected>acme</option>") && form.contains("value=\"alice/reviews\"")
    );

    // Running, then succeeded: the logs and metrics show, Cancel goes, Deploy comes.
    let runner = Runner::new(&a, &f.worker).await;
    let spec = runner.claim().await;
    let claim = spec["claim"].as_str().unwrap().to_string();
    assert_eq!(runner.progress(&spec, &claim, 1.0).await.0, 200);
    let (_, p) = html(&a, &f.alice, &page).await;
    assert!(
        p.contains("status-running") && p.contains("step 1") && p.contains("1/4 steps"),
        "{p}"
    );
    assert_eq!(
        runner.put(&spec, "model.safetensors", &safetensors()).await,
        200
    );
    let (_, v) = runner
        .finish(&spec, json!({"outcome": "succeeded", "cpu_seconds": 2,
                              "metrics": {"test_accuracy_at_1": 0.75}, "files": ["model.safetensors"]}))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let (_, p) = html(&a, &f.alice, &page).await;
    assert!(p.contains("status-succeeded") && !p.contains("data-job-cancel"));
    assert!(
        p.contains("test_accuracy_at_1") && p.contains("0.75"),
        "{p}"
    );
    assert!(
        p.contains("/inference/new?repo=acme%2Fbert%2Dpairs&#38;task=feature%2Dextraction"),
        "{p}"
    );
    let commit = v["output_commit"].as_str().unwrap();
    assert!(p.contains(&format!("/acme/bert-pairs/commit/{commit}")));
}

/// A claim is made by a registered worker, proved by its registration's
/// `gateway_secret` (as heartbeats are), and the claim's later calls must
/// come from that worker: another registered worker of the same fleet
/// credential that learned the claim id can neither report, upload nor
/// finish. The job stays bound to the registration that claimed it, even
/// after that worker registered again or its row was dropped as lost.
#[actix_web::test]
async fn job_claims_and_reports_are_bound_to_the_claiming_worker() {
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let (_, job) = post_job(&a, &f.alice, "alice", job_body()).await;
    let id = job["id"].as_str().unwrap().to_string();
    let (w1, s1) = register_worker(&a, &f.worker, "w1").await;
    let (_w2, s2) = register_worker(&a, &f.worker, "w2").await;
    let claim = |body: Value, secret: Option<&str>| {
        let mut r = TestRequest::post()
            .uri("/api/v1/job-runner/claim")
            .set_json(body);
        if let Some(s) = secret {
            r = r.insert_header((SECRET, s.to_string()));
        }
        r
    };
    let refused: Vec<(Value, Option<&str>, u16, &str)> = vec![
        (json!({"runner": "w1"}), Some(&s1), 400, "validation_failed"),
        (
            json!({"runner": "w1", "worker_id": "nope"}),
            Some(&s1),
            400,
            "validation_failed",
        ),
        (
            json!({"runner": "w1", "worker_id": w1}),
            None,
            403,
            "forbidden",
        ),
        (
            json!({"runner": "w1", "worker_id": w1}),
            Some(&s2),
            403,
            "forbidden",
        ),
        (
            json!({"runner": "w1", "worker_id": uuid::Uuid::new_v4().to_string()}),
            Some(&s1),
            404,
            "not_found",
        ),
    ];
    for (body, secret, want, code) in refused {
        let (st, v) = req(&a, &f.worker, claim(body.clone(), secret)).await;
        assert_eq!((st, v["code"].as_str()), (want, Some(code)), "{body}: {v}");
    }
    let (_, v) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
    )
    .await;
    assert_eq!(v["state"], "queued", "a refused claim claims nothing");

    let (st, v) = req(
        &a,
        &f.worker,
        claim(
            json!({"runner": "anything", "worker_id": w1}),
            Some(s1.as_str()),
        ),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let spec = v["job"].clone();
    let claim_id = spec["claim"].as_str().unwrap().to_string();
    let (_, v) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
    )
    .await;
    assert_eq!(v["runner"], "w1", "the registered worker's name");

    // w2 with w1's claim id: every call of the claim is refused, nothing changes.
    let as_w = |secret: &str| Runner {
        app: &a,
        token: f.worker.clone(),
        worker_id: String::new(),
        secret: secret.to_string(),
    };
    let w2_runner = as_w(&s2);
    let (st, v) = w2_runner.progress(&spec, &claim_id, 9.0).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    assert_eq!(w2_runner.put(&spec, "README.md", b"# mine").await, 403);
    let (st, _) = w2_runner
        .finish(
            &spec,
            json!({"outcome": "failed", "error": "w2 says so", "cpu_seconds": 0}),
        )
        .await;
    assert_eq!(st, 403);
    assert_eq!(as_w("").progress(&spec, &claim_id, 9.0).await.0, 403);
    let (_, v) = req(
        &a,
        &f.alice,
        TestRequest::get().uri(&format!("/api/v1/jobs/alice/{id}")),
    )
    .await;
    assert_eq!(
        (v["state"].as_str(), v["cpu_seconds"].as_f64()),
        (Some("running"), Some(0.0)),
        "{v}"
    );
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM finetune_job_files")
        .fetch_one(&f.t.state.db)
        .await
        .unwrap();
    assert_eq!(files, 0);

    // w1's own calls work; after it registers again (new id and secret) and
    // its old row is gone, the job still answers the secret it was claimed with.
    let w1_runner = as_w(&s1);
    assert_eq!(w1_runner.progress(&spec, &claim_id, 1.0).await.0, 200);
    let (_, s1_again) = register_worker(&a, &f.worker, "w1").await;
    sqlx::query("DELETE FROM workers WHERE id = $1::uuid")
        .bind(&w1)
        .execute(&f.t.state.db)
        .await
        .unwrap();
    assert_eq!(as_w(&s1_again).progress(&spec, &claim_id, 2.0).await.0, 403);
    assert_eq!(w1_runner.progress(&spec, &claim_id, 2.0).await.0, 200);
    let (st, v) = w1_runner
        .finish(
            &spec,
            json!({"outcome": "failed", "error": "done", "cpu_seconds": 2}),
        )
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("failed")), "{v}");
}

/// A job's base model and dataset may be another namespace's private repos
/// (its creator could read them): other members of the job's namespace, or a
/// member's inference-only token, see the job but not those names, in the
/// API (job, list, logs, error) and on the dashboard; the creator and anyone
/// who may read the repos see them.
#[actix_web::test]
async fn job_inputs_are_named_only_to_callers_who_may_read_them() {
    use hub_api::db::namespaces::{set_member, Role};
    let f = fixture().await;
    let a = app(&f.t.state).await;
    let db = &f.t.state.db;
    let id_of = |name: &'static str| async move {
        hub_api::db::namespaces::by_name(db, name)
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let alice_id = id_of("alice").await;
    let (olga_id, olga) = f.t.user("olga", false, &["read", "write"]).await;
    let (dave_id, dave) = f.t.user("dave", false, &["read", "write"]).await;
    let (reed_id, reed) = f.t.user("reed", false, &["read", "write"]).await;
    let (_, reed_infer) = token(&f.t, reed_id, &["inference"], None, None).await;
    let other = f.t.org("other", olga_id).await;
    let acme = f.t.org("acme", alice_id).await;
    set_member(db, other, dave_id, Role::Read).await.unwrap();
    set_member(db, acme, dave_id, Role::Write).await.unwrap();
    set_member(db, acme, reed_id, Role::Read).await.unwrap();
    create_repo(&a, &olga, "other/secret-bert", true).await;
    commit_files(
        &a,
        &olga,
        "other/secret-bert",
        &[("config.json", BERT), ("model.safetensors", &safetensors())],
    )
    .await;
    let (st, _, b) = call(
        &a,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(&olga))
            .set_json(json!({"name": "secret-ds", "organization": "other", "type": "dataset", "private": true})),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    commit_files_to(
        &a,
        &olga,
        "datasets",
        "other/secret-ds",
        &[("train.csv", TRAIN), ("test.csv", TEST)],
    )
    .await;
    // acme's own private base, for the inference-only token.
    create_repo(&a, &f.alice, "acme/own-bert", true).await;
    commit_files(
        &a,
        &f.alice,
        "acme/own-bert",
        &[("config.json", BERT), ("model.safetensors", &safetensors())],
    )
    .await;

    let mut body = job_body();
    body["base_model"] = json!("other/secret-bert");
    body["dataset"] = json!("other/secret-ds");
    body["output_repo"] = json!("acme/out");
    let (st, job) = post_job(&a, &dave, "acme", body).await;
    assert_eq!(st, 201, "{job}");
    assert_eq!(job["base_model"]["repository"], "other/secret-bert");
    let id = job["id"].as_str().unwrap().to_string();
    let mut body = job_body();
    body["base_model"] = json!("acme/own-bert");
    body["output_repo"] = json!("acme/out2");
    let (st, own) = post_job(&a, &f.alice, "acme", body).await;
    assert_eq!(st, 201, "{own}");
    let own_id = own["id"].as_str().unwrap().to_string();

    // The worker names the repos in its log lines and in an error.
    let runner = Runner::new(&a, &f.worker).await;
    let spec = runner.claim().await;
    assert_eq!(spec["job_id"], json!(id));
    let claim = spec["claim"].as_str().unwrap().to_string();
    let (st, _) = req(
        &a,
        &f.worker,
        TestRequest::post()
            .uri(&format!("/api/v1/job-runner/{id}/progress"))
            .insert_header(("X-Job-Claim", claim.clone()))
            .insert_header((SECRET, runner.secret.clone()))
            .set_json(json!({"step": 0, "total_steps": 4, "cpu_seconds": 0,
                "logs": ["pulling base model other/secret-bert@abc", "reading OTHER/Secret-DS train.csv"],
                "metrics": {}})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = runner
        .finish(
            &spec,
            json!({"outcome": "failed", "error": "cannot load Other/Secret-Bert: bad", "cpu_seconds": 0}),
        )
        .await;
    assert_eq!(st, 200);

    let get = |tok: &str, uri: String| {
        let tok = tok.to_string();
        let a = &a;
        async move { req(a, &tok, TestRequest::get().uri(&uri)).await }
    };
    let leaks = |v: &Value| v.to_string().to_ascii_lowercase().contains("secret-");
    for tok in [&reed, &reed_infer, &f.alice] {
        let (st, v) = get(tok, format!("/api/v1/jobs/acme/{id}")).await;
        assert_eq!(st, 200, "{v}");
        assert!(!leaks(&v), "{v}");
        assert_eq!(
            v["base_model"],
            json!({"repository": null, "revision": null, "hidden": true})
        );
        assert_eq!(v["dataset"]["hidden"], true);
        assert_eq!(v["dataset"]["train_files"], Value::Null);
        assert_eq!(v["error"], "cannot load [hidden repository]: bad");
        let (_, list) = get(tok, "/api/v1/jobs/acme".to_string()).await;
        assert!(!leaks(&list), "{list}");
        let (_, logs) = get(tok, format!("/api/v1/jobs/acme/{id}/logs")).await;
        assert!(!leaks(&logs), "{logs}");
        assert_eq!(
            logs["items"][0]["line"],
            "pulling base model [hidden repository]@abc"
        );
        for page in ["/jobs/acme".to_string(), format!("/jobs/acme/{id}")] {
            let (st, html) = html(&a, tok, &page).await;
            assert_eq!(st, 200);
            assert!(!html.to_ascii_lowercase().contains("secret-"), "{page}");
        }
    }
    // The creator, and anyone who may read the repos, see them.
    for tok in [&dave] {
        let (_, v) = get(tok, format!("/api/v1/jobs/acme/{id}")).await;
        assert_eq!(v["base_model"]["repository"], "other/secret-bert");
        assert_eq!(v["dataset"]["repository"], "other/secret-ds");
        let (_, logs) = get(tok, format!("/api/v1/jobs/acme/{id}/logs")).await;
        assert_eq!(
            logs["items"][0]["line"],
            "pulling base model other/secret-bert@abc"
        );
    }
    set_member(db, other, reed_id, Role::Read).await.unwrap();
    let (_, v) = get(&reed, format!("/api/v1/jobs/acme/{id}")).await;
    assert_eq!(v["base_model"]["repository"], "other/secret-bert");
    // acme's own private base: its read role reads it, its inference-only token does not.
    let (_, v) = get(&reed, format!("/api/v1/jobs/acme/{own_id}")).await;
    assert_eq!(v["base_model"]["repository"], "acme/own-bert");
    let (_, v) = get(&reed_infer, format!("/api/v1/jobs/acme/{own_id}")).await;
    assert_eq!(v["base_model"]["hidden"], true, "{v}");
    assert_eq!(v["dataset"]["repository"], "alice/reviews", "public");
}
