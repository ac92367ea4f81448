//! Inference endpoints, their replicas, the workers that run them, events and usage.

use crate::usage_rollup::{quantile_ms, UsageBatch};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: i64,
    pub namespace_id: i64,
    pub namespace: String,
    pub name: String,
    pub repo_id: Option<i64>,
    pub repo_type: String,
    pub repository: String,
    pub revision: String,
    pub commit_oid: String,
    pub task: String,
    pub precision: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub scale_to_zero_after_s: Option<i32>,
    pub access: String,
    pub paused: bool,
    pub target_replicas: i32,
    pub status: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_request_at: Option<DateTime<Utc>>,
    pub wake_requested_at: Option<DateTime<Utc>>,
}

const EP_COLS: &str = "e.id, e.namespace_id, n.name AS namespace, e.name, e.repo_id, e.repo_type, e.repository, e.revision, e.commit_oid, e.task, e.precision, e.min_replicas, e.max_replicas, e.scale_to_zero_after_s, e.access, e.paused, e.target_replicas, e.status, e.message, e.created_at, e.updated_at, e.last_request_at, e.wake_requested_at";

/// Fields of a new endpoint.
pub struct NewEndpoint<'a> {
    pub namespace_id: i64,
    pub name: &'a str,
    pub repo_id: i64,
    pub repo_type: &'a str,
    pub repository: &'a str,
    pub revision: &'a str,
    pub commit_oid: &'a str,
    pub task: &'a str,
    pub precision: &'a str,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub scale_to_zero_after_s: Option<i32>,
    pub access: &'a str,
    pub created_by: i64,
}

pub async fn insert(db: &mut PgConnection, e: &NewEndpoint<'_>) -> sqlx::Result<Option<i64>> {
    let r: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO endpoints (namespace_id, name, repo_id, repo_type, repository, revision, commit_oid, task,
            min_replicas, max_replicas, scale_to_zero_after_s, access, created_by, target_replicas, precision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, GREATEST($9, 1), $14)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(e.namespace_id)
    .bind(e.name)
    .bind(e.repo_id)
    .bind(e.repo_type)
    .bind(e.repository)
    .bind(e.revision)
    .bind(e.commit_oid)
    .bind(e.task)
    .bind(e.min_replicas)
    .bind(e.max_replicas)
    .bind(e.scale_to_zero_after_s)
    .bind(e.access)
    .bind(e.created_by)
    .bind(e.precision)
    .fetch_optional(&mut *db)
    .await?;
    if let Some((id,)) = r {
        event(&mut *db, id, "pending", Some("created")).await?;
        return Ok(Some(id));
    }
    Ok(None)
}

