-- Durable topics on SQLite: one row per topic (its epoch and next offset) and one per publication.
CREATE TABLE IF NOT EXISTS topics (
    topic       TEXT    PRIMARY KEY,
    epoch       TEXT    NOT NULL,
    next_offset INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    topic      TEXT    NOT NULL,
    msg_offset INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    encoding   INTEGER NOT NULL,   -- 0 opaque bytes, 1 JSON text
    payload    BLOB    NOT NULL,
    user_id    TEXT,
    client_id  TEXT,               -- the client's id, for idempotent re-sends
    idem_key   TEXT    NOT NULL,   -- per-topic unique: user + client id, or a server id
    created_at INTEGER NOT NULL,   -- milliseconds since the Unix epoch
    PRIMARY KEY (topic, msg_offset)
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS messages_topic_idem ON messages (topic, idem_key);
CREATE INDEX IF NOT EXISTS messages_created_at ON messages (created_at);
