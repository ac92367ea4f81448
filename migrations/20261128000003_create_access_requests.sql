-- Gated repos: users ask for access; repo admins approve or reject.
CREATE TABLE access_requests (
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    fields      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_by  BIGINT,
    decided_at  TIMESTAMPTZ,
    PRIMARY KEY (repo_id, user_id)
);
CREATE INDEX access_requests_status ON access_requests (repo_id, status);
