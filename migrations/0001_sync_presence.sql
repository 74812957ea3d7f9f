-- Step 1: presence tables (see migrations/schema.sql).

-- Ephemeral by nature, so UNLOGGED: no WAL for a row that lives as long as a browser tab,
-- and after a PostgreSQL crash the tables come back empty, which is the truth (every sync
-- server lost its database connection and re-announces itself). Each sync server keeps
-- its row's heartbeat_at fresh every second; the others delete a server whose heartbeat is
-- older than a few seconds (killed with kill -9, cut off), and its presence with it
-- (ON DELETE CASCADE). Every change ends with pg_notify('sync_presence', <topic>) in the
-- same transaction, so a sync server that reads a topic's presence after the notification
-- sees the change.
CREATE UNLOGGED TABLE sync_presence_server (
    server       text PRIMARY KEY,              -- one sync-server process (a random id per start)
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNLOGGED TABLE sync_presence (
    server    text NOT NULL REFERENCES sync_presence_server (server) ON DELETE CASCADE,
    session   text NOT NULL,                    -- one connection (a browser tab) on that server
    topic     text NOT NULL,
    user_id   bigint NOT NULL,
    username  text NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (server, session, topic)
);

CREATE INDEX sync_presence_topic ON sync_presence (topic);
