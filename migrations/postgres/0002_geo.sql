-- Geo messages: pinned to a point, found by geohash prefix (text_pattern_ops ranges) then exact
-- distance.
CREATE TABLE IF NOT EXISTS geo_messages (
    id         TEXT             NOT NULL,
    user_id    TEXT             NOT NULL,
    content    TEXT             NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lng        DOUBLE PRECISION NOT NULL,
    radius_m   DOUBLE PRECISION NOT NULL,
    geohash    TEXT             NOT NULL,
    created_at TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (user_id, id)
);

CREATE INDEX IF NOT EXISTS geo_messages_geohash ON geo_messages (geohash text_pattern_ops);
CREATE INDEX IF NOT EXISTS geo_messages_created_at ON geo_messages (created_at);
