-- A fine-tuning job's claim is bound to the registered worker that made it
-- (`routes::inference::job_runner`): the claim names the worker and proves it
-- with the registration's gateway secret (X-Paddock-Worker-Secret), and every
-- later report of the claim (progress, files, finish) must prove the same
-- secret. The job keeps the worker's id (for display; the row may be gone
-- once the worker is lost) and the SHA-256 of the secret the claim proved, so
-- a worker that registers again (a new id and secret) cannot take over a job
-- another registration holds, and the reports of a claim keep working for its
-- worker whatever happens to the workers row. Jobs claimed before this
-- migration have neither: their reports are refused and their lease lapses,
-- so they are claimed again by a worker that binds its claim.
ALTER TABLE finetune_jobs
    ADD COLUMN worker_id UUID,
    ADD COLUMN worker_secret_sha256 BYTEA;
