-- Inference endpoints: workers, endpoints (desired state), replicas (the
-- scheduler's placements, what workers long-poll), events and usage.

CREATE TABLE workers (
    id                 UUID PRIMARY KEY,
    name               TEXT NOT NULL,
    url                TEXT NOT NULL,
    -- The gateway authenticates to the worker with this secret (Bearer).
    gateway_secret     TEXT NOT NULL,
    memory_bytes       BIGINT NOT NULL,
    free_memory_bytes  BIGINT NOT NULL,
    cores              INTEGER NOT NULL,
    version            TEXT NOT NULL DEFAULT '',
    registered_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Bumped whenever the worker's set of replicas changes (long-poll version).
    assign_version     BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE endpoints (
    id                   BIGSERIAL PRIMARY KEY,
    namespace_id         BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    repo_id              BIGINT REFERENCES repos(id) ON DELETE SET NULL,
    repo_type            TEXT NOT NULL,
    repository           TEXT NOT NULL,
    revision             TEXT NOT NULL,
    commit_oid           TEXT NOT NULL,
    task                 TEXT NOT NULL,
    min_replicas         INTEGER NOT NULL CHECK (min_replicas >= 0),
    max_replicas         INTEGER NOT NULL CHECK (max_replicas >= 1 AND max_replicas >= min_replicas),
    scale_to_zero_after_s INTEGER CHECK (scale_to_zero_after_s IS NULL OR scale_to_zero_after_s >= 10),
    access               TEXT NOT NULL CHECK (access IN ('public', 'protected')),
    paused               BOOLEAN NOT NULL DEFAULT false,
    -- The replica count the scheduler aims for (between 0 and max).
    target_replicas      INTEGER NOT NULL DEFAULT 1,
    status               TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'pulling', 'loading', 'running', 'scaled_to_zero', 'paused', 'failed')),
    message              TEXT,
    created_by           BIGINT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_request_at      TIMESTAMPTZ,
    wake_requested_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX endpoints_ns_name ON endpoints (namespace_id, lower(name));

CREATE TABLE replicas (
    id           UUID PRIMARY KEY,
    endpoint_id  BIGINT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    worker_id    UUID NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'assigned'
        CHECK (status IN ('assigned', 'pulling', 'loading', 'running', 'failed')),
    message      TEXT,
    in_flight    INTEGER NOT NULL DEFAULT 0,
    queue_depth  INTEGER NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX replicas_endpoint ON replicas (endpoint_id);
CREATE INDEX replicas_worker ON replicas (worker_id);

CREATE TABLE endpoint_events (
    id           BIGSERIAL PRIMARY KEY,
    endpoint_id  BIGINT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    status       TEXT NOT NULL,
    message      TEXT
);
CREATE INDEX endpoint_events_ep ON endpoint_events (endpoint_id, id DESC);

CREATE TABLE usage_records (
    id            BIGSERIAL PRIMARY KEY,
    namespace_id  BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    endpoint_id   BIGINT REFERENCES endpoints(id) ON DELETE SET NULL,
    endpoint_name TEXT NOT NULL,
    token_id      BIGINT,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    latency_ms    REAL NOT NULL,
    status        INTEGER NOT NULL
);
CREATE INDEX usage_ns_at ON usage_records (namespace_id, at);
