//! Fine-tuning jobs: the queue (claims with `FOR UPDATE SKIP LOCKED` and a lease),
//! progress, logs, the result files a worker uploaded, and the CPU-seconds a
//! namespace's jobs used.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub namespace_id: i64,
    pub namespace: String,
    pub created_by: Option<i64>,
    pub task: String,
    pub base_repo_id: Option<i64>,
    pub base_model: String,
    pub base_revision: String,
    pub dataset_repo_id: Option<i64>,
    pub dataset: String,
    pub dataset_revision: String,
    pub train_files: Vec<String>,
    pub test_files: Vec<String>,
    pub hyperparameters: serde_json::Value,
    pub output_repo_id: Option<i64>,
    pub output_repo: String,
    pub max_wall_seconds: i32,
    pub state: String,
    pub cancel_requested: bool,
    pub attempts: i32,
    pub claim: Option<Uuid>,
    pub runner: Option<String>,
    /// The registered worker that made the claim.
    pub worker_id: Option<Uuid>,
    /// SHA-256 of the gateway secret the claim proved: its reports must prove it too.
    pub worker_secret_sha256: Option<Vec<u8>>,
    pub leased_until: Option<DateTime<Utc>>,
    pub step: i64,
    pub total_steps: i64,
    pub metrics: serde_json::Value,
    pub cpu_seconds: f64,
    pub error: Option<String>,
    pub output_commit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLS: &str = "j.id, j.namespace_id, n.name AS namespace, j.created_by, j.task, j.base_repo_id, \
    j.base_model, j.base_revision, j.dataset_repo_id, j.dataset, j.dataset_revision, j.train_files, \
    j.test_files, j.hyperparameters, j.output_repo_id, j.output_repo, j.max_wall_seconds, j.state, \
    j.cancel_requested, j.attempts, j.claim, j.runner, j.worker_id, j.worker_secret_sha256, \
    j.leased_until, j.step, j.total_steps, \
    j.metrics, j.cpu_seconds, j.error, j.output_commit, j.created_at, j.started_at, j.finished_at";

/// How many times a job is claimed before a lapsed lease fails it.
pub const MAX_CLAIMS: i32 = 3;
/// Most log lines kept per job.
pub const MAX_LOG_LINES: i64 = 5000;

/// Fields of a new job.
pub struct NewJob<'a> {
    pub id: Uuid,
    pub namespace_id: i64,
    pub created_by: i64,
    pub task: &'a str,
    pub base_repo_id: i64,
    pub base_model: &'a str,
    pub base_revision: &'a str,
    pub dataset_repo_id: i64,
    pub dataset: &'a str,
    pub dataset_revision: &'a str,
    pub train_files: &'a [String],
    pub test_files: &'a [String],
    pub hyperparameters: &'a serde_json::Value,
    pub output_repo_id: i64,
    pub output_repo: &'a str,
    pub max_wall_seconds: i32,
}

