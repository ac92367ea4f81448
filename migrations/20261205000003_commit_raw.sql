-- The exact object body of a commit pushed with git (`git-receive-pack`):
-- its committer, timezone, signature or other headers may not be those the
-- hub writes, so it is served from these bytes (its id checked) instead of
-- being rebuilt from the columns. NULL for commits the hub made itself.
ALTER TABLE commits ADD COLUMN raw BYTEA;
