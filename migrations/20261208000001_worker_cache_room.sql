-- What each worker's model cache could give a new model's download (room under
-- its limits plus what it could evict), from its heartbeats: the scheduler
-- prefers workers where a model's files fit. NULL: not reported (older workers).
ALTER TABLE workers ADD COLUMN cache_room_bytes BIGINT;
