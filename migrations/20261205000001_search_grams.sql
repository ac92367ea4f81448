-- Search terms the trigram index cannot serve (one or two characters, or
-- punctuation such as `a..` or `---`, from which pg_trgm extracts no
-- trigram and so reads its whole index) are looked up by the characters and
-- character pairs of the lower-cased id instead: an expression GIN index
-- over `search_grams(search_key)`. Its statistics (collected for the
-- expression) let the planner tell a rare pair (read the few rows, sort
-- them) from a common one (walk the sort order and stop at the page).
CREATE FUNCTION search_grams(k text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
  SELECT coalesce(array_agg(DISTINCT g), '{}') FROM (
    SELECT substr(k, i, 1) AS g FROM generate_series(1, length(k)) i
    UNION ALL
    SELECT substr(k, i, 2) FROM generate_series(1, length(k) - 1) i
  ) s
$$;

CREATE INDEX repos_search_grams ON repos USING gin (search_grams(search_key));
ANALYZE repos;
