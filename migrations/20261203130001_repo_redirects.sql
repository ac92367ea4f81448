-- Old names of moved repos (issue 18: `HfApi.move_repo`, then a download by
-- the old name, as on the Hub). A request that finds no repo under a name
-- with a row here is redirected (307) to the repo's current name, if the
-- caller can read it (registry::redirects). The row follows the repo, not a
-- name: renamed again, the old name leads to the newest one. Creating a repo
-- under the name, or moving one to it, removes the row.
CREATE TABLE repo_redirects (
    namespace_id  BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    repo_type     TEXT NOT NULL,
    name          TEXT NOT NULL,
    repo_id       BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX repo_redirects_name ON repo_redirects (namespace_id, repo_type, lower(name));
CREATE INDEX repo_redirects_repo ON repo_redirects (repo_id);
