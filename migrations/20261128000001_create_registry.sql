-- Registry core: namespaces (users and organizations), tokens, repos, git objects,
-- refs, LFS objects and upload sessions. File bytes live in the object store,
-- addressed by sha256; Postgres only holds metadata.

CREATE TABLE namespaces (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'org')),
    fullname    TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Users and organizations share one namespace, case-insensitively.
CREATE UNIQUE INDEX namespaces_name_lower ON namespaces (lower(name));

CREATE TABLE users (
    namespace_id   BIGINT PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    email          TEXT,
    password_hash  TEXT,
    is_admin       BOOLEAN NOT NULL DEFAULT false,
    -- Bumped to invalidate every session of the user (logout everywhere, password change).
    session_version INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE org_members (
    org_id      BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'write', 'read')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);

CREATE TABLE tokens (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- sha256 of the whole secret; the secret itself is never stored.
    secret_hash   BYTEA NOT NULL UNIQUE,
    -- The first characters of the secret, for display ("pdk_ab12...").
    display_prefix TEXT NOT NULL,
    scopes        TEXT[] NOT NULL,
    -- Optional restriction: namespaces and/or "ns/name" repo ids ("model:ns/name").
    restrict_namespaces TEXT[],
    restrict_repos      TEXT[],
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE repos (
    id            BIGSERIAL PRIMARY KEY,
    namespace_id  BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    repo_type     TEXT NOT NULL CHECK (repo_type IN ('model', 'dataset')),
    private       BOOLEAN NOT NULL DEFAULT false,
    gated         TEXT CHECK (gated IN ('auto', 'manual')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_modified TIMESTAMPTZ NOT NULL DEFAULT now(),
    downloads     BIGINT NOT NULL DEFAULT 0,
    likes         BIGINT NOT NULL DEFAULT 0,
    -- Card metadata of the default branch head, refreshed on every commit to it.
    card_data     JSONB NOT NULL DEFAULT '{}'::jsonb,
    tags          TEXT[] NOT NULL DEFAULT '{}',
    pipeline_tag  TEXT,
    library_name  TEXT,
    license       TEXT,
    safetensors   JSONB,
    used_storage  BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX repos_ns_type_name ON repos (namespace_id, repo_type, lower(name));
CREATE INDEX repos_last_modified ON repos (last_modified DESC);
CREATE INDEX repos_name_lower ON repos (lower(name) text_pattern_ops);

-- Git tree objects, content-addressed (shared across repos: a tree reveals only
-- names and object ids, and is only ever reached through a readable commit).
CREATE TABLE git_tree_entries (
    tree_oid  TEXT NOT NULL,
    name      TEXT NOT NULL,
    mode      TEXT NOT NULL CHECK (mode IN ('100644', '100755', '40000')),
    oid       TEXT NOT NULL,
    PRIMARY KEY (tree_oid, name)
);
-- Empty trees have no entries; this table records that a tree exists at all.
CREATE TABLE git_trees (
    oid TEXT PRIMARY KEY
);

-- Git blobs: the git blob id of a file in a tree, and where its bytes are.
-- For a regular file, oid = sha1("blob N\0" + content) and sha256/size describe
-- the content. For an LFS file, oid is the id of its pointer file, and
-- sha256/size describe the real content (the LFS object).
CREATE TABLE git_blobs (
    oid       TEXT PRIMARY KEY,
    is_lfs    BOOLEAN NOT NULL,
    sha256    TEXT NOT NULL,
    size      BIGINT NOT NULL,
    -- Byte length of the pointer file for LFS blobs.
    pointer_size INTEGER
);
CREATE INDEX git_blobs_sha256 ON git_blobs (sha256);

CREATE TABLE commits (
    repo_id          BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    oid              TEXT NOT NULL,
    tree_oid         TEXT NOT NULL,
    parent_oids      TEXT[] NOT NULL,
    author_name      TEXT NOT NULL,
    author_email     TEXT NOT NULL,
    -- Seconds since epoch and the git timezone string, exactly as hashed.
    author_time      BIGINT NOT NULL,
    author_tz        TEXT NOT NULL,
    title            TEXT NOT NULL,
    message          TEXT NOT NULL,
    -- Number of commits from the root to here (root = 1): cheap pagination and ordering.
    depth            BIGINT NOT NULL,
    -- Metadata derived at commit time (model card front matter, config, files).
    card_data        JSONB NOT NULL DEFAULT '{}'::jsonb,
    config_info      JSONB NOT NULL DEFAULT '{}'::jsonb,
    tags             TEXT[] NOT NULL DEFAULT '{}',
    pipeline_tag     TEXT,
    library_name     TEXT,
    license          TEXT,
    safetensors      JSONB,
    author_id        BIGINT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, oid)
);

-- The paths each commit changed (for history per path, commit pages and lastCommit).
CREATE TABLE commit_changes (
    repo_id     BIGINT NOT NULL,
    commit_oid  TEXT NOT NULL,
    path        TEXT NOT NULL,
    change      TEXT NOT NULL CHECK (change IN ('added', 'modified', 'deleted')),
    PRIMARY KEY (repo_id, commit_oid, path),
    FOREIGN KEY (repo_id, commit_oid) REFERENCES commits(repo_id, oid) ON DELETE CASCADE
);

-- Parameter counts per dtype of each validated safetensors blob.
CREATE TABLE safetensors_meta (
    sha256      TEXT PRIMARY KEY,
    parameters  JSONB NOT NULL,
    total       BIGINT NOT NULL
);

-- HMAC keys for hub-signed JWTs (sessions, worker pull tokens, LFS upload links).
-- Several may be active so keys rotate without a restart.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    secret      BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- New tokens are signed with the newest key that is not retired.
    retired_at  TIMESTAMPTZ
);

CREATE TABLE refs (
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    -- Full ref name: refs/heads/main, refs/tags/v1.
    name        TEXT NOT NULL,
    commit_oid  TEXT NOT NULL,
    message     TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, name)
);

CREATE TABLE ref_log (
    id          BIGSERIAL PRIMARY KEY,
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    old_oid     TEXT,
    new_oid     TEXT,
    actor_id    BIGINT,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ref_log_repo ON ref_log (repo_id, name, id);

-- Verified content in the object store, one row per distinct sha256.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which repo has proven it holds which LFS object (uploaded, or committed in it).
-- A commit may only reference LFS objects linked to its repo: knowing a digest
-- must never grant read access to another tenant's bytes.
CREATE TABLE repo_lfs_objects (
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    sha256      TEXT NOT NULL REFERENCES blobs(sha256),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, sha256)
);

-- LFS uploads in flight (single PUT or multipart).
CREATE TABLE upload_sessions (
    id          UUID PRIMARY KEY,
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    chunk_size  BIGINT,
    part_count  INTEGER,
    created_by  BIGINT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ
);
CREATE INDEX upload_sessions_repo ON upload_sessions (repo_id, sha256);

CREATE TABLE upload_parts (
    session_id  UUID NOT NULL REFERENCES upload_sessions(id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL,
    size        BIGINT NOT NULL,
    etag        TEXT NOT NULL,
    PRIMARY KEY (session_id, part_number)
);

-- Idempotent commits: a retried commit with the same key returns the same commit.
CREATE TABLE commit_idempotency (
    repo_id     BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    commit_oid  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, key)
);
