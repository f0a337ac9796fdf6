-- Geo messages: pinned to a point, found by geohash prefix then exact distance. The table is
-- clustered on the geohash (WITHOUT ROWID, geohash first in the key), so a prefix range reads
-- neighbouring pages instead of one random lookup per message.
CREATE TABLE IF NOT EXISTS geo_messages (
    id         TEXT    NOT NULL,   -- the client's id
    user_id    TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    lat        REAL    NOT NULL,
    lng        REAL    NOT NULL,
    radius_m   REAL    NOT NULL,
    geohash    TEXT    NOT NULL,   -- 9 characters
    created_at INTEGER NOT NULL,   -- milliseconds since the Unix epoch
    PRIMARY KEY (geohash, user_id, id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS geo_messages_user_id ON geo_messages (user_id, id);
CREATE INDEX IF NOT EXISTS geo_messages_created_at ON geo_messages (created_at);
