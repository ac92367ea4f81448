-- Which namespaces may reference a xorb in a shard (issue 12, tenancy): one that
-- uploaded its bytes. A hash alone is no right to content: without this, a tenant
-- that learnt another tenant's xorb hash could register a file over it and read it
-- back through a reconstruction. The xorbs of a namespace's own dedup answers are
-- xorbs its own shards referenced, so they are its own already.
CREATE TABLE xet_xorb_owners (
    xorb_hash    BYTEA NOT NULL REFERENCES xet_xorbs ON DELETE CASCADE,
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    PRIMARY KEY (xorb_hash, namespace_id)
);
