-- Webhooks (issue 15): subscriptions, the outbox of events and the delivery
-- queue with its attempt log. Events are written in the transaction of the
-- change that caused them (`webhooks::enqueue`); every hub replica's
-- delivery task claims due deliveries with FOR UPDATE SKIP LOCKED.

CREATE TABLE webhooks (
    id          UUID PRIMARY KEY,
    -- The user or organization that owns it: the user themself or the
    -- organization's admins may see and change it.
    owner_id    BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    created_by  BIGINT REFERENCES namespaces(id) ON DELETE SET NULL,
    url         TEXT NOT NULL,
    -- Sent as X-Webhook-Secret and the HMAC key of X-Webhook-Signature; never returned.
    secret      TEXT,
    domains     TEXT[] NOT NULL,
    disabled    BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_owner ON webhooks (owner_id);

-- What a webhook watches: a namespace (user/org: every repo in it) or one repo.
-- Rows follow their target by id (a moved repo stays watched) and go with it.
CREATE TABLE webhook_watches (
    webhook_id    UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'org', 'model', 'dataset')),
    namespace_id  BIGINT REFERENCES namespaces(id) ON DELETE CASCADE,
    repo_id       BIGINT REFERENCES repos(id) ON DELETE CASCADE,
    CHECK ((namespace_id IS NULL) <> (repo_id IS NULL)),
    UNIQUE (webhook_id, namespace_id, repo_id)
);
CREATE INDEX webhook_watches_namespace ON webhook_watches (namespace_id) WHERE namespace_id IS NOT NULL;
CREATE INDEX webhook_watches_repo ON webhook_watches (repo_id) WHERE repo_id IS NOT NULL;

-- The outbox: one row per event; its id is the payload's `event.id`.
CREATE TABLE webhook_events (
    id          UUID PRIMARY KEY,
    scope       TEXT NOT NULL,
    action      TEXT NOT NULL,
    -- The payload without `webhook` (added per delivery) and `repo.url`
    -- (built from the public URL when sent).
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One delivery of one event to one webhook (a redelivery is a new row).
CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    -- Creation order (several events of one transaction share now()): the
    -- log's order and cursor.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    webhook_id      UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        UUID NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is due; a claim moves it to the end of the
    -- claim's lease, so a replica that dies mid-send leaves it due again then.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The current claim: only its holder may record the outcome.
    claim           UUID,
    redelivery_of   UUID REFERENCES webhook_deliveries(id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_redelivery ON webhook_deliveries (redelivery_of) WHERE redelivery_of IS NOT NULL;
-- Pruning (`webhooks::delivery::prune`, after 30 days).
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE state <> 'pending';

-- Every attempt: what the receiver answered, or why nothing was sent.
CREATE TABLE webhook_attempts (
    id            BIGSERIAL PRIMARY KEY,
    delivery_id   UUID NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    status_code   INTEGER,
    latency_ms    INTEGER NOT NULL,
    -- At most 1 KiB of the response body.
    response      TEXT,
    error         TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);
