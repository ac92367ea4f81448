-- Likes (HfApi.like / unlike / list_liked_repos). repos.likes is the count,
-- kept in step in the transaction that adds or removes a row.
CREATE TABLE repo_likes (
    user_id    BIGINT NOT NULL REFERENCES users(namespace_id) ON DELETE CASCADE,
    repo_id    BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, repo_id)
);
CREATE INDEX repo_likes_repo ON repo_likes (repo_id);
