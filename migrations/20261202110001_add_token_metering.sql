-- Token metering of text generation: completion tokens per request next to the prompt
-- tokens (`input_tokens`), and a daily token quota per namespace (prompt + completion
-- tokens per UTC day; NULL: unlimited).
ALTER TABLE usage_records ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE namespace_quotas ADD COLUMN daily_tokens BIGINT;
