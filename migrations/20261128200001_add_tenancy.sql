-- Tenancy: access-request ids and rejection reasons (HF `requestId`), blobs a
-- repo stores inline (so storage quotas count every byte a namespace stores),
-- and per-namespace rate-limit bursts.

ALTER TABLE access_requests ADD COLUMN id BIGSERIAL;
CREATE UNIQUE INDEX access_requests_id ON access_requests (id);
ALTER TABLE access_requests ADD COLUMN rejection_reason TEXT;
ALTER TABLE access_requests ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Every blob a repo's commits stored (inline files too); LFS objects stay in
-- repo_lfs_objects. Usage = distinct sha256 over both.
CREATE TABLE repo_blobs (
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    sha256      TEXT NOT NULL REFERENCES blobs(sha256),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, sha256)
);

ALTER TABLE namespace_quotas ADD COLUMN rate_burst INTEGER;

CREATE INDEX audit_log_actor ON audit_log (actor_id);
