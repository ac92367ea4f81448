-- Listing orders of the dashboard and GET /api/{type}: each sort key with the
-- id tie-breaker, per repo type, so a page of 30 stops after 31 index rows
-- instead of sorting every repo (10,000 repos: see docs/BENCHMARKS-dashboard.md).
CREATE INDEX repos_list_last_modified ON repos (repo_type, last_modified DESC, id DESC);
CREATE INDEX repos_list_created ON repos (repo_type, created_at DESC, id DESC);
CREATE INDEX repos_list_downloads ON repos (repo_type, downloads DESC, id DESC);
CREATE INDEX repos_list_likes ON repos (repo_type, likes DESC, id DESC);
