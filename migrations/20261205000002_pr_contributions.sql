-- What contributors without write access have added to a repo through their
-- pull requests (inline files of commits to refs/pr/N; they may not upload
-- LFS or Xet objects): bytes counted against `Limits::contribution`, since
-- those bytes are stored in, and count toward, the repo owner's quota.
CREATE TABLE pr_contributions (
    repo_id BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    bytes BIGINT NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    PRIMARY KEY (repo_id, user_id)
);
