//! The conversion jobs (`viewer_jobs`): queued by [`enqueue`] in the
//! transaction of a commit to a dataset's default branch (or on demand),
//! run one at a time per replica by [`spawn`]'s task (or [`run_pending`] in
//! tests). A job is claimed with `FOR UPDATE SKIP LOCKED` and a lease the
//! running job renews; a replica that dies leaves it due again when the
//! lease ends. A failure to read or write storage sends the job back to
//! `pending` (retried after [`RETRY`], given up after [`MAX_ATTEMPTS`]); a
//! file the readers refuse ends it in `error` with the reason.

use super::convert::{self, ChannelReader, Failure};
use super::discover::{self, DataFile, Format};
use super::{features, ConfigManifest, Location, Manifest, Shard, SplitManifest};
use crate::db;
use crate::domain::Sha256;
use crate::state::AppState;
use crate::storage::StorageKey;
use futures::StreamExt;
use sqlx::PgConnection;
use std::time::Duration;

/// The NOTIFY channel [`enqueue`] wakes the job runners on.
pub const WAKE_CHANNEL: &str = "paddock_viewer";
/// How long a claim holds a job; a running job renews it every third of it.
pub const LEASE: Duration = Duration::from_secs(120);
/// Wait before a job whose storage read failed is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// Attempts before a job is given up.
pub const MAX_ATTEMPTS: i32 = 5;
/// How often an idle runner looks for jobs.
const POLL: Duration = Duration::from_secs(2);

/// Queues the conversion of a dataset's commit (nothing for models, or when
/// the job exists). Runs in the caller's transaction; wakes the runners at
/// commit.
pub async fn enqueue(db: &mut PgConnection, repo_id: i64, commit: &str) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO viewer_jobs (repo_id, commit_oid)
         SELECT id, $2 FROM repos WHERE id = $1 AND repo_type = 'dataset'
         ON CONFLICT DO NOTHING",
    )
    .bind(repo_id)
    .bind(commit)
    .execute(&mut *db)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(&mut *db)
        .await?;
    Ok(true)
}

/// A job's state as the API reads it.
#[derive(Debug, Clone)]
pub enum Status {
    /// Queued or running.
    Pending,
    Done(super::Manifest),
    /// The "cannot show" reason.
    Failed(String),
}

/// The state of a commit's job; queues one when there is none.
pub async fn status(
    state: &AppState,
    repo_id: i64,
    commit: &str,
) -> crate::error::ApiResult<Status> {
    let row: Option<(String, Option<sqlx::types::Json<Manifest>>, Option<String>)> =
        sqlx::query_as(
            "SELECT state, result, error FROM viewer_jobs WHERE repo_id = $1 AND commit_oid = $2",
        )
        .bind(repo_id)
        .bind(commit)
        .fetch_optional(&state.db)
        .await?;
    Ok(match row {
        None => {
            let mut conn = state.db.acquire().await?;
            enqueue(&mut conn, repo_id, commit).await?;
            Status::Pending
        }
        Some((s, Some(m), _)) if s == "done" => Status::Done(m.0),
        Some((s, _, e)) if s == "error" => {
            Status::Failed(e.unwrap_or_else(|| "the conversion failed".into()))
        }
        Some(_) => Status::Pending,
    })
}

