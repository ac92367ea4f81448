-- The newest commit that changed a path or anything below it (the `lastCommit`
-- of tree listings with expand, and the dashboard's file browser): looked up by
-- path, exactly and as a bytewise range for a folder's contents ('dir/' up to
-- 'dir0'), instead of scanning every change of the repo for each path.
CREATE INDEX commit_changes_repo_path ON commit_changes (repo_id, path COLLATE "C");
