-- What a revision of a repo resolves to, and whether its LFS files may be
-- served, changes only when its refs move or an LFS object is permanently
-- removed from it. `resolve_version` counts those changes, so a hub process
-- may cache (repo, resolve_version, revision) -> commit and the LFS check
-- of /resolve: the repo row it reads on every request anyway tells it
-- whether its cached answer still holds, on every replica alike.
ALTER TABLE repos ADD COLUMN resolve_version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION repos_bump_resolve_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repos SET resolve_version = resolve_version + 1
     WHERE id IN (SELECT DISTINCT repo_id FROM changed);
    RETURN NULL;
END $$;

CREATE TRIGGER refs_added_resolve AFTER INSERT ON refs
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION repos_bump_resolve_version();
CREATE TRIGGER refs_moved_resolve AFTER UPDATE ON refs
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION repos_bump_resolve_version();
CREATE TRIGGER refs_removed_resolve AFTER DELETE ON refs
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION repos_bump_resolve_version();
CREATE TRIGGER repo_lfs_objects_removed_resolve AFTER DELETE ON repo_lfs_objects
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION repos_bump_resolve_version();
