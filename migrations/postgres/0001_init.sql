-- Durable topics on Postgres. Messages are partitioned by day on created_at so that retention
-- drops whole partitions instead of deleting rows.
CREATE TABLE IF NOT EXISTS topics (
    topic       TEXT   PRIMARY KEY,
    epoch       TEXT   NOT NULL,
    next_offset BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    topic      TEXT        NOT NULL,
    msg_offset BIGINT      NOT NULL,
    event      TEXT        NOT NULL,
    encoding   SMALLINT    NOT NULL,   -- 0 opaque bytes, 1 JSON text
    payload    BYTEA       NOT NULL,
    user_id    TEXT,
    client_id  TEXT,
    idem_key   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
) PARTITION BY RANGE (created_at);

-- Offsets are unique per topic by construction (assigned under the topic row's lock); a unique
-- index on a partitioned table would have to include created_at, so these are plain indexes.
CREATE INDEX IF NOT EXISTS messages_topic_offset ON messages (topic, msg_offset);
CREATE INDEX IF NOT EXISTS messages_topic_idem ON messages (topic, idem_key);

-- Creates the daily partitions from `days_back` days ago to `days_ahead` days ahead.
CREATE OR REPLACE FUNCTION locus_ensure_partitions(days_back INT, days_ahead INT) RETURNS INT
LANGUAGE plpgsql AS $$
DECLARE
    d DATE;
    made INT := 0;
BEGIN
    FOR i IN -days_back..days_ahead LOOP
        d := (now() AT TIME ZONE 'UTC')::date + i;
        IF to_regclass(format('messages_p%s', to_char(d, 'YYYYMMDD'))) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE messages_p%s PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
                to_char(d, 'YYYYMMDD'), d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

-- Drops the daily partitions that end on or before `cutoff`; returns how many were dropped.
CREATE OR REPLACE FUNCTION locus_drop_partitions_before(cutoff TIMESTAMPTZ) RETURNS INT
LANGUAGE plpgsql AS $$
DECLARE
    part RECORD;
    dropped INT := 0;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'messages' AND c.relname ~ '^messages_p[0-9]{8}$'
    LOOP
        IF (to_date(substr(part.relname, 11), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;
