-- Multipart LFS uploads into an object store's own multipart upload (S3).
-- The session's parts go straight into the store's upload of its staging
-- object (`store_upload` is the store's upload id); each part is hashed as it
-- streams through, resuming from the SHA-256 state its predecessor left, so
-- a completed upload's digest is known without reading its bytes back.
ALTER TABLE upload_sessions ADD COLUMN store_upload TEXT;

-- Per part: the store's ETag, the SHA-256 state it was hashed from and the
-- state after it (for the last part, the final digest), and whether the
-- store's copy of the part is certainly the one hashed: `clean` only when the
-- attempt that recorded it ran alone, start to end.
ALTER TABLE upload_parts
    ADD COLUMN store_etag TEXT,
    ADD COLUMN sha_before BYTEA,
    ADD COLUMN sha_after BYTEA,
    ADD COLUMN clean BOOLEAN NOT NULL DEFAULT false;

-- Attempts to upload each part: `started` counts them, `in_flight` those not
-- yet over. An attempt whose send to the store failed or was cut off stays
-- in flight for good: the store may hold its bytes, so the session's parts
-- are then verified by reading the joined object once.
CREATE TABLE upload_part_attempts (
    session_id  UUID NOT NULL REFERENCES upload_sessions(id) ON DELETE CASCADE,
    part_number INT  NOT NULL,
    started     INT  NOT NULL,
    in_flight   INT  NOT NULL,
    PRIMARY KEY (session_id, part_number)
);
