-- Usage rows arrive in batches of thousands a second (one per proxied call). A
-- foreign-key check per row (a lookup with a row lock on namespaces and on
-- endpoints) was about 40% of the batch insert's cost, paid on the database's
-- CPU, which on one node is the hub's. Worse, an endpoint (or namespace) deleted
-- while its usage was still buffered in a hub made that batch fail, and every
-- later batch with it (a failed batch is kept for a retry): one tenant deleting
-- an endpoint it had just called stopped usage metering for every tenant.
--
-- The ids stay as plain columns. endpoint_id may name a deleted endpoint (ids are
-- never reused, and the row keeps endpoint_name, which is what usage is read by).
-- A deleted namespace still takes its usage with it, by the trigger below (the
-- old ON DELETE CASCADE); a row buffered for a namespace deleted meanwhile is
-- never read (nothing lists usage of a namespace that does not exist).
ALTER TABLE usage_records DROP CONSTRAINT usage_records_namespace_id_fkey;
ALTER TABLE usage_records DROP CONSTRAINT usage_records_endpoint_id_fkey;

CREATE FUNCTION usage_records_follow_namespace() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM usage_records WHERE namespace_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER namespaces_delete_usage AFTER DELETE ON namespaces
    FOR EACH ROW EXECUTE FUNCTION usage_records_follow_namespace();

COMMENT ON COLUMN usage_records.endpoint_id IS
    'the called endpoint''s id; no foreign key: it may name a deleted endpoint (see endpoint_name)';