pub async fn get(
    db: impl PgExecutor<'_>,
    namespace: &str,
    name: &str,
) -> sqlx::Result<Option<EndpointRow>> {
    sqlx::query_as(&format!(
        "SELECT {EP_COLS} FROM endpoints e JOIN namespaces n ON n.id = e.namespace_id
         WHERE lower(n.name) = lower($1) AND lower(e.name) = lower($2)"
    ))
    .bind(namespace)
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<EndpointRow>> {
    sqlx::query_as(&format!(
        "SELECT {EP_COLS} FROM endpoints e JOIN namespaces n ON n.id = e.namespace_id WHERE e.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn list(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    after: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<EndpointRow>> {
    sqlx::query_as(&format!(
        "SELECT {EP_COLS} FROM endpoints e JOIN namespaces n ON n.id = e.namespace_id
         WHERE e.namespace_id = $1 AND ($2::bigint IS NULL OR e.id > $2) ORDER BY e.id LIMIT $3"
    ))
    .bind(namespace_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn all(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<EndpointRow>> {
    sqlx::query_as(&format!(
        "SELECT {EP_COLS} FROM endpoints e JOIN namespaces n ON n.id = e.namespace_id ORDER BY e.id"
    ))
    .fetch_all(db)
    .await
}

pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM endpoints WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Records a status change (and the event), if it is a change.
pub async fn set_status(
    db: &mut PgConnection,
    id: i64,
    status: &str,
    message: Option<&str>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE endpoints SET status = $2, message = $3, updated_at = now()
         WHERE id = $1 AND (status <> $2 OR message IS DISTINCT FROM $3)",
    )
    .bind(id)
    .bind(status)
    .bind(message)
    .execute(&mut *db)
    .await?;
    if r.rows_affected() > 0 {
        event(&mut *db, id, status, message).await?;
        crate::webhooks::enqueue(
            db,
            crate::webhooks::Event::EndpointStatus { endpoint_id: id },
        )
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// [`set_status`] for many endpoints in one statement: (id, status, message)
/// each, recorded (with its event) if it is a change; the webhook events of
/// the changes are queued in the same transaction. Returns how many changed.
pub async fn set_statuses(
    db: &sqlx::PgPool,
    changes: &[(i64, String, Option<String>)],
) -> sqlx::Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
    let statuses: Vec<&str> = changes.iter().map(|c| c.1.as_str()).collect();
    let messages: Vec<Option<&str>> = changes.iter().map(|c| c.2.as_deref()).collect();
    let r = sqlx::query(
        "WITH u AS (
            UPDATE endpoints e SET status = u.status, message = u.message, updated_at = now()
            FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, status, message)
            WHERE e.id = u.id AND (e.status <> u.status OR e.message IS DISTINCT FROM u.message)
            RETURNING e.id, e.status, e.message)
         INSERT INTO endpoint_events (endpoint_id, status, message) SELECT id, status, message FROM u
         RETURNING endpoint_id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&messages);
    let mut tx = db.begin().await?;
    let changed: Vec<i64> = r
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| sqlx::Row::get::<i64, _>(row, 0))
        .collect();
    crate::webhooks::endpoint_statuses(&mut tx, &changed).await?;
    tx.commit().await?;
    Ok(changed.len() as u64)
}

/// Sets the replica count the scheduler aims for, of many endpoints: (id, target) each.
pub async fn set_targets(db: impl PgExecutor<'_>, targets: &[(i64, i32)]) -> sqlx::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = targets.iter().map(|t| t.0).collect();
    let values: Vec<i32> = targets.iter().map(|t| t.1).collect();
    sqlx::query(
        "UPDATE endpoints e SET target_replicas = u.t
         FROM unnest($1::bigint[], $2::int[]) AS u(id, t) WHERE e.id = u.id",
    )
    .bind(&ids)
    .bind(&values)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn event(
    db: impl PgExecutor<'_>,
    id: i64,
    status: &str,
    message: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO endpoint_events (endpoint_id, status, message) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(status)
        .bind(message)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub status: String,
    pub message: Option<String>,
}

pub async fn events(db: impl PgExecutor<'_>, id: i64, limit: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as("SELECT at, status, message FROM endpoint_events WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2")
        .bind(id)
        .bind(limit)
        .fetch_all(db)
        .await
}

pub async fn touch_requests(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE endpoints SET last_request_at = now() WHERE id = ANY($1)
         AND (last_request_at IS NULL OR last_request_at < now() - interval '1 second')",
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a wake request and NOTIFYs the scheduler (`scheduler::WAKE_CHANNEL`),
/// which places a replica at once rather than at its next tick.
pub async fn request_wake(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "WITH w AS (UPDATE endpoints SET wake_requested_at = now(), last_request_at = now() \
         WHERE id = $1 RETURNING id) SELECT pg_notify($2, id::text) FROM w",
    )
    .bind(id)
    .bind(crate::scheduler::WAKE_CHANNEL)
    .execute(db)
    .await?;
    Ok(())
}

// ---- workers ----

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub gateway_secret: String,
    pub memory_bytes: i64,
    pub free_memory_bytes: i64,
    pub cores: i32,
    pub last_heartbeat: DateTime<Utc>,
    pub assign_version: i64,
    /// What its model cache could give a new download (its last heartbeat's
    /// `cache_room_bytes`); None: not reported.
    pub cache_room_bytes: Option<i64>,
}

const W_COLS: &str = "id, name, url, gateway_secret, memory_bytes, free_memory_bytes, cores, last_heartbeat, assign_version, cache_room_bytes";

pub async fn insert_worker(
    db: impl PgExecutor<'_>,
    w: &WorkerRow,
    version: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workers (id, name, url, gateway_secret, memory_bytes, free_memory_bytes, cores, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(w.id)
    .bind(&w.name)
    .bind(&w.url)
    .bind(&w.gateway_secret)
    .bind(w.memory_bytes)
    .bind(w.free_memory_bytes)
    .bind(w.cores)
    .bind(version)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn worker(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<WorkerRow>> {
    sqlx::query_as(&format!("SELECT {W_COLS} FROM workers WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn workers(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as(&format!(
        "SELECT {W_COLS} FROM workers ORDER BY registered_at"
    ))
    .fetch_all(db)
    .await
}

pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    id: Uuid,
    free_memory: i64,
    cache_room: Option<i64>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE workers SET last_heartbeat = now(), free_memory_bytes = $2, cache_room_bytes = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(free_memory)
    .bind(cache_room)
    .execute(db)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Removes workers whose heartbeat is older than `secs`; returns how many.
pub async fn remove_lost_workers(db: impl PgExecutor<'_>, secs: f64) -> sqlx::Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "DELETE FROM workers WHERE last_heartbeat < now() - make_interval(secs => $1) RETURNING id",
    )
    .bind(secs)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Moves a worker's `assign_version` and NOTIFYs its long-poll
/// (`scheduler::ASSIGNMENTS_CHANNEL`; delivered when the transaction commits).
pub async fn bump_assign_version(db: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "WITH b AS (UPDATE workers SET assign_version = assign_version + 1 WHERE id = $1 \
         RETURNING id) SELECT pg_notify($2, id::text) FROM b",
    )
    .bind(worker)
    .bind(crate::scheduler::ASSIGNMENTS_CHANNEL)
    .execute(db)
    .await?;
    Ok(())
}

// ---- replicas ----

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReplicaRow {
    pub id: Uuid,
    pub endpoint_id: i64,
    pub worker_id: Uuid,
    pub worker_name: String,
    pub status: String,
    pub message: Option<String>,
    pub in_flight: i32,
    pub queue_depth: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const R_COLS: &str =
    "r.id, r.endpoint_id, r.worker_id, w.name AS worker_name, r.status, r.message, r.in_flight, r.queue_depth, r.created_at, r.updated_at";

pub async fn replicas_of(
    db: impl PgExecutor<'_>,
    endpoint_id: i64,
) -> sqlx::Result<Vec<ReplicaRow>> {
    sqlx::query_as(&format!(
        "SELECT {R_COLS} FROM replicas r JOIN workers w ON w.id = r.worker_id WHERE r.endpoint_id = $1 ORDER BY r.created_at"
    ))
    .bind(endpoint_id)
    .fetch_all(db)
    .await
}

pub async fn all_replicas(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ReplicaRow>> {
    sqlx::query_as(&format!(
        "SELECT {R_COLS} FROM replicas r JOIN workers w ON w.id = r.worker_id ORDER BY r.created_at"
    ))
    .fetch_all(db)
    .await
}

/// The running replicas of an endpoint with their worker's address and secret.
pub async fn routable(
    db: impl PgExecutor<'_>,
    endpoint_id: i64,
) -> sqlx::Result<Vec<(Uuid, String, String, i32)>> {
    sqlx::query_as(
        "SELECT r.id, w.url, w.gateway_secret, r.in_flight FROM replicas r JOIN workers w ON w.id = r.worker_id
         WHERE r.endpoint_id = $1 AND r.status = 'running' AND w.last_heartbeat > now() - interval '10 seconds'",
    )
    .bind(endpoint_id)
    .fetch_all(db)
    .await
}

pub async fn insert_replica(
    db: &mut PgConnection,
    endpoint_id: i64,
    worker: Uuid,
) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO replicas (id, endpoint_id, worker_id) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(endpoint_id)
        .bind(worker)
        .execute(&mut *db)
        .await?;
    bump_assign_version(&mut *db, worker).await?;
    Ok(id)
}

/// Inserts many replicas, (id, endpoint, worker) each, in that order (each a
/// later `created_at` than the one before), skipping those whose endpoint or
/// worker is gone; moves each worker's `assign_version` once (with
/// [`delete_replicas`], use [`bump_assign_versions`] once for both).
pub async fn insert_replicas(
    db: &mut PgConnection,
    replicas: &[(Uuid, i64, Uuid)],
) -> sqlx::Result<()> {
    if replicas.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = replicas.iter().map(|r| r.0).collect();
    let endpoints: Vec<i64> = replicas.iter().map(|r| r.1).collect();
    let workers: Vec<Uuid> = replicas.iter().map(|r| r.2).collect();
    sqlx::query(
        "INSERT INTO replicas (id, endpoint_id, worker_id, created_at)
         SELECT u.id, u.e, u.w, clock_timestamp()
         FROM unnest($1::uuid[], $2::bigint[], $3::uuid[]) WITH ORDINALITY AS u(id, e, w, n)
         WHERE EXISTS (SELECT 1 FROM endpoints x WHERE x.id = u.e)
           AND EXISTS (SELECT 1 FROM workers x WHERE x.id = u.w)
         ORDER BY u.n",
    )
    .bind(&ids)
    .bind(&endpoints)
    .bind(&workers)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Deletes many replicas (by id); see [`insert_replicas`].
pub async fn delete_replicas(db: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM replicas WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// [`bump_assign_version`] of many workers in one statement.
pub async fn bump_assign_versions(db: impl PgExecutor<'_>, workers: &[Uuid]) -> sqlx::Result<()> {
    if workers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH b AS (UPDATE workers SET assign_version = assign_version + 1 WHERE id = ANY($1) \
         RETURNING id) SELECT pg_notify($2, id::text) FROM b",
    )
    .bind(workers)
    .bind(crate::scheduler::ASSIGNMENTS_CHANNEL)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete_replica(db: &mut PgConnection, id: Uuid, worker: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(id)
        .execute(&mut *db)
        .await?;
    bump_assign_version(&mut *db, worker).await?;
    Ok(())
}

/// Records a worker's report on one of its replicas. A replica that becomes
/// `running` NOTIFYs `signals::READY_CHANNEL` (payload its endpoint id), which
/// answers gateway requests held for the endpoint on every hub replica.
pub async fn update_replica(
    db: impl PgExecutor<'_>,
    id: Uuid,
    worker: Uuid,
    status: &str,
    message: Option<&str>,
    in_flight: i32,
    queue_depth: i32,
) -> sqlx::Result<()> {
    // Both parts see the row as it was before the statement: `old` is the
    // status the report replaces.
    sqlx::query(
        "WITH old AS (SELECT status FROM replicas WHERE id = $1 AND worker_id = $2),
         u AS (UPDATE replicas SET status = $3, message = $4, in_flight = $5, queue_depth = $6, updated_at = now()
               WHERE id = $1 AND worker_id = $2 RETURNING endpoint_id, status)
         SELECT pg_notify($7, u.endpoint_id::text) FROM u, old
          WHERE u.status = 'running' AND old.status <> 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(status)
    .bind(message)
    .bind(in_flight)
    .bind(queue_depth)
    .bind(crate::signals::READY_CHANNEL)
    .execute(db)
    .await?;
    Ok(())
}

/// What a worker should run: (replica id, endpoint row).
pub async fn assignments(db: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<Vec<(Uuid, i64)>> {
    sqlx::query_as("SELECT id, endpoint_id FROM replicas WHERE worker_id = $1 ORDER BY created_at")
        .bind(worker)
        .fetch_all(db)
        .await
}

// ---- usage ----

/// Writes one flush's rows (see [`crate::usage_rollup`]) in one statement.
/// Idempotent: a batch retried after an INSERT whose outcome was not known
/// (same `flush_id`) adds nothing.
pub async fn insert_usage(db: impl PgExecutor<'_>, batch: &UsageBatch) -> sqlx::Result<()> {
    let rows = &batch.rows;
    if rows.is_empty() {
        return Ok(());
    }
    let seq: Vec<i32> = (0..rows.len() as i32).collect();
    let ns: Vec<i64> = rows.iter().map(|u| u.namespace_id).collect();
    let ep: Vec<i64> = rows.iter().map(|u| u.endpoint_id).collect();
    let names: Vec<&str> = rows.iter().map(|u| u.endpoint_name.as_str()).collect();
    let tok: Vec<Option<i64>> = rows.iter().map(|u| u.token_id).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|u| u.at).collect();
    let st: Vec<i32> = rows.iter().map(|u| u.status).collect();
    let n: Vec<i32> = rows.iter().map(|u| u.requests).collect();
    let it: Vec<i64> = rows.iter().map(|u| u.input_tokens).collect();
    let ot: Vec<i64> = rows.iter().map(|u| u.output_tokens).collect();
    // The histograms differ in length, which a 2-D array cannot hold: each goes
    // as an array literal, cast per row.
    let literal = |f: &dyn Fn(&(i16, i32)) -> String, h: &[(i16, i32)]| {
        format!("{{{}}}", h.iter().map(f).collect::<Vec<_>>().join(","))
    };
    let lb: Vec<String> = rows
        .iter()
        .map(|u| literal(&|h| h.0.to_string(), &u.latency))
        .collect();
    let lc: Vec<String> = rows
        .iter()
        .map(|u| literal(&|h| h.1.to_string(), &u.latency))
        .collect();
    sqlx::query(
        "INSERT INTO usage_counts (flush_id, seq, namespace_id, endpoint_id, endpoint_name, token_id, at, status,
                                   requests, input_tokens, output_tokens, latency_buckets, latency_counts)
         SELECT $1, s, n, e, name, t, at, st, r, i, o, lb::smallint[], lc::int[]
         FROM UNNEST($2::int[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::timestamptz[], $8::int[],
                     $9::int[], $10::bigint[], $11::bigint[], $12::text[], $13::text[])
              AS u(s, n, e, name, t, at, st, r, i, o, lb, lc)
         ON CONFLICT (flush_id, seq) DO NOTHING",
    )
    .bind(batch.flush_id)
    .bind(&seq)
    .bind(&ns)
    .bind(&ep)
    .bind(&names)
    .bind(&tok)
    .bind(&at)
    .bind(&st)
    .bind(&n)
    .bind(&it)
    .bind(&ot)
    .bind(&lb)
    .bind(&lc)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UsageRow {
    pub endpoint: String,
    pub day: chrono::NaiveDate,
    pub requests: i64,
    pub errors: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Read from the latency histograms: within 4.4% of the exact value
    /// (`usage_rollup::BUCKETS_PER_DOUBLING`).
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
}

/// A namespace's usage per endpoint and UTC day, calls that finished in
/// `[from, to)` (to the second). One statement, so the counts and the
/// histograms come from the same snapshot.
pub async fn usage(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<UsageRow>> {
    type Raw = (
        String,
        chrono::NaiveDate,
        i64,
        i64,
        i64,
        i64,
        Vec<i16>,
        Vec<i64>,
    );
    let raw: Vec<Raw> = sqlx::query_as(
        "WITH picked AS (
             SELECT endpoint_name, (at AT TIME ZONE 'UTC')::date AS day, status, requests, input_tokens,
                    output_tokens, latency_buckets, latency_counts
             FROM usage_counts WHERE namespace_id = $1 AND at >= $2 AND at < $3
         ), totals AS (
             SELECT endpoint_name, day, sum(requests)::bigint AS requests,
                    COALESCE(sum(requests) FILTER (WHERE status >= 400), 0)::bigint AS errors,
                    sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens
             FROM picked GROUP BY 1, 2
         ), hist AS (
             SELECT endpoint_name, day, h.b, sum(h.c)::bigint AS calls
             FROM picked, unnest(latency_buckets, latency_counts) AS h(b, c) GROUP BY 1, 2, 3
         )
         SELECT t.endpoint_name, t.day, t.requests, t.errors, t.input_tokens, t.output_tokens,
                array_agg(h.b ORDER BY h.b), array_agg(h.calls ORDER BY h.b)
         FROM totals t JOIN hist h USING (endpoint_name, day)
         GROUP BY t.endpoint_name, t.day, t.requests, t.errors, t.input_tokens, t.output_tokens
         ORDER BY t.day, t.endpoint_name",
    )
    .bind(namespace_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    Ok(raw
        .into_iter()
        .map(
            |(endpoint, day, requests, errors, input_tokens, output_tokens, b, c)| {
                let hist: Vec<(i16, i64)> = b.into_iter().zip(c).collect();
                UsageRow {
                    endpoint,
                    day,
                    requests,
                    errors,
                    input_tokens,
                    output_tokens,
                    latency_p50_ms: quantile_ms(&hist, 0.5),
                    latency_p95_ms: quantile_ms(&hist, 0.95),
                    latency_p99_ms: quantile_ms(&hist, 0.99),
                }
            },
        )
        .collect())
}

/// Prompt plus completion tokens a namespace's endpoints served since `since` (the
/// daily token quota's count; `usage_ns_at` serves it).
pub async fn tokens_since(
    db: impl PgExecutor<'_>,
    namespace_id: i64,
    since: DateTime<Utc>,
) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(sum(input_tokens::bigint + output_tokens::bigint), 0)::bigint
         FROM usage_counts WHERE namespace_id = $1 AND at >= $2",
    )
    .bind(namespace_id)
    .bind(since)
    .fetch_one(db)
    .await?;
    Ok(n)
}
