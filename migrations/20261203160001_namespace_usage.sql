-- A namespace's storage usage as last summed under its quota lock
-- (`quota::usage_cached`). A commit in a namespace with a quota adds its own
-- growth (the bytes of blobs it links that no repo of the namespace links
-- yet) to this row instead of summing the whole namespace again, which at
-- 100,000 files took ~250 ms, three times per commit.
--
-- The row may only ever be too high, never too low (a refusal that is too
-- early, never a quota bypass). So every other change to what usage counts
-- drops the row, and the next check sums again: links made or removed
-- outside a commit, LFS upload sessions, Xet ownership and reservations,
-- repos deleted or moved to another namespace. Pending objects (inline
-- bytes of commits in flight) do not drop it: a commit counts its own bytes
-- when it links them, and the row is summed again once it is a minute old.
CREATE TABLE namespace_usage (
    namespace_id BIGINT PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    bytes        BIGINT NOT NULL,
    -- When the namespace was last summed (not when a commit last added to it).
    computed_at  TIMESTAMPTZ NOT NULL
);

-- Statement-level: one DELETE per statement, whatever its row count.
CREATE FUNCTION namespace_usage_forget_by_repo() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM namespace_usage u USING repos r
     WHERE u.namespace_id = r.namespace_id
       AND r.id IN (SELECT DISTINCT repo_id FROM changed);
    RETURN NULL;
END
$$;

CREATE FUNCTION namespace_usage_forget_by_namespace() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM namespace_usage
     WHERE namespace_id IN (SELECT DISTINCT namespace_id FROM changed);
    RETURN NULL;
END
$$;

CREATE TRIGGER repo_blobs_added AFTER INSERT ON repo_blobs
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER repo_blobs_removed AFTER DELETE ON repo_blobs
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER repo_lfs_objects_added AFTER INSERT ON repo_lfs_objects
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER repo_lfs_objects_removed AFTER DELETE ON repo_lfs_objects
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER upload_sessions_added AFTER INSERT ON upload_sessions
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER upload_sessions_changed AFTER UPDATE ON upload_sessions
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER upload_sessions_removed AFTER DELETE ON upload_sessions
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_repo();
CREATE TRIGGER xet_xorb_owners_added AFTER INSERT ON xet_xorb_owners
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_namespace();
CREATE TRIGGER xet_xorb_owners_removed AFTER DELETE ON xet_xorb_owners
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_namespace();
CREATE TRIGGER xet_xorb_reservations_added AFTER INSERT ON xet_xorb_reservations
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_namespace();
CREATE TRIGGER xet_xorb_reservations_removed AFTER DELETE ON xet_xorb_reservations
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_namespace();
-- A repo deleted (its links go by cascade, after the repo row, so the
-- triggers above no longer find its namespace) or moved.
CREATE TRIGGER repos_removed AFTER DELETE ON repos
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION namespace_usage_forget_by_namespace();
CREATE FUNCTION namespace_usage_forget_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM namespace_usage WHERE namespace_id IN (OLD.namespace_id, NEW.namespace_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER repos_moved AFTER UPDATE OF namespace_id ON repos
    FOR EACH ROW WHEN (OLD.namespace_id IS DISTINCT FROM NEW.namespace_id)
    EXECUTE FUNCTION namespace_usage_forget_moved();
