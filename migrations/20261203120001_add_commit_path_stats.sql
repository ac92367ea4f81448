-- What a commit keeps about its paths so the next commit derives metadata
-- (file extensions, safetensors parameter sums) from its own change instead of
-- the whole listing (registry::path_stats). NULL for commits made before:
-- their children compute it once from the full listing.
ALTER TABLE commits ADD COLUMN path_stats JSONB;
