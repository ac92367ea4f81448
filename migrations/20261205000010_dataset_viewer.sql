-- The dataset viewer (issue 16): one conversion job per (dataset repo, commit).
-- A commit that moves a dataset's default branch queues one (`db::refs::log`,
-- in the commit's transaction); the viewer API queues one on demand for a
-- revision not yet converted. Replicas claim pending jobs with
-- `FOR UPDATE SKIP LOCKED` and a lease (`viewer::jobs`). `result` is the
-- manifest (configs, splits, features, row counts, the Parquet files in the
-- object store under `viewer/`); `error` the "cannot show" reason.
CREATE TABLE viewer_jobs (
    repo_id      BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    commit_oid   TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'error')),
    attempts     INT NOT NULL DEFAULT 0,
    leased_until TIMESTAMPTZ,
    result       JSONB,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    PRIMARY KEY (repo_id, commit_oid)
);
CREATE INDEX viewer_jobs_due ON viewer_jobs (created_at) WHERE state IN ('pending', 'running');
