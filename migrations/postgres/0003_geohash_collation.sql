-- Nearby scans ask for geohash ranges ([cell, cell~)) with plain >= and <. Under the
-- database's default collation those comparisons cannot use a text_pattern_ops index, and
-- Postgres fell back to a full scan. Geohashes are ASCII base32: byte order ("C") is their
-- order, and a plain btree on the C-collated column serves the ranges.
DROP INDEX IF EXISTS geo_messages_geohash;
ALTER TABLE geo_messages ALTER COLUMN geohash TYPE TEXT COLLATE "C";
CREATE INDEX IF NOT EXISTS geo_messages_geohash ON geo_messages (geohash);
