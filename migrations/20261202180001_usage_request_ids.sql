-- Each usage record carries the id the gateway gave its request, unique, so a batch
-- written twice (its INSERT committed but the answer was lost, e.g. a connection of a
-- stopping runtime, and the batch was kept for a retry) is counted once.
ALTER TABLE usage_records ADD COLUMN request_id UUID;
CREATE UNIQUE INDEX usage_records_request_id ON usage_records (request_id) WHERE request_id IS NOT NULL;
