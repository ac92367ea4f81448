-- Discussions and pull requests (the Hub's community tab), numbered per repo.
-- A pull request's commits live on the ref refs/pr/<num>, which starts at the
-- head of its target branch (`base_oid`) and is merged back into that branch.
ALTER TABLE repos ADD COLUMN discussion_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE discussions (
    id               BIGSERIAL PRIMARY KEY,
    repo_id          BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    num              INTEGER NOT NULL CHECK (num > 0),
    title            TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    -- NULL once the author's account is deleted (shown as "deleted").
    author_id        BIGINT REFERENCES namespaces(id) ON DELETE SET NULL,
    is_pull_request  BOOLEAN NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('open', 'closed', 'merged', 'draft')),
    -- Pull requests: the branch (short name) they merge into, the commit
    -- their ref started at, and the commit that merged them.
    target_branch    TEXT,
    base_oid         TEXT,
    merge_commit_oid TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (repo_id, num),
    CHECK (is_pull_request = (target_branch IS NOT NULL)),
    CHECK (status NOT IN ('merged', 'draft') OR is_pull_request)
);
CREATE INDEX discussions_repo_status ON discussions (repo_id, status, num DESC);

-- What happened in a discussion, in order: comments (edit history and
-- hidden flag in `data`), status and title changes, commits pushed to a PR.
CREATE TABLE discussion_events (
    id             BIGSERIAL PRIMARY KEY,
    discussion_id  BIGINT NOT NULL REFERENCES discussions(id) ON DELETE CASCADE,
    -- The id clients see and address comments by: 24 hex digits.
    event_id       TEXT NOT NULL UNIQUE CHECK (event_id ~ '^[0-9a-f]{24}$'),
    kind           TEXT NOT NULL CHECK (kind IN ('comment', 'status-change', 'title-change', 'commit')),
    author_id      BIGINT REFERENCES namespaces(id) ON DELETE SET NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    data           JSONB NOT NULL
);
CREATE INDEX discussion_events_discussion ON discussion_events (discussion_id, id);
