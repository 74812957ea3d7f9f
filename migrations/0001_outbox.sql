-- The transactional outbox: one row per captured change, written by triggers in the
-- writer's own transaction, sequenced later by the relay leader (pos, tpos).
-- This file is the single source of truth for the schema; never edit it once merged,
-- add a new NNNN_name.sql instead.

CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    -- pg_current_xact_id() groups the rows of one transaction: a relay batch never splits it.
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    topic       text        NOT NULL,
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    op          text        NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'event')),
    data        jsonb       NOT NULL,
    changed     text[]      NOT NULL DEFAULT '{}',
    version     bigint,
    actor       text,
    source      text        NOT NULL DEFAULT 'sql'
                            CHECK (source IN ('api', 'ui', 'admin', 'shell', 'sql')),
    request_id  text,
    -- clock_timestamp(), not now(): the time of the write, close to the commit.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Assigned by the relay leader in its claiming transaction; NULL means "not sequenced yet".
    pos         bigint      UNIQUE,
    tpos        bigint,
    -- true on the last event of its transaction within its topic: clients apply a
    -- transaction's events on one topic together.
    tx_last     boolean,
    sequenced_at timestamptz,
    -- A poison row (one the relay cannot publish) keeps its position but carries the error.
    error       text
);

-- The relay's claim scans only unsequenced rows: a partial index keeps that cheap
-- however large the published history grows.
CREATE INDEX outbox_unsequenced ON outbox (id) WHERE pos IS NULL;
-- Resume by topic position (sync server catch-up).
CREATE UNIQUE INDEX outbox_topic_tpos ON outbox (topic, tpos) WHERE tpos IS NOT NULL;
-- Retention and replay by time window.
CREATE INDEX outbox_sequenced_at ON outbox (sequenced_at) WHERE pos IS NOT NULL;

-- Latest tpos per topic. The REST API reads it in the same transaction as an object's
-- state, so a client can subscribe "since" it and miss nothing.
CREATE TABLE outbox_topic (
    topic  text   PRIMARY KEY,
    tpos   bigint NOT NULL
);

-- One row: the relay's sequencing and publication progress, and the leader's identity.
CREATE TABLE outbox_relay_state (
    id              int         PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_pos        bigint      NOT NULL DEFAULT 0,   -- highest pos assigned
    published_pos   bigint      NOT NULL DEFAULT 0,   -- highest pos known to be published
    leader          text,
    leader_since    timestamptz,
    heartbeat_at    timestamptz
);
INSERT INTO outbox_relay_state (id) VALUES (1);

-- The doorbell. A NOTIFY serializes the commits of every transaction that sends one, so
-- writers ring only while the relay is asleep ("armed"); a busy relay keeps draining
-- unrung. The relay arms before its last empty drain and disarms when it wakes.
CREATE TABLE outbox_doorbell (
    id     int     PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    armed  boolean NOT NULL DEFAULT true
);
INSERT INTO outbox_doorbell (id) VALUES (1);

-- Deferred to commit time so the armed flag is read as late as possible: a writer that
-- read "disarmed" committed before the relay's final drain could have missed it.
CREATE FUNCTION outbox_ring() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Ring at most once per transaction (NOTIFY would fold duplicates anyway, but
    -- skipping the lookup keeps bulk writes cheap).
    IF current_setting('outbox.rung', true) = 'yes' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('outbox.rung', 'yes', true);
    IF (SELECT armed FROM outbox_doorbell WHERE id = 1) THEN
        NOTIFY outbox;
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER outbox_doorbell_ring
    AFTER INSERT ON outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION outbox_ring();

-- Provenance, set transaction-locally by Django (set_config(..., true)); a writer that
-- sets nothing is recorded as 'sql'.
CREATE FUNCTION outbox_source() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('outbox.source', true), ''), 'sql')
$$;

