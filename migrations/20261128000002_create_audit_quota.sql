-- Audit log per namespace (organization or user), and per-namespace quotas.

CREATE TABLE audit_log (
    id            BIGSERIAL PRIMARY KEY,
    namespace_id  BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    actor_id      BIGINT,
    actor_name    TEXT,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    details       JSONB NOT NULL DEFAULT '{}'::jsonb,
    at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_ns ON audit_log (namespace_id, id DESC);

CREATE TABLE namespace_quotas (
    namespace_id   BIGINT PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    storage_bytes  BIGINT,
    -- Requests per second per token (and per anonymous IP) in this namespace's routes.
    rate_per_s     INTEGER,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The namespace that holds single-segment (canonical) repos such as "gpt2".
INSERT INTO namespaces (name, kind, fullname) VALUES ('_root', 'org', 'Canonical repositories');
