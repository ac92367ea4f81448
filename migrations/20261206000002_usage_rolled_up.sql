-- Usage is stored rolled up, not one row per call. The gateway used to write a
-- row per proxied call, 100 ms batches of ~600 rows at 6,000 calls a second:
-- 4.2 ms of the database's CPU per batch, which on a 2-core node took a core from
-- the hub every 100 ms and was most of the gateway's p99 at concurrency 16
-- (docs/BENCHMARKS.md, "What makes the tail at 16"). It would also have been
-- 500 million rows a day per busy gateway.
--
-- Now each hub process sums its calls in memory per (namespace, endpoint,
-- token, status, second) and writes one row per group and flush. Latency is kept
-- as a sparse histogram, `latency_buckets[i]` holding `latency_counts[i]` calls:
-- bucket b spans (2^((b-1)/8), 2^(b/8)] microseconds (bucket 0: up to 1 us), 8 a
-- doubling, so a percentile read from it is within 4.5% of the exact one.
--
-- A flush's rows are (flush_id, seq): a batch written twice (its INSERT committed
-- but the answer was lost and the batch was kept for a retry) counts once.
CREATE TABLE usage_counts (
    flush_id        UUID NOT NULL,
    seq             INTEGER NOT NULL,
    namespace_id    BIGINT NOT NULL,
    endpoint_id     BIGINT,
    endpoint_name   TEXT NOT NULL,
    token_id        BIGINT,
    at              TIMESTAMPTZ NOT NULL,
    status          INTEGER NOT NULL,
    requests        INTEGER NOT NULL CHECK (requests > 0),
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0,
    latency_buckets SMALLINT[] NOT NULL,
    latency_counts  INTEGER[] NOT NULL,
    PRIMARY KEY (flush_id, seq),
    CHECK (cardinality(latency_buckets) = cardinality(latency_counts))
);
CREATE INDEX usage_counts_ns_at ON usage_counts (namespace_id, at);

COMMENT ON COLUMN usage_counts.at IS 'the second the calls finished in (truncated)';
COMMENT ON COLUMN usage_counts.endpoint_id IS
    'the called endpoint''s id; no foreign key: it may name a deleted endpoint (see endpoint_name)';

-- The per-call rows so far, rolled up the same way (one flush per group).
INSERT INTO usage_counts (flush_id, seq, namespace_id, endpoint_id, endpoint_name, token_id, at, status,
                          requests, input_tokens, output_tokens, latency_buckets, latency_counts)
SELECT gen_random_uuid(), 0, namespace_id, endpoint_id, endpoint_name, token_id, at, status,
       sum(n)::int, sum(i)::bigint, sum(o)::bigint, array_agg(b ORDER BY b), array_agg(n::int ORDER BY b)
FROM (
    SELECT namespace_id, endpoint_id, endpoint_name, token_id, date_trunc('second', at) AS at, status,
           CASE WHEN latency_ms <= 0.001 THEN 0
                ELSE LEAST(400, ceil(8 * ln(latency_ms::float8 * 1000) / ln(2)))::smallint END AS b,
           count(*) AS n, sum(input_tokens) AS i, sum(output_tokens) AS o
    FROM usage_records
    GROUP BY 1, 2, 3, 4, 5, 6, 7
) per_bucket
GROUP BY namespace_id, endpoint_id, endpoint_name, token_id, at, status;

DROP TRIGGER namespaces_delete_usage ON namespaces;
DROP FUNCTION usage_records_follow_namespace();
DROP TABLE usage_records;

-- A deleted namespace takes its usage with it (as before).
CREATE FUNCTION usage_follows_namespace() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM usage_counts WHERE namespace_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER namespaces_delete_usage AFTER DELETE ON namespaces
    FOR EACH ROW EXECUTE FUNCTION usage_follows_namespace();
