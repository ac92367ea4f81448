-- Objects at final content-addressed keys whose reference is not committed
-- yet: inline files of a commit in flight, an LFS object between its
-- verification and its link to the repo. A row is written (under the blob's
-- shared advisory lock) before the bytes reach their final key and deleted
-- by the transaction that references them; a refused commit releases its
-- rows at once, and rows of a crashed request are collected after a grace
-- period (hub-api/src/sweeper.rs). Storage quotas count these rows.
CREATE TABLE pending_objects (
    id            BIGSERIAL PRIMARY KEY,
    sha256        TEXT NOT NULL,
    size          BIGINT NOT NULL,
    -- Whose request stored the bytes (null once the namespace is deleted:
    -- the row is still collected).
    namespace_id  BIGINT REFERENCES namespaces(id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX pending_objects_sha256 ON pending_objects (sha256);
CREATE INDEX pending_objects_namespace ON pending_objects (namespace_id);
CREATE INDEX pending_objects_created ON pending_objects (created_at);

-- The collector asks "is this sha256 referenced?" of each table that can.
CREATE INDEX repo_lfs_objects_sha256 ON repo_lfs_objects (sha256);
CREATE INDEX repo_blobs_sha256 ON repo_blobs (sha256);
-- Quotas count open upload sessions (declared sizes) per namespace.
CREATE INDEX upload_sessions_open ON upload_sessions (sha256) WHERE completed_at IS NULL;
