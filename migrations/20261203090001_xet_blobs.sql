-- Xet-stored files as blobs (issue 12, §9). A shard that registers a file with a
-- verified SHA-256 also makes it a blob of the uploading repo, so the NDJSON
-- commit's `lfsFile` (oid = sha256) is checked exactly like an LFS upload's and
-- every byte route keeps reading blobs by sha256. Such a blob has no object
-- under blobs/: its bytes are the file's terms over stored xorbs, described by
-- the recipe object `xet/recipes/<sha256>` the storage layer reads instead.
-- xet_file is the Xet file hash (`X-Xet-Hash`, tree `xetHash`); NULL for a
-- blob stored whole. The reference keeps the file (and through
-- xet_file_xorbs its xorbs) from being collected while the blob exists.
ALTER TABLE blobs ADD COLUMN xet_file BYTEA REFERENCES xet_files(file_hash);
CREATE INDEX blobs_xet_file ON blobs (xet_file) WHERE xet_file IS NOT NULL;
