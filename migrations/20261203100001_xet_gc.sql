-- Xet garbage collection and quotas (issue 12; hub-api/src/sweeper.rs,
-- hub-api/src/quota.rs).

-- When the namespace last uploaded the xorb's bytes: a re-upload refreshes it,
-- so a xorb some client is about to reference in a shard is not collected
-- within the grace period, and an ownership nothing of the namespace uses is
-- released after it (the namespace stops paying for it).
ALTER TABLE xet_xorb_owners ADD COLUMN uploaded_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- When a dedup answer last handed this set out (NULL: never). A client keeps
-- a dedup answer until its key expires (7 days) and may reference its xorbs in
-- a shard until then, so the collector keeps them that long.
-- A set outlives its repo (the namespace's other repos may have been handed
-- it); the sweeper deletes it once no file uses its xorbs and it has not been
-- handed out within the key expiry.
ALTER TABLE xet_uploads ADD COLUMN last_served_at TIMESTAMPTZ;
ALTER TABLE xet_uploads ALTER COLUMN repo_id DROP NOT NULL;
ALTER TABLE xet_uploads DROP CONSTRAINT xet_uploads_repo_id_fkey;
ALTER TABLE xet_uploads ADD CONSTRAINT xet_uploads_repo_id_fkey
    FOREIGN KEY (repo_id) REFERENCES repos(id) ON DELETE SET NULL;
CREATE INDEX xet_uploads_xorbs ON xet_uploads USING GIN (xorbs);

-- Room a namespace took for a xorb being stored (the quota check happens before
-- the bytes are written, under the namespace's quota lock). Deleted once the
-- xorb is indexed or the request fails; a crashed request's row is removed by
-- the sweeper after the pending grace period. Quotas count these rows.
CREATE TABLE xet_xorb_reservations (
    id           BIGSERIAL PRIMARY KEY,
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    xorb_hash    BYTEA NOT NULL CHECK (length(xorb_hash) = 32),
    stored_bytes BIGINT NOT NULL CHECK (stored_bytes >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX xet_xorb_reservations_namespace ON xet_xorb_reservations (namespace_id);
CREATE INDEX xet_xorb_owners_namespace ON xet_xorb_owners (namespace_id);