/// Claims the oldest due job, if any.
async fn claim(state: &AppState) -> sqlx::Result<Option<(i64, String, i32)>> {
    sqlx::query_as(
        "UPDATE viewer_jobs j SET state = 'running', attempts = j.attempts + 1,
                leased_until = now() + make_interval(secs => $1)
         WHERE (j.repo_id, j.commit_oid) = (
             SELECT repo_id, commit_oid FROM viewer_jobs
             WHERE state IN ('pending', 'running')
               AND (leased_until IS NULL OR leased_until < now())
             ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING j.repo_id, j.commit_oid, j.attempts",
    )
    .bind(LEASE.as_secs_f64())
    .fetch_optional(&state.db)
    .await
}

/// Runs one due job; false when there was none.
pub async fn run_once(state: &AppState) -> sqlx::Result<bool> {
    let Some((repo_id, commit, attempts)) = claim(state).await? else {
        return Ok(false);
    };
    // Renews the lease while the job runs.
    let renew = {
        let db = state.db.clone();
        let commit = commit.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let _ = sqlx::query(
                    "UPDATE viewer_jobs SET leased_until = now() + make_interval(secs => $3)
                     WHERE repo_id = $1 AND commit_oid = $2 AND state = 'running'",
                )
                .bind(repo_id)
                .bind(&commit)
                .bind(LEASE.as_secs_f64())
                .execute(&db)
                .await;
            }
        })
    };
    let started = std::time::Instant::now();
    let outcome = convert_commit(state, repo_id, &commit).await;
    renew.abort();
    let q = match outcome {
        Ok(m) => {
            tracing::info!(
                repo_id,
                commit,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "viewer: converted"
            );
            sqlx::query(
                "UPDATE viewer_jobs SET state = 'done', result = $3, error = NULL,
                        finished_at = now(), leased_until = NULL
                 WHERE repo_id = $1 AND commit_oid = $2",
            )
            .bind(repo_id)
            .bind(&commit)
            .bind(sqlx::types::Json(m))
        }
        Err(Failure::Data(why)) => {
            tracing::info!(repo_id, commit, reason = %why, "viewer: cannot show");
            sqlx::query(
                "UPDATE viewer_jobs SET state = 'error', error = $3, finished_at = now(), leased_until = NULL
                 WHERE repo_id = $1 AND commit_oid = $2",
            )
            .bind(repo_id)
            .bind(&commit)
            .bind(why)
        }
        Err(Failure::Io(e)) if attempts >= MAX_ATTEMPTS => {
            tracing::warn!(repo_id, commit, error = %e, "viewer: conversion given up");
            sqlx::query(
                "UPDATE viewer_jobs SET state = 'error', error = $3, finished_at = now(), leased_until = NULL
                 WHERE repo_id = $1 AND commit_oid = $2",
            )
            .bind(repo_id)
            .bind(&commit)
            .bind(format!("the conversion failed {attempts} times; last: {e}"))
        }
        Err(Failure::Io(e)) => {
            tracing::warn!(repo_id, commit, error = %e, "viewer: conversion failed; retried later");
            sqlx::query(
                "UPDATE viewer_jobs SET state = 'pending', leased_until = now() + make_interval(secs => $3)
                 WHERE repo_id = $1 AND commit_oid = $2",
            )
            .bind(repo_id)
            .bind(&commit)
            .bind(RETRY.as_secs_f64())
        }
    };
    q.execute(&state.db).await?;
    Ok(true)
}

/// Runs due jobs until none is left (tests; `scripts/bench/viewer.sh` uses the task).
pub async fn run_pending(state: &AppState) -> sqlx::Result<usize> {
    let mut n = 0;
    while run_once(state).await? {
        n += 1;
    }
    Ok(n)
}

/// Starts this replica's job runner: wakes on [`enqueue`]'s NOTIFY and at
/// least every [`POLL`].
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    let bell = crate::signals::Bell::listen(state.db.clone(), WAKE_CHANNEL, "viewer");
    tokio::spawn(async move {
        loop {
            match run_once(&state).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "viewer: claiming a job failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = bell.rung() => {}
            }
        }
    })
}

fn io(e: impl std::fmt::Display) -> Failure {
    Failure::Io(e.to_string())
}

/// The configs and splits of a dataset tree (`discover::plan` over its files
/// and its README's card); `Ok(Err(reason))` when the files make none.
pub async fn plan_tree(
    state: &AppState,
    tree_oid: &str,
) -> crate::error::ApiResult<Result<Vec<discover::ConfigPlan>, String>> {
    let entries = db::git::list_recursive(&state.db, tree_oid, "").await?;
    let mut files = Vec::new();
    let mut readme = None;
    for e in entries {
        let Some(b) = e.blob else { continue };
        if e.path.eq_ignore_ascii_case("README.md") {
            readme = Some((b.sha256.clone(), b.size));
        }
        files.push(DataFile {
            path: e.path,
            sha256: b.sha256,
            size: b.size,
        });
    }
    let card = match readme {
        Some((sha, size)) => crate::registry::files::read_small(state, &sha, size)
            .await?
            .and_then(|b| crate::card::parse_card(&String::from_utf8_lossy(&b)).ok()),
        None => None,
    };
    Ok(discover::plan(card.as_ref(), &files))
}