-- Explicit domain events (not row changes), in the caller's transaction.
CREATE FUNCTION outbox_emit(p_topic text, p_type text, p_payload jsonb, p_entity_id text DEFAULT '')
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO outbox (topic, entity, entity_id, op, data, actor, source, request_id)
    VALUES (p_topic, p_type, p_entity_id, 'event', p_payload,
            nullif(current_setting('outbox.actor', true), ''),
            outbox_source(),
            nullif(current_setting('outbox.request_id', true), ''))
    RETURNING id
$$;

-- Tracked tables carry a "version" column that this BEFORE trigger owns: row locks
-- serialize writers of one row, so version order is that row's commit order.
-- An UPDATE that changes nothing keeps its version and produces no event.
CREATE FUNCTION outbox_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.version := 1;
    ELSIF (to_jsonb(NEW) - 'version') = (to_jsonb(OLD) - 'version') THEN
        NEW.version := OLD.version;
    ELSE
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;

-- The capture trigger. Arguments: entity name, the column whose value names the topic,
-- and the topic prefix; e.g. outbox_capture('item', 'checklist_id', 'checklist').
-- A change that moves a row between topics emits a delete on the old topic and an
-- insert on the new one.
CREATE FUNCTION outbox_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    entity      text := TG_ARGV[0];
    topic_col   text := TG_ARGV[1];
    prefix      text := TG_ARGV[2];
    new_doc     jsonb;
    old_doc     jsonb;
    new_topic   text;
    old_topic   text;
    changed_cols text[];
    v_actor     text := nullif(current_setting('outbox.actor', true), '');
    v_source    text := outbox_source();
    v_request   text := nullif(current_setting('outbox.request_id', true), '');
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_doc := to_jsonb(NEW);
        new_topic := prefix || ':' || (new_doc ->> topic_col);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_doc := to_jsonb(OLD);
        old_topic := prefix || ':' || (old_doc ->> topic_col);
    END IF;

    IF TG_OP = 'INSERT' THEN
        SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO changed_cols
          FROM jsonb_object_keys(new_doc - 'version') AS k;
        INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (new_topic, entity, new_doc ->> 'id', 'insert', new_doc, changed_cols,
                (new_doc ->> 'version')::bigint, v_actor, v_source, v_request);
    ELSIF TG_OP = 'DELETE' THEN
        -- A delete is one more version of the row, so consumers order it after the last update.
        old_doc := old_doc || jsonb_build_object('version', (old_doc ->> 'version')::bigint + 1);
        INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (old_topic, entity, old_doc ->> 'id', 'delete', old_doc, '{}',
                (old_doc ->> 'version')::bigint, v_actor, v_source, v_request);
    ELSE
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed_cols
          FROM jsonb_each(new_doc) AS n
         WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key;
        IF cardinality(changed_cols) = 0 THEN
            RETURN NULL;  -- no difference, no event
        END IF;
        IF new_topic = old_topic THEN
            INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (new_topic, entity, new_doc ->> 'id', 'update', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint, v_actor, v_source, v_request);
        ELSE
            INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (old_topic, entity, old_doc ->> 'id', 'delete', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint, v_actor, v_source, v_request),
                   (new_topic, entity, new_doc ->> 'id', 'insert', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint, v_actor, v_source, v_request);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- Attach capture to a table: outbox_track('checklists_item', 'item', 'checklist_id', 'checklist').
-- Idempotent, so a later migration can re-run it after changing the table.
CREATE FUNCTION outbox_track(p_table regclass, p_entity text, p_topic_col text, p_prefix text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_version ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_capture ON %s', p_table);
    EXECUTE format(
        'CREATE TRIGGER outbox_version BEFORE INSERT OR UPDATE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_bump_version()', p_table);
    EXECUTE format(
        'CREATE TRIGGER outbox_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_capture(%L, %L, %L)',
        p_table, p_entity, p_topic_col, p_prefix);
END;
$$;