pub async fn insert(db: impl PgExecutor<'_>, j: &NewJob<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO finetune_jobs (id, namespace_id, created_by, task, base_repo_id, base_model,
            base_revision, dataset_repo_id, dataset, dataset_revision, train_files, test_files,
            hyperparameters, output_repo_id, output_repo, max_wall_seconds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(j.id)
    .bind(j.namespace_id)
    .bind(j.created_by)
    .bind(j.task)
    .bind(j.base_repo_id)
    .bind(j.base_model)
    .bind(j.base_revision)
    .bind(j.dataset_repo_id)
    .bind(j.dataset)
    .bind(j.dataset_revision)
    .bind(j.train_files)
    .bind(j.test_files)
    .bind(j.hyperparameters)
    .bind(j.output_repo_id)
    .bind(j.output_repo)
    .bind(j.max_wall_seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// A job by id (any namespace: callers decide who may see it).
pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM finetune_jobs j JOIN namespaces n ON n.id = j.namespace_id WHERE j.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A namespace's jobs, newest first, after the job `before` (a cursor).
pub async fn list(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLS} FROM finetune_jobs j JOIN namespaces n ON n.id = j.namespace_id
         WHERE j.namespace_id = $1
           AND ($2::uuid IS NULL OR (j.created_at, j.id) <
                (SELECT created_at, id FROM finetune_jobs WHERE id = $2 AND namespace_id = $1))
         ORDER BY j.created_at DESC, j.id DESC LIMIT $3"
    ))
    .bind(namespace_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Cancels a job: a queued one at once, a running one at its runner's next
/// report. Answers the state after, or None when the job had already ended.
pub async fn cancel(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<String>> {
    let r: Option<(String,)> = sqlx::query_as(
        "UPDATE finetune_jobs SET cancel_requested = true,
            state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
            finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
            error = CASE WHEN state = 'queued' THEN 'cancelled before it started' ELSE error END
         WHERE id = $1 AND state IN ('queued', 'running') RETURNING state",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(r.map(|r| r.0))
}

/// Settles jobs whose runner went silent: after [`MAX_CLAIMS`] claims a lapsed
/// lease fails the job, a lapsed cancelled one is cancelled. Returns how many.
pub async fn settle_lapsed(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE finetune_jobs SET
            state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
            error = CASE WHEN cancel_requested THEN 'cancelled'
                         ELSE 'the worker running it stopped reporting (' || attempts || ' claims)' END,
            finished_at = now(), claim = NULL
         WHERE state = 'running' AND leased_until < now()
           AND (attempts >= $1 OR cancel_requested)",
    )
    .bind(MAX_CLAIMS)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Who claims a job: the registered worker (its name is the job's `runner`)
/// and the SHA-256 of the gateway secret its claim proved.
pub struct Claimer<'a> {
    pub worker_id: Uuid,
    pub name: &'a str,
    pub secret_sha256: &'a [u8],
}

/// Claims the oldest due job (queued, or running with a lapsed lease) for
/// `lease_s` seconds under a new claim id, bound to `by`; answers the job's id.
pub async fn claim(
    db: impl PgExecutor<'_>,
    by: &Claimer<'_>,
    lease_s: i64,
) -> sqlx::Result<Option<Uuid>> {
    let claimed: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE finetune_jobs j SET state = 'running', claim = $1, runner = $2,
            leased_until = now() + make_interval(secs => $3), attempts = j.attempts + 1,
            started_at = now(), step = 0, error = NULL, worker_id = $4, worker_secret_sha256 = $5
         FROM (SELECT id FROM finetune_jobs
               WHERE (state = 'queued' OR (state = 'running' AND leased_until < now()))
                 AND NOT cancel_requested
               ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1) due
         WHERE j.id = due.id RETURNING j.id",
    )
    .bind(Uuid::new_v4())
    .bind(by.name)
    .bind(lease_s as f64)
    .bind(by.worker_id)
    .bind(by.secret_sha256)
    .fetch_optional(db)
    .await?;
    Ok(claimed.map(|c| c.0))
}

/// What a progress report changed, for the answer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reported {
    pub namespace_id: i64,
    pub cancel_requested: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub max_wall_seconds: i32,
}

/// Records a progress report of the claim `claim` (and renews its lease); None
/// when the claim is no longer the job's or the job is not running.
#[allow(clippy::too_many_arguments)]
pub async fn progress(
    db: impl PgExecutor<'_>,
    id: Uuid,
    claim: Uuid,
    step: i64,
    total: i64,
    cpu_seconds: f64,
    metrics: &serde_json::Value,
    lease_s: i64,
) -> sqlx::Result<Option<Reported>> {
    sqlx::query_as(
        "UPDATE finetune_jobs SET step = $3, total_steps = $4, cpu_seconds = GREATEST(cpu_seconds, $5),
            metrics = $6, leased_until = now() + make_interval(secs => $7)
         WHERE id = $1 AND claim = $2 AND state = 'running'
         RETURNING namespace_id, cancel_requested, started_at, max_wall_seconds",
    )
    .bind(id)
    .bind(claim)
    .bind(step)
    .bind(total)
    .bind(cpu_seconds)
    .bind(metrics)
    .bind(lease_s as f64)
    .fetch_optional(db)
    .await
}

/// Appends log lines (each cut to 2,000 characters), keeping at most
/// [`MAX_LOG_LINES`] per job.
pub async fn add_logs(db: &mut PgConnection, id: Uuid, lines: &[String]) -> sqlx::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let (have,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM finetune_job_logs WHERE job_id = $1")
            .bind(id)
            .fetch_one(&mut *db)
            .await?;
    let room = (MAX_LOG_LINES - have).max(0) as usize;
    let kept: Vec<String> = lines
        .iter()
        .take(room)
        .map(|l| l.chars().filter(|c| *c != '\0').take(2000).collect())
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO finetune_job_logs (job_id, line) SELECT $1, unnest($2::text[])")
        .bind(id)
        .bind(&kept)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Log lines after `after`, in order: `(seq, at, line)`.
pub async fn logs(
    db: impl PgExecutor<'_>,
    id: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, DateTime<Utc>, String)>> {
    sqlx::query_as(
        "SELECT seq, at, line FROM finetune_job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// An uploaded result file.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobFile {
    pub path: String,
    pub pending_id: i64,
    pub sha256: String,
    pub size: i64,
    pub git_oid: String,
    pub is_binary: bool,
    pub content: Option<Vec<u8>>,
}

/// Records an uploaded file for `claim`; answers the pending object it replaced.
pub async fn put_file(
    db: &mut PgConnection,
    id: Uuid,
    claim: Uuid,
    f: &JobFile,
) -> sqlx::Result<Option<(i64, String)>> {
    let old: Option<(i64, String)> = sqlx::query_as(
        "DELETE FROM finetune_job_files WHERE job_id = $1 AND path = $2 RETURNING pending_id, sha256",
    )
    .bind(id)
    .bind(&f.path)
    .fetch_optional(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO finetune_job_files (job_id, path, claim, pending_id, sha256, size, git_oid, is_binary, content)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(&f.path)
    .bind(claim)
    .bind(f.pending_id)
    .bind(&f.sha256)
    .bind(f.size)
    .bind(&f.git_oid)
    .bind(f.is_binary)
    .bind(&f.content)
    .execute(&mut *db)
    .await?;
    Ok(old)
}

/// The files `claim` uploaded.
pub async fn files(db: impl PgExecutor<'_>, id: Uuid, claim: Uuid) -> sqlx::Result<Vec<JobFile>> {
    sqlx::query_as(
        "SELECT path, pending_id, sha256, size, git_oid, is_binary, content FROM finetune_job_files
         WHERE job_id = $1 AND claim = $2 ORDER BY path",
    )
    .bind(id)
    .bind(claim)
    .fetch_all(db)
    .await
}

/// Forgets a job's uploaded files (their pending objects are settled by the caller).
pub async fn drop_files(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as("DELETE FROM finetune_job_files WHERE job_id = $1 RETURNING pending_id, sha256")
        .bind(id)
        .fetch_all(db)
        .await
}

/// How a job ended.
pub struct Ending<'a> {
    pub state: &'a str,
    pub error: Option<&'a str>,
    pub cpu_seconds: f64,
    pub metrics: &'a serde_json::Value,
    pub output_commit: Option<&'a str>,
}

/// Ends the running job of `claim`; false when the claim is no longer its.
pub async fn finish(
    db: impl PgExecutor<'_>,
    id: Uuid,
    claim: Uuid,
    e: &Ending<'_>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE finetune_jobs SET state = $3, error = $4, cpu_seconds = GREATEST(cpu_seconds, $5),
            metrics = $6, output_commit = $7, finished_at = now(), leased_until = NULL,
            step = CASE WHEN $3 = 'succeeded' THEN total_steps ELSE step END
         WHERE id = $1 AND claim = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(claim)
    .bind(e.state)
    .bind(e.error)
    .bind(e.cpu_seconds)
    .bind(e.metrics)
    .bind(e.output_commit)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// CPU-seconds a namespace's jobs used since `since` (jobs that ended since, and
/// running ones), the number a daily quota is checked against.
pub async fn cpu_seconds_since(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    since: DateTime<Utc>,
) -> sqlx::Result<f64> {
    let (s,): (Option<f64>,) = sqlx::query_as(
        "SELECT sum(cpu_seconds) FROM finetune_jobs
         WHERE namespace_id = $1 AND (finished_at IS NULL OR finished_at >= $2)",
    )
    .bind(namespace_id)
    .bind(since)
    .fetch_one(db)
    .await?;
    Ok(s.unwrap_or(0.0))
}

/// The name, full name and admin flag of a job's creator (None: deleted).
pub async fn creator(
    db: impl PgExecutor<'_>,
    user_id: i64,
) -> sqlx::Result<Option<(String, String, bool)>> {
    sqlx::query_as(
        "SELECT n.name, n.fullname, u.is_admin FROM namespaces n JOIN users u ON u.namespace_id = n.id
         WHERE n.id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
}
