-- Rate limits shared by every hub replica (`--shared-rate-limits`): one token
-- bucket per caller and scope, refilled by time. A replica leases a few
-- tokens at a time (`rate_take`) and spends them locally, so N replicas
-- together allow the configured rate, not N times it. Unlogged: after a
-- crash the buckets start full again, which is what an idle caller gets.
CREATE UNLOGGED TABLE rate_buckets (
    key    TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at     TIMESTAMPTZ NOT NULL
);

-- Takes up to `want` whole tokens from the bucket `k` (created full):
-- how many were granted, and when none were, the seconds until one is.
CREATE FUNCTION rate_take(k TEXT, per_s DOUBLE PRECISION, burst DOUBLE PRECISION, want INT,
                          OUT granted INT, OUT wait_s DOUBLE PRECISION)
LANGUAGE plpgsql AS $$
DECLARE
    cur DOUBLE PRECISION;
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    INSERT INTO rate_buckets (key, tokens, at) VALUES (k, burst, t) ON CONFLICT (key) DO NOTHING;
    SELECT LEAST(burst, tokens + GREATEST(0, extract(epoch FROM t - at)) * per_s)
      INTO cur FROM rate_buckets WHERE key = k FOR UPDATE;
    granted := GREATEST(0, LEAST(want, floor(cur)))::int;
    UPDATE rate_buckets SET tokens = cur - granted, at = t WHERE key = k;
    wait_s := CASE WHEN granted > 0 THEN 0 ELSE (1 - cur) / per_s END;
END $$;