/// Finds a commit's configs and splits and converts every file.
async fn convert_commit(state: &AppState, repo_id: i64, commit: &str) -> Result<Manifest, Failure> {
    let c = db::git::commit(&state.db, repo_id, commit)
        .await
        .map_err(io)?
        .ok_or_else(|| Failure::Data(format!("commit {commit} not found")))?;
    let plan = plan_tree(state, &c.tree_oid)
        .await
        .map_err(io)?
        .map_err(Failure::Data)?;
    let mut configs = Vec::new();
    for (ci, config) in plan.iter().enumerate() {
        let mut splits = Vec::new();
        for (si, split) in config.splits.iter().enumerate() {
            let mut shards = Vec::new();
            let mut schema: Option<(arrow_schema::SchemaRef, String)> = None;
            let mut original = 0u64;
            for (fi, f) in split.files.iter().enumerate() {
                let (shard, s) = convert_file(state, repo_id, commit, (ci, si, fi), f)
                    .await
                    .map_err(|e| match e {
                        Failure::Data(why) => Failure::Data(format!("{}: {why}", f.path)),
                        other => other,
                    })?;
                match &schema {
                    None => schema = Some((s, f.path.clone())),
                    Some((first, path)) if !convert::same_columns(first, &s) => {
                        return Err(Failure::Data(format!(
                            "{} and {path} are in split {} of config {} but have different columns",
                            f.path, split.name, config.name
                        )))
                    }
                    Some(_) => {}
                }
                original += f.size.max(0) as u64;
                shards.push(shard);
            }
            let (schema, _) = schema.expect("a split has files");
            splits.push(SplitManifest {
                name: split.name.clone(),
                num_rows: shards.iter().map(|s| s.num_rows).sum(),
                num_bytes_original: original,
                num_bytes_parquet: shards.iter().map(|s| s.size).sum(),
                features: features(&schema),
                shards,
            });
        }
        configs.push(ConfigManifest {
            name: config.name.clone(),
            splits,
        });
    }
    Ok(Manifest { configs })
}

/// Converts one file (or inspects a Parquet file in place).
async fn convert_file(
    state: &AppState,
    repo_id: i64,
    commit: &str,
    (ci, si, fi): (usize, usize, usize),
    f: &DataFile,
) -> Result<(Shard, arrow_schema::SchemaRef), Failure> {
    let sha = Sha256::parse(&f.sha256).map_err(io)?;
    let format = Format::of(&f.path).expect("discover keeps data files only");
    if format == Format::Parquet {
        let (schema, rows) =
            super::read::inspect(&state.storage, StorageKey::Blob(sha.clone()), f.size as u64)
                .await
                .map_err(|e| Failure::Data(format!("not a readable Parquet file: {e}")))?;
        return Ok((
            Shard {
                source: f.path.clone(),
                location: Location::Repo {
                    sha256: sha.as_str().to_string(),
                },
                size: f.size as u64,
                num_rows: rows,
            },
            schema,
        ));
    }
    let mut stream = state.storage.read_blob(&sha, None).await.map_err(io)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let pump = tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(|e| e.to_string());
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let dir = state.storage.scratch_dir();
    let size = f.size as u64;
    let converted = tokio::task::spawn_blocking(move || -> Result<_, Failure> {
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = tempfile::Builder::new()
            .prefix("viewer-")
            .suffix(".parquet")
            .tempfile_in(&dir)
            .map_err(io)?;
        let out = tmp.reopen().map_err(io)?;
        let reader = ChannelReader::new(rx);
        let failed = reader.failed.clone();
        let r = convert::convert(format, size, reader, out);
        if let Some(e) = failed.lock().expect("not poisoned").take() {
            return Err(Failure::Io(format!("reading the source: {e}")));
        }
        Ok((r?, tmp.into_temp_path()))
    })
    .await
    .map_err(io)?;
    pump.abort();
    let (c, path) = converted?;
    let key = format!("{repo_id}/{commit}/{ci}-{si}-{fi}.parquet");
    let stored = state
        .storage
        .put_file(&StorageKey::Derived(key.clone()), &path)
        .await
        .map_err(io)?;
    // Moved into place (or uploaded): nothing left to delete.
    let _ = path.keep();
    Ok((
        Shard {
            source: f.path.clone(),
            location: Location::Derived { key },
            size: stored,
            num_rows: c.num_rows,
        },
        c.schema,
    ))
}
