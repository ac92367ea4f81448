-- Each hub process caches the repo rows `/resolve` reads while it listens on
-- `paddock_repo` (hub-api/src/repo_cache.rs). The database announces every
-- change to what such a row holds, whoever makes it (a replica, `hub-api
-- admin`, a background job, psql), when the change commits:
--   `repo:<id>`      a repo row changed (a ref move bumps `resolve_version`)
--                    or was deleted;
--   `namespace:<id>` a namespace was renamed or deleted (rows carry its name).
-- The counters `/resolve` never reads (downloads, likes, discussion_seq) are
-- left out: `downloads` changes with every counted download.
CREATE FUNCTION repos_notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (to_jsonb(NEW) - ARRAY['downloads', 'likes', 'discussion_seq'])
           = (to_jsonb(OLD) - ARRAY['downloads', 'likes', 'discussion_seq']) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('paddock_repo', 'repo:' || OLD.id);
    RETURN NULL;
END $$;

CREATE TRIGGER repos_changed_notify AFTER UPDATE OR DELETE ON repos
    FOR EACH ROW EXECUTE FUNCTION repos_notify_changed();

CREATE FUNCTION namespaces_notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paddock_repo', 'namespace:' || OLD.id);
    RETURN NULL;
END $$;

CREATE TRIGGER namespaces_renamed_notify AFTER UPDATE ON namespaces
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION namespaces_notify_changed();
CREATE TRIGGER namespaces_deleted_notify AFTER DELETE ON namespaces
    FOR EACH ROW EXECUTE FUNCTION namespaces_notify_changed();
