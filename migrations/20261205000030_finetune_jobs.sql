-- Fine-tuning jobs (issue 16): a base model and a dataset, each pinned to a
-- commit when the job is created, trained by a worker into a new commit of an
-- output model repo. Workers claim queued jobs with FOR UPDATE SKIP LOCKED
-- and a lease (`claim` names the claim, `leased_until` ends it unless a
-- progress report renews it); a job whose lease ran out is queued again, up
-- to three claims. `cpu_seconds` meters the job (what the worker reports);
-- a namespace's `daily_job_cpu_seconds` quota bounds the sum per UTC day.
CREATE TABLE finetune_jobs (
    id               UUID PRIMARY KEY,
    namespace_id     BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    created_by       BIGINT REFERENCES namespaces(id) ON DELETE SET NULL,
    task             TEXT NOT NULL,
    base_repo_id     BIGINT REFERENCES repos(id) ON DELETE SET NULL,
    base_model       TEXT NOT NULL,
    base_revision    TEXT NOT NULL,
    dataset_repo_id  BIGINT REFERENCES repos(id) ON DELETE SET NULL,
    dataset          TEXT NOT NULL,
    dataset_revision TEXT NOT NULL,
    train_files      TEXT[] NOT NULL,
    test_files       TEXT[] NOT NULL,
    hyperparameters  JSONB NOT NULL,
    output_repo_id   BIGINT REFERENCES repos(id) ON DELETE SET NULL,
    output_repo      TEXT NOT NULL,
    max_wall_seconds INTEGER NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    attempts         INTEGER NOT NULL DEFAULT 0,
    claim            UUID,
    runner           TEXT,
    leased_until     TIMESTAMPTZ,
    step             BIGINT NOT NULL DEFAULT 0,
    total_steps      BIGINT NOT NULL DEFAULT 0,
    metrics          JSONB NOT NULL DEFAULT '{}'::jsonb,
    cpu_seconds      DOUBLE PRECISION NOT NULL DEFAULT 0,
    error            TEXT,
    output_commit    TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX finetune_jobs_ns ON finetune_jobs (namespace_id, created_at DESC, id);
CREATE INDEX finetune_jobs_due ON finetune_jobs (created_at) WHERE state IN ('queued', 'running');

-- A job's log, in order (bounded per job by the hub).
CREATE TABLE finetune_job_logs (
    job_id  UUID NOT NULL REFERENCES finetune_jobs(id) ON DELETE CASCADE,
    seq     BIGSERIAL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    line    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- The result files a worker uploaded for its claim, stored as pending objects
-- of the namespace (`sweeper::store`) until the finishing commit claims them.
CREATE TABLE finetune_job_files (
    job_id     UUID NOT NULL REFERENCES finetune_jobs(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    claim      UUID NOT NULL,
    pending_id BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    git_oid    TEXT NOT NULL,
    is_binary  BOOLEAN NOT NULL,
    -- Kept for the files the commit interprets (README.md, config.json).
    content    BYTEA,
    PRIMARY KEY (job_id, path)
);

ALTER TABLE namespace_quotas ADD COLUMN daily_job_cpu_seconds BIGINT;
