-- Repo search at hub scale (issue 14): `search=` matches a case-insensitive
-- substring of the full id "namespace/name". It was `strpos(lower(n.name ||
-- '/' || r.name), ...)` over a join, a scan of every visible repo. Now the
-- lower-cased id is kept on the repo (`search_key`, set by a trigger from
-- the namespace's name, which never changes, and the repo's name, which a
-- move changes) and indexed by trigrams, so `search_key LIKE '%...%'` is an
-- index lookup (a lossy one: PostgreSQL rechecks the LIKE on each row).
-- pg_trgm is a trusted extension (PostgreSQL 13+): a role with CREATE on the
-- database may install it; Debian's postgresql package ships it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE repos ADD COLUMN search_key TEXT;

CREATE FUNCTION repos_search_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_key := lower((SELECT name FROM namespaces WHERE id = NEW.namespace_id) || '/' || NEW.name);
    RETURN NEW;
END
$$;
CREATE TRIGGER repos_search_key BEFORE INSERT OR UPDATE OF namespace_id, name ON repos
    FOR EACH ROW EXECUTE FUNCTION repos_search_key();

UPDATE repos r SET search_key = lower(n.name || '/' || r.name) FROM namespaces n WHERE n.id = r.namespace_id;
ALTER TABLE repos ALTER COLUMN search_key SET NOT NULL;
CREATE INDEX repos_search_trgm ON repos USING gin (search_key gin_trgm_ops);
