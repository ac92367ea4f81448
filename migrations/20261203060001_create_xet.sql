-- Xet storage (issue 12): the CAS index. Xorb and file objects are content
-- addressed and shared; which repo registered a file and which namespace may
-- see a chunk in a dedup answer are separate rows (tenancy).

-- One row per validated xorb (§5.6); the object is `xorbs/default/<hash>`.
-- chunk_index = hub_xet::xorb::XorbIndex::chunks_to_bytes() (44 bytes a chunk).
CREATE TABLE xet_xorbs (
    hash               BYTEA PRIMARY KEY CHECK (length(hash) = 32),
    num_chunks         INTEGER NOT NULL CHECK (num_chunks BETWEEN 1 AND 8192),
    chunk_stream_bytes BIGINT NOT NULL,
    stored_bytes       BIGINT NOT NULL,
    chunk_index        BYTEA NOT NULL CHECK (length(chunk_index) = 44 * num_chunks),
    -- The namespace that first uploaded it (quotas count stored_bytes here);
    -- NULL once that namespace is gone (other files may still use the xorb).
    namespace_id       BIGINT REFERENCES namespaces(id) ON DELETE SET NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Registered files (§6.6). terms: per term xorb hash (32) | chunk start u32 |
-- chunk end u32 | unpacked bytes u32, little-endian (44 bytes a term).
CREATE TABLE xet_files (
    file_hash  BYTEA PRIMARY KEY CHECK (length(file_hash) = 32),
    size       BIGINT NOT NULL CHECK (size > 0),
    terms      BYTEA NOT NULL CHECK (length(terms) > 0 AND length(terms) % 44 = 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The xorbs a file needs (keeps a referenced xorb from being deleted; GC later).
CREATE TABLE xet_file_xorbs (
    file_hash BYTEA NOT NULL REFERENCES xet_files ON DELETE CASCADE,
    xorb_hash BYTEA NOT NULL REFERENCES xet_xorbs,
    PRIMARY KEY (file_hash, xorb_hash)
);
CREATE INDEX xet_file_xorbs_xorb ON xet_file_xorbs (xorb_hash);

-- Which repo registered which file (a read token reconstructs only these), and
-- its standard sha256 when the shard carried one (the commit check of §9.4).
CREATE TABLE xet_repo_files (
    repo_id    BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    file_hash  BYTEA NOT NULL REFERENCES xet_files,
    sha256     TEXT CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, file_hash)
);
CREATE INDEX xet_repo_files_sha256 ON xet_repo_files (repo_id, sha256);

-- One row per accepted shard: the dedup set a dedup answer hands out (the
-- xorbs its files use, in order), and for each the chunk indices that start a
-- file (they carry the global-dedup flag).
CREATE TABLE xet_uploads (
    id                BIGSERIAL PRIMARY KEY,
    namespace_id      BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    repo_id           BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    xorbs             BYTEA[] NOT NULL,
    file_start_chunks JSONB NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The global-dedup index (§6.6 step 4), scoped by namespace: a dedup query
-- never reveals another tenant's chunk, not even by a 200 versus a 404.
CREATE TABLE xet_dedup_chunks (
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    chunk_hash   BYTEA NOT NULL CHECK (length(chunk_hash) = 32),
    upload_id    BIGINT NOT NULL REFERENCES xet_uploads ON DELETE CASCADE,
    PRIMARY KEY (namespace_id, chunk_hash, upload_id)
);
CREATE INDEX xet_dedup_chunks_upload ON xet_dedup_chunks (upload_id);
