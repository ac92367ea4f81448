//! The job runner: claims fine-tuning jobs from the hub (`/api/v1/job-runner/...`),
//! one at a time, checks a LoRA job's base before pulling it (a safetensors decoder of
//! a family the trainer covers), pulls the base model (the verified cache, as endpoints
//! do) and the dataset's split files, trains on a blocking thread, reports progress
//! every two seconds (the answer may say stop: cancelled, wall time, quota), uploads the result
//! files and finishes the job. Any failure ends the job with its message; the runner
//! itself only stops when the worker does.
//!
//! A claim is made in the name of this worker's registration (the control loop's,
//! `control::SharedRegistration`, handed to both by `hub_worker::run`): the claim names its `worker_id` and every call
//! sends its `gateway_secret` in `X-Paddock-Worker-Secret`; the hub binds the job to
//! that registration, so the job's later calls send the secret it was claimed with
//! (even if the worker has registered again since). Before the control loop has
//! registered, the runner claims nothing.

use super::decoder::DecoderConfig;
use super::embed::{self, PairInput};
use super::lora::{self, LoraInput};
use super::train::{self, Control, TrainError, TrainInput, TrainOutput};
use super::{card, data};
use crate::control::{Client, ControlError, Registration};
use crate::pull::{PullRequest, Puller};
use hub_types::control::WORKER_SECRET_HEADER;
use hub_types::jobs::{
    ClaimRequest, ClaimResponse, Finish, FinishAnswer, JobSpec, JobTask, Outcome, Progress,
    ProgressAnswer, StopReason, CLAIM_HEADER,
};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the runner needs.
pub struct RunnerContext {
    pub(crate) client: Arc<Client>,
    pub puller: Puller,
    /// The worker's name, shown in the job.
    pub name: String,
    /// The control loop's registration, which claims are made in the name of.
    pub registration: crate::control::SharedRegistration,
    /// Scratch space for results (one folder per job, removed after).
    pub work_dir: PathBuf,
    /// How often an idle runner asks for a job.
    pub poll: Duration,
}

/// What the training thread and the reporter share.
#[derive(Default)]
struct Shared {
    step: u64,
    total: u64,
    logs: Vec<String>,
    metrics: Map<String, Value>,
    stop: Option<StopReason>,
    /// The hub no longer knows this claim: stop, and do not finish.
    lost: bool,
}

struct SharedControl(Arc<Mutex<Shared>>);

impl Control for SharedControl {
    fn step(&mut self, step: u64, total: u64, loss: Option<f32>) -> Option<StopReason> {
        let mut s = self.0.lock().expect("job state");
        s.step = step;
        s.total = total;
        if let Some(l) = loss {
            s.metrics.insert("loss".into(), Value::from(l as f64));
        }
        s.stop
    }
    fn log(&mut self, line: String) {
        tracing::info!(target: "hub_worker::finetune", "{line}");
        self.0.lock().expect("job state").logs.push(line);
    }
    fn metric(&mut self, name: &str, value: Value) {
        self.0
            .lock()
            .expect("job state")
            .metrics
            .insert(name.to_string(), value);
    }
}

/// CPU time of this process (user + system), from `/proc/self/stat` (Linux; clock
/// ticks of 1/100 s). A job is charged the difference over its run: a worker runs one
/// job at a time, and whatever else the process computes meanwhile counts too.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs until `cancel`.
pub async fn run(ctx: Arc<RunnerContext>, cancel: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let claimed = tokio::select! {
            r = claim(&ctx) => r,
            _ = cancel.cancelled() => return,
        };
        let wait = match claimed {
            Ok(Some((job, reg))) => {
                failures = 0;
                let id = job.job_id.clone();
                tracing::info!(job.id = %id, worker.id = %reg.worker_id, base = %job.base.repo_id, dataset = %job.dataset.repo_id, "fine-tuning job claimed");
                run_job(&ctx, job, &reg, &cancel).await;
                tracing::info!(job.id = %id, "fine-tuning job ended");
                Duration::ZERO
            }
            Ok(None) => ctx.poll,
            Err(ControlError::Rejected(s)) => {
                tracing::warn!(status = s, "the hub refused the job runner's token");
                Duration::from_secs(30)
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "claiming a job failed");
                ctx.poll * failures.min(8)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Claims a job in the name of this worker's current registration (none yet:
/// nothing to claim with); answers the job and the registration it is bound to.
async fn claim(ctx: &RunnerContext) -> Result<Option<(JobSpec, Registration)>, ControlError> {
    let Some(reg) = ctx.registration.current() else {
        tracing::debug!("not registered with the hub yet; no job is claimed");
        return Ok(None);
    };
    let url = format!("{}/api/v1/job-runner/claim", ctx.client.hub);
    let body = ClaimRequest {
        runner: ctx.name.clone(),
        worker_id: Some(reg.worker_id.clone()),
    };
    let req = ctx
        .client
        .http
        .post(url)
        .header(WORKER_SECRET_HEADER, &reg.secret)
        .json(&body);
    let r: ClaimResponse = ctx.client.call(req, Duration::from_secs(30)).await?;
    Ok(r.job.map(|job| (job, reg)))
}

fn job_url(ctx: &RunnerContext, job: &JobSpec, tail: &str) -> String {
    format!("{}/api/v1/job-runner/{}/{tail}", ctx.client.hub, job.job_id)
}

/// A call of the claim: its id, and the secret of the registration it was made by.
fn for_claim(
    req: reqwest::RequestBuilder,
    job: &JobSpec,
    reg: &Registration,
) -> reqwest::RequestBuilder {
    req.header(CLAIM_HEADER, &job.claim)
        .header(WORKER_SECRET_HEADER, &reg.secret)
}

async fn report(
    ctx: &RunnerContext,
    job: &JobSpec,
    reg: &Registration,
    shared: &Arc<Mutex<Shared>>,
    cpu0: f64,
) -> Result<(), ControlError> {
    let body = {
        let mut s = shared.lock().expect("job state");
        Progress {
            step: s.step,
            total_steps: s.total,
            cpu_seconds: process_cpu_seconds() - cpu0,
            logs: std::mem::take(&mut s.logs),
            metrics: s.metrics.clone(),
        }
    };
    let req = for_claim(
        ctx.client.http.post(job_url(ctx, job, "progress")),
        job,
        reg,
    )
    .json(&body);
    match ctx
        .client
        .call::<ProgressAnswer>(req, Duration::from_secs(30))
        .await
    {
        Ok(a) => {
            if let Some(r) = a.stop {
                shared.lock().expect("job state").stop.get_or_insert(r);
            }
            Ok(())
        }
        Err(e @ (ControlError::Gone | ControlError::Status { status: 409, .. })) => {
            let mut s = shared.lock().expect("job state");
            s.lost = true;
            s.stop.get_or_insert(StopReason::Cancelled);
            Err(e)
        }
        Err(e) => {
            // Logs not sent are sent with the next report.
            tracing::debug!(error = %e, "progress report failed");
            Err(e)
        }
    }
}

/// The hub URL of `tail` segments, each escaped.
fn hub_url<'a>(
    ctx: &RunnerContext,
    tail: impl IntoIterator<Item = &'a str>,
) -> Result<url::Url, String> {
    let mut url = url::Url::parse(&ctx.client.hub).map_err(|e| e.to_string())?;
    {
        let mut seg = url
            .path_segments_mut()
            .map_err(|_| "the hub URL cannot take a path".to_string())?;
        seg.pop_if_empty();
        for part in tail {
            seg.push(part);
        }
    }
    Ok(url)
}

/// Fetches one dataset file through `/resolve`, at most [`data::MAX_FILE_BYTES`].
async fn fetch_data_file(
    ctx: &RunnerContext,
    job: &JobSpec,
    path: &str,
) -> Result<Vec<u8>, String> {
    let url = hub_url(
        ctx,
        std::iter::once("datasets")
            .chain(job.dataset.repo_id.split('/'))
            .chain(["resolve", job.dataset.revision.as_str()])
            .chain(path.split('/')),
    )?;
    fetch_bytes(ctx, url, &job.dataset.pull_token, path).await
}

/// GETs `url` with `token`, at most [`data::MAX_FILE_BYTES`].
async fn fetch_bytes(
    ctx: &RunnerContext,
    url: url::Url,
    token: &str,
    path: &str,
) -> Result<Vec<u8>, String> {
    let mut resp = ctx
        .client
        .http
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "{path}: the hub answered HTTP {}",
            resp.status().as_u16()
        ));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{path}: {e}"))? {
        if (out.len() + chunk.len()) as u64 > data::MAX_FILE_BYTES {
            return Err(format!(
                "{path}: larger than {} MiB",
                data::MAX_FILE_BYTES >> 20
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Checks, before pulling anything, that a LoRA job's base is a safetensors decoder
/// of a family the trainer covers: a GGUF-only repo, a repo without config.json or
/// safetensors, or another architecture ends the job with the reason.
async fn check_lora_base(ctx: &RunnerContext, job: &JobSpec) -> Result<(), String> {
    let base = &job.base;
    let repo = &base.repo_id;
    let info_url = hub_url(
        ctx,
        std::iter::once("api")
            .chain(std::iter::once("models"))
            .chain(repo.split('/'))
            .chain(["revision", base.revision.as_str()]),
    )?;
    let info = fetch_bytes(ctx, info_url, &base.pull_token, "the repo listing").await?;
    let info: Value =
        serde_json::from_slice(&info).map_err(|e| format!("the repo listing: {e}"))?;
    let files: Vec<&str> = info
        .get("siblings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("rfilename").and_then(Value::as_str))
        .collect();
    let top = |ext: &str| {
        files
            .iter()
            .find(|f| !f.contains('/') && f.ends_with(ext))
            .copied()
    };
    let has_config = files.contains(&"config.json");
    match (top(".safetensors"), top(".gguf")) {
        (None, Some(gguf)) => {
            return Err(format!(
                "the base model {repo} holds only GGUF weights ({gguf}): LoRA jobs train a \
                 transformers checkpoint (config.json and model*.safetensors); upload the \
                 safetensors model it was converted from"
            ))
        }
        (None, None) => {
            return Err(format!(
                "the base model {repo} has no *.safetensors weights: LoRA jobs train a \
                 transformers checkpoint (config.json and model*.safetensors)"
            ))
        }
        _ if !has_config => {
            return Err(format!(
                "the base model {repo} has no config.json: LoRA jobs train a transformers \
                 checkpoint (config.json and model*.safetensors)"
            ))
        }
        _ => {}
    }
    let cfg_url = hub_url(
        ctx,
        repo.split('/')
            .chain(["resolve", base.revision.as_str(), "config.json"]),
    )?;
    let cfg = fetch_bytes(ctx, cfg_url, &base.pull_token, "config.json").await?;
    let cfg: Value =
        serde_json::from_slice(&cfg).map_err(|e| format!("the base model's config.json: {e}"))?;
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    if !crate::engine::generate::candle::is_causal_lm(&cfg) {
        return Err(format!(
            "the base model {repo} is not a causal LM LoRA jobs train (model_type {model_type:?}, \
             architectures {}): supported are llama, mistral, qwen2, qwen3 and gemma3 decoders \
             (*ForCausalLM)",
            cfg.get("architectures").unwrap_or(&Value::Null)
        ));
    }
    DecoderConfig::from_json(&cfg)
        .map_err(|e| format!("the base model {repo} cannot be trained with LoRA: {e}"))?;
    Ok(())
}

/// Reads a split's files with `parse` (on a blocking thread), at most
/// [`data::MAX_ROWS`] rows in all.
async fn read_split<T, F>(
    ctx: &RunnerContext,
    job: &JobSpec,
    files: &[String],
    name: &'static str,
    parse: F,
) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(&str, &[u8]) -> Result<Vec<T>, data::DataError> + Clone + Send + 'static,
{
    let mut rows = Vec::new();
    for f in files {
        let bytes = fetch_data_file(ctx, job, f).await?;
        let (file, parse) = (f.clone(), parse.clone());
        let parsed = tokio::task::spawn_blocking(move || parse(&file, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        rows.extend(parsed);
        if rows.len() > data::MAX_ROWS {
            return Err(data::DataError::TooManyRows(name).to_string());
        }
    }
    Ok(rows)
}

/// Both splits, read with `parse`.
async fn read_splits<T, F>(
    ctx: &RunnerContext,
    job: &JobSpec,
    parse: F,
) -> Result<(Vec<T>, Vec<T>), String>
where
    T: Send + 'static,
    F: Fn(&str, &[u8]) -> Result<Vec<T>, data::DataError> + Clone + Send + 'static,
{
    let train = read_split(ctx, job, &job.train_files, "train", parse.clone())
        .await
        .map_err(|e| format!("reading the train split failed: {e}"))?;
    let test = read_split(ctx, job, &job.test_files, "test", parse)
        .await
        .map_err(|e| format!("reading the test split failed: {e}"))?;
    Ok((train, test))
}

/// The outcome of a run, before it is reported.
enum Ended {
    Done(Vec<String>, Map<String, Value>),
    Failed(String),
    Stopped(StopReason, String),
}

async fn run_job(
    ctx: &RunnerContext,
    job: JobSpec,
    reg: &Registration,
    cancel: &CancellationToken,
) {
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(job.max_wall_seconds);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let out_dir = ctx.work_dir.join(&job.job_id);
    let _ = tokio::fs::remove_dir_all(&out_dir).await;
    let stop_reporting = CancellationToken::new();
    let reporter = {
        let stop = stop_reporting.clone();
        let shared = shared.clone();
        let job = job.clone();
        let ctx_ptr: &RunnerContext = ctx;
        // Reports every 2 s until the run ends (scoped: awaited below).
        async move {
            loop {
                let _ = report(ctx_ptr, &job, reg, &shared, cpu0).await;
                if shared.lock().expect("job state").lost {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let work = async {
        let ended = execute(ctx, &job, &shared, deadline, &out_dir).await;
        stop_reporting.cancel();
        ended
    };
    let (ended, ()) = tokio::select! {
        r = async { tokio::join!(work, reporter) } => r,
        _ = cancel.cancelled() => {
            // The worker is stopping: the lease runs out and the job is claimed again.
            shared.lock().expect("job state").stop.get_or_insert(StopReason::Cancelled);
            return;
        }
    };
    if shared.lock().expect("job state").lost {
        tracing::warn!(job.id = %job.job_id, "the hub no longer knows this claim; dropping the run");
        let _ = tokio::fs::remove_dir_all(&out_dir).await;
        return;
    }
    // Send what is left of the logs first.
    let _ = report(ctx, &job, reg, &shared, cpu0).await;
    let (metrics, logs) = {
        let mut s = shared.lock().expect("job state");
        (s.metrics.clone(), std::mem::take(&mut s.logs))
    };
    let mut finish = Finish {
        outcome: Outcome::Failed,
        error: None,
        reason: None,
        cpu_seconds: 0.0,
        metrics,
        logs,
        files: vec![],
    };
    match ended {
        Ended::Done(files, metrics) => {
            finish.metrics = metrics;
            match upload(ctx, &job, reg, &out_dir, &files).await {
                Ok(()) => {
                    finish.outcome = Outcome::Succeeded;
                    finish.files = files;
                }
                Err(e) => finish.error = Some(format!("uploading the result failed: {e}")),
            }
        }
        Ended::Failed(e) => finish.error = Some(e),
        Ended::Stopped(r, msg) => {
            finish.outcome = Outcome::Stopped;
            finish.reason = Some(r);
            finish.error = Some(msg);
        }
    }
    finish.cpu_seconds = process_cpu_seconds() - cpu0;
    let req = for_claim(
        ctx.client.http.post(job_url(ctx, &job, "finish")),
        &job,
        reg,
    )
    .json(&finish);
    match ctx
        .client
        .call::<FinishAnswer>(req, Duration::from_secs(600))
        .await
    {
        Ok(a) => {
            tracing::info!(job.id = %job.job_id, state = %a.state, commit = ?a.output_commit, "job finished")
        }
        Err(e) => tracing::warn!(job.id = %job.job_id, error = %e, "finishing the job failed"),
    }
    let _ = tokio::fs::remove_dir_all(&out_dir).await;
}

async fn execute(
    ctx: &RunnerContext,
    job: &JobSpec,
    shared: &Arc<Mutex<Shared>>,
    deadline: Instant,
    out_dir: &std::path::Path,
) -> Ended {
    let mut ctl = SharedControl(shared.clone());
    if let Err(e) = job.hyperparameters.check() {
        return Ended::Failed(e.to_string());
    }
    if job.task == JobTask::CausalLmLora {
        if let Err(e) = check_lora_base(ctx, job).await {
            return Ended::Failed(e);
        }
    }
    ctl.log(format!(
        "pulling {}@{}",
        job.base.repo_id,
        &job.base.revision[..job.base.revision.len().min(12)]
    ));
    let base = PullRequest {
        repo_id: job.base.repo_id.clone(),
        revision: job.base.revision.clone(),
        token: job.base.pull_token.clone(),
        on_download: None,
    };
    let pulled = tokio::select! {
        r = ctx.puller.pull(&base, None) => r,
        _ = tokio::time::sleep_until(deadline.into()) => {
            return Ended::Stopped(StopReason::WallTime, TrainError::WallTime(job.max_wall_seconds).to_string());
        }
    };
    let pulled = match pulled {
        Ok(p) => p,
        Err(e) => return Ended::Failed(format!("pulling the base model failed: {e}")),
    };
    let inspect = || {
        crate::engine::spec::inspect(&pulled.dir)
            .map_err(|e| format!("the base model cannot be trained: {e}"))
    };
    ctl.log(format!(
        "reading {} ({})",
        job.dataset.repo_id,
        job.train_files.join(", ")
    ));
    let hp = job.hyperparameters.clone();
    let job2 = job.clone();
    let out = out_dir.to_path_buf();
    let result = match job.task {
        JobTask::TextClassification => {
            let (text, label) = (hp.text_column.clone(), hp.label_column.clone());
            let parse = move |f: &str, b: &[u8]| data::parse(f, b, &text, &label);
            let (train, test) = match read_splits(ctx, job, parse).await {
                Ok(r) => r,
                Err(e) => return Ended::Failed(e),
            };
            let spec = match inspect() {
                Ok(s) => s,
                Err(e) => return Ended::Failed(e),
            };
            tokio::task::spawn_blocking(move || {
                let input = TrainInput {
                    base: &spec,
                    train,
                    test,
                    hp: &job2.hyperparameters,
                    deadline,
                    max_wall_seconds: job2.max_wall_seconds,
                };
                with_card(&job2, &out, train::run(input, &mut ctl, &out))
            })
            .await
        }
        JobTask::SentenceEmbedding => {
            let (anchor, positive) = (hp.anchor().to_string(), hp.positive().to_string());
            let parse = move |f: &str, b: &[u8]| data::parse_pairs(f, b, &anchor, &positive);
            let (train, test) = match read_splits(ctx, job, parse).await {
                Ok(r) => r,
                Err(e) => return Ended::Failed(e),
            };
            let spec = match inspect() {
                Ok(s) => s,
                Err(e) => return Ended::Failed(e),
            };
            tokio::task::spawn_blocking(move || {
                let input = PairInput {
                    base: &spec,
                    train,
                    test,
                    hp: &job2.hyperparameters,
                    deadline,
                    max_wall_seconds: job2.max_wall_seconds,
                };
                with_card(&job2, &out, embed::run(input, &mut ctl, &out))
            })
            .await
        }
        JobTask::CausalLmLora => {
            let text = hp.text_column.clone();
            let parse = move |f: &str, b: &[u8]| data::parse_sft(f, b, &text);
            let (train, test) = match read_splits(ctx, job, parse).await {
                Ok(r) => r,
                Err(e) => return Ended::Failed(e),
            };
            let dir = pulled.dir.clone();
            tokio::task::spawn_blocking(move || {
                let input = LoraInput {
                    base_dir: &dir,
                    base_repo: &job2.base.repo_id,
                    base_revision: &job2.base.revision,
                    train,
                    test,
                    hp: &job2.hyperparameters,
                    deadline,
                    max_wall_seconds: job2.max_wall_seconds,
                };
                with_card(&job2, &out, lora::run(input, &mut ctl, &out))
            })
            .await
        }
    };
    match result {
        Ok(Ok(o)) => {
            let mut files = o.files;
            files.push("README.md".into());
            Ended::Done(files, o.metrics)
        }
        Ok(Err(TrainError::Stopped(r))) => Ended::Stopped(r, stop_message(r, job)),
        Ok(Err(e @ TrainError::WallTime(_))) => Ended::Stopped(StopReason::WallTime, e.to_string()),
        Ok(Err(e)) => Ended::Failed(e.to_string()),
        Err(e) => Ended::Failed(format!("the training thread failed: {e}")),
    }
}

/// Writes the model card next to a run's result.
fn with_card(
    job: &JobSpec,
    out: &std::path::Path,
    r: Result<TrainOutput, TrainError>,
) -> Result<TrainOutput, TrainError> {
    let o = r?;
    let text = card::render(job, &o.labels, &o.metrics);
    std::fs::write(out.join("README.md"), text)?;
    Ok(o)
}

fn stop_message(r: StopReason, job: &JobSpec) -> String {
    match r {
        StopReason::Cancelled => "cancelled".into(),
        StopReason::WallTime => TrainError::WallTime(job.max_wall_seconds).to_string(),
        StopReason::Quota => "the namespace's daily fine-tuning CPU quota is spent".into(),
    }
}

async fn upload(
    ctx: &RunnerContext,
    job: &JobSpec,
    reg: &Registration,
    dir: &std::path::Path,
    files: &[String],
) -> Result<(), String> {
    for f in files {
        let bytes = tokio::fs::read(dir.join(f))
            .await
            .map_err(|e| format!("{f}: {e}"))?;
        let req = for_claim(ctx.client.http.put(job_url(ctx, job, "files")), job, reg)
            .query(&[("path", f)])
            .body(bytes);
        ctx.client
            .call::<Value>(req, Duration::from_secs(600))
            .await
            .map_err(|e| format!("{f}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::wire::RegisterResponse;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request the fake hub received.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    /// A hub that answers every request with `answer(method, path)` (a JSON
    /// body, 200) and records what it was sent; one request per connection.
    async fn fake_hub(answer: fn(&str, &str) -> String) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let n = sock.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap().split(' ');
                    let (method, path) = (
                        first.next().unwrap().to_string(),
                        first.next().unwrap().to_string(),
                    );
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                        .collect();
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let n = sock.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = answer(&method, &path);
                    log.lock().unwrap().push(Seen {
                        method,
                        path,
                        headers,
                        body: buf[head_end..].to_vec(),
                    });
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    fn spec() -> JobSpec {
        let pull = |repo: &str| hub_types::jobs::RepoPull {
            repo_id: repo.into(),
            revision: "0".repeat(40),
            pull_token: "pull".into(),
        };
        JobSpec {
            job_id: "11111111-1111-1111-1111-111111111111".into(),
            claim: "22222222-2222-2222-2222-222222222222".into(),
            task: JobTask::TextClassification,
            base: pull("acme/base"),
            dataset: pull("acme/data"),
            train_files: vec!["train.csv".into()],
            test_files: vec!["test.csv".into()],
            hyperparameters: Default::default(),
            output_repo: "acme/out".into(),
            max_wall_seconds: 60,
            lease_seconds: 60,
        }
    }

    fn answer(_: &str, path: &str) -> String {
        if path.ends_with("/claim") {
            serde_json::json!({ "job": spec() }).to_string()
        } else if path.ends_with("/progress") {
            r#"{"stop":null}"#.into()
        } else {
            "{}".into()
        }
    }

    /// The runner claims only in the name of its worker's registration, and
    /// every call of the claim carries that registration's secret (the one it
    /// claimed with, even after the worker registered again).
    #[tokio::test]
    async fn claims_and_reports_carry_the_registration_that_claimed() {
        let (hub, seen) = fake_hub(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::pull::cache::BlobCache::open(dir.path()).unwrap();
        let ctx = RunnerContext {
            client: Arc::new(Client::new(&hub, "worker-token", None).unwrap()),
            puller: Puller::new(cache, &hub),
            name: "runner-test".into(),
            registration: Default::default(),
            work_dir: dir.path().join("jobs"),
            poll: Duration::from_millis(10),
        };
        // Not registered yet: nothing is claimed, the hub is not asked.
        assert!(claim(&ctx).await.unwrap().is_none());
        assert!(seen.lock().unwrap().is_empty());

        let published = ctx.registration.publish(&RegisterResponse {
            worker_id: "w-1".into(),
            heartbeat_interval_s: 2,
            gateway_secret: "secret-1".into(),
        });
        let (job, reg) = claim(&ctx).await.unwrap().expect("a job");
        assert_eq!(job, spec());
        assert_eq!(reg.worker_id, "w-1");
        {
            let seen = seen.lock().unwrap();
            let c = &seen[0];
            assert_eq!(
                (c.method.as_str(), c.path.as_str()),
                ("POST", "/api/v1/job-runner/claim")
            );
            assert_eq!(c.headers["x-paddock-worker-secret"], "secret-1");
            let body: Value = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(body["worker_id"], "w-1");
            assert_eq!(body["runner"], "runner-test");
        }
        // Registered again meanwhile: the job's calls keep the secret it was claimed with.
        let republished = ctx.registration.publish(&RegisterResponse {
            worker_id: "w-2".into(),
            heartbeat_interval_s: 2,
            gateway_secret: "secret-2".into(),
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        report(&ctx, &job, &reg, &shared, 0.0).await.unwrap();
        let files = dir.path().join("out");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("README.md"), b"# result").unwrap();
        upload(&ctx, &job, &reg, &files, &["README.md".to_string()])
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        for (i, tail) in [(1, "/progress"), (2, "/files?path=README.md")] {
            let s = &seen[i];
            assert!(s.path.ends_with(tail), "{}", s.path);
            assert_eq!(s.headers["x-paddock-worker-secret"], "secret-1");
            assert_eq!(s.headers["x-job-claim"], job.claim);
        }
        drop(seen);
        // The first publication is stale: dropping it keeps the newer one.
        drop(published);
        assert_eq!(ctx.registration.current().unwrap().worker_id, "w-2");
        drop(republished);
        assert!(ctx.registration.current().is_none());
    }
}
