-- The doorbell, cheaper for writers: on a tracked table's single-row insert transaction,
-- capture cost ~411k CPU instructions in the backend against ~118k without capture and
-- ~268k for issue 3's reference row trigger (valgrind, `postgres --single`, 2,000 inserts;
-- README "Performance"). Two pieces of it were the doorbell's:
--  * Reading the armed flag from its one-row table is a query (portal, snapshot, executor
--    start and end): ~26k per writing transaction. The flag is now a sequence, 1 = armed,
--    read with pg_sequence_last_value() (the function behind the pg_sequences view), which
--    plpgsql evaluates as a simple expression: ~6k. A writer needs SELECT (or USAGE) on the
--    sequence, as it needed SELECT on the table.
--    setval() is not transactional: arming and disarming take effect at once, not at
--    commit. For 0003's argument that is as good: the relay arms, then records the
--    transactions in progress (outbox_relay/listener.py); a writer that read "disarmed"
--    had its transaction id before that read, so before the arming, so it is among those
--    recorded or had committed before the relay's next drain. A claim that disarms and then
--    fails leaves the bell disarmed while the relay is awake anyway; it arms again before
--    it sleeps.
--  * Raw INSERTs into outbox (neither capture nor outbox_emit) rang through a deferred
--    constraint trigger with a WHEN clause, and PostgreSQL reads a trigger's WHEN from the
--    catalog (stringToNode) and compiles it for every statement that inserts into the
--    table: for the capture trigger's own INSERT, once per captured row, ~30k. Raw INSERTs
--    now ring through txid's default (outbox_txid_ringing), at their first row; capture
--    and outbox_emit pass txid themselves, and ring themselves, as since 0003.
-- Together ~-50k instructions per single-row writing transaction (~-12%).
--
-- outbox_doorbell stays readable as a view (status, tests): (id, armed).

CREATE SEQUENCE outbox_doorbell_armed MINVALUE 0 MAXVALUE 1 NO CYCLE;
SELECT setval('outbox_doorbell_armed', (SELECT armed::int FROM outbox_doorbell WHERE id = 1), true);

DROP TRIGGER outbox_doorbell_ring ON outbox;
DROP FUNCTION outbox_ring();
DROP TABLE outbox_doorbell;
CREATE VIEW outbox_doorbell AS
    SELECT 1 AS id, pg_sequence_last_value('outbox_doorbell_armed') = 1 AS armed;

-- Asynchronous commit: setval assigns a transaction id, whose commit would wait for the
-- disk, and the flag is a hint (polling is the safety net).
CREATE OR REPLACE FUNCTION outbox_set_doorbell(p_armed boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) IS DISTINCT FROM p_armed::int THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        PERFORM setval('outbox_doorbell_armed', p_armed::int, true);
    END IF;
END;
$$;

-- 0003's ring, reading the sequence.
CREATE OR REPLACE FUNCTION outbox_ring_now() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    rung text;
    xid  xid8;
BEGIN
    -- 0003's argument needs the transaction id assigned before "armed" is read.
    xid := pg_current_xact_id();
    rung := set_config('outbox.rung', 'yes', true);  -- an assignment, not PERFORM: no query
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
        NOTIFY outbox;
    END IF;
END;
$$;

-- txid's default: a raw INSERT rings at its transaction's first outbox row.
CREATE FUNCTION outbox_txid_ringing() RETURNS xid8 LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        PERFORM outbox_ring_now();
    END IF;
    RETURN pg_current_xact_id();
END;
$$;
ALTER TABLE outbox ALTER COLUMN txid SET DEFAULT outbox_txid_ringing();

CREATE OR REPLACE FUNCTION outbox_emit(p_topic text, p_type text, p_payload jsonb, p_entity_id text DEFAULT '')
RETURNS bigint LANGUAGE sql AS $$
    SELECT outbox_ring_now() WHERE current_setting('outbox.rung', true) IS DISTINCT FROM 'yes';
    INSERT INTO outbox (txid, topic, entity, entity_id, op, data, actor, source, request_id)
    VALUES (pg_current_xact_id(), p_topic, p_type, p_entity_id, 'event', p_payload,
            nullif(current_setting('outbox.actor', true), ''),
            outbox_source(),
            nullif(current_setting('outbox.request_id', true), ''))
    RETURNING id
$$;

-- The capture trigger of 0003, reading the sequence and passing txid.
CREATE OR REPLACE FUNCTION outbox_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    entity      text := TG_ARGV[0];
    topic_col   text := TG_ARGV[1];
    prefix      text := TG_ARGV[2];
    new_doc     jsonb;
    old_doc     jsonb;
    new_topic   text;
    old_topic   text;
    changed_cols text[];
    rung        text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        new_doc := to_jsonb(NEW);
        old_doc := to_jsonb(OLD);
        -- No difference, no event (and no ring): outbox_bump_version's own test.
        IF (new_doc - 'version') = (old_doc - 'version') THEN
            RETURN NULL;
        END IF;
    END IF;
    -- outbox_ring_now(), inlined: this runs for every captured row. The transaction id is
    -- assigned already (this is an AFTER ROW trigger: the tracked row is written). txid is
    -- passed to the INSERTs below: its default would ring once more (for raw INSERTs).
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
            NOTIFY outbox;
        END IF;
    END IF;

    IF TG_OP = 'INSERT' THEN
        new_doc := to_jsonb(NEW);
        INSERT INTO outbox (txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (pg_current_xact_id(), prefix || ':' || (new_doc ->> topic_col), entity, new_doc ->> 'id', 'insert', new_doc,
                ARRAY(SELECT k FROM jsonb_object_keys(new_doc) AS k WHERE k <> 'version' ORDER BY k),
                (new_doc ->> 'version')::bigint,
                nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSIF TG_OP = 'DELETE' THEN
        -- A delete is one more version of the row, so consumers order it after the last update.
        old_doc := to_jsonb(OLD);
        old_doc := old_doc || jsonb_build_object('version', (old_doc ->> 'version')::bigint + 1);
        INSERT INTO outbox (txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (pg_current_xact_id(), prefix || ':' || (old_doc ->> topic_col), entity, old_doc ->> 'id', 'delete', old_doc, '{}',
                (old_doc ->> 'version')::bigint,
                nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSE
        new_topic := prefix || ':' || (new_doc ->> topic_col);
        old_topic := prefix || ':' || (old_doc ->> topic_col);
        IF new_topic = old_topic THEN
            -- changed is not empty: the rows differ outside version (tested above), and NEW
            -- and OLD have the same columns.
            INSERT INTO outbox (txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (pg_current_xact_id(), new_topic, entity, new_doc ->> 'id', 'update', new_doc,
                    ARRAY(SELECT n.key FROM jsonb_each(new_doc) AS n
                           WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key
                           ORDER BY n.key),
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), ''));
        ELSE
            -- A move: a delete on the old topic and an insert on the new one.
            changed_cols := ARRAY(SELECT n.key FROM jsonb_each(new_doc) AS n
                                   WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key
                                   ORDER BY n.key);
            IF cardinality(changed_cols) = 0 THEN
                RETURN NULL;
            END IF;
            INSERT INTO outbox (txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (pg_current_xact_id(), old_topic, entity, old_doc ->> 'id', 'delete', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), '')),
                   (pg_current_xact_id(), new_topic, entity, new_doc ->> 'id', 'insert', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), ''));
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- The claim of 0007, disarming through the sequence (only when it found work, as before).
CREATE OR REPLACE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int, p_disarm boolean)
RETURNS TABLE (r_pos bigint, r_topic text, r_envelope text, r_created_at timestamptz, r_error text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_last   bigint;
    v_ids    bigint[];
    v_pos    bigint[];
    v_tpos   bigint[];
    v_final  boolean[];
    v_topics text[];
    v_txids  xid8[];
BEGIN
    v_txids := ARRAY(SELECT DISTINCT h.txid
                       FROM (SELECT o.txid FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT p_limit) h);
    IF cardinality(v_txids) = 0 THEN
        -- Nothing to claim: no write but a hint, so no fsync (see 0004).
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE outbox_relay_state SET published_pos = p_published
         WHERE id = 1 AND published_pos < p_published;
        RETURN;
    END IF;

    SELECT s.last_pos INTO v_last FROM outbox_relay_state s WHERE s.id = 1 FOR UPDATE;

    WITH batch AS (
        SELECT o.id, o.topic, max(o.id) OVER (PARTITION BY o.txid) AS txmax
          FROM outbox o WHERE o.txid = ANY(v_txids) AND o.pos IS NULL
    ), ranked AS (
        SELECT b.id, b.topic, b.txmax,
               row_number() OVER w AS trank,
               lead(b.txmax) OVER w IS DISTINCT FROM b.txmax AS is_last
          FROM batch b
        WINDOW w AS (PARTITION BY b.topic ORDER BY b.txmax, b.id)
    ), numbered AS (
        SELECT r.id, v_last + row_number() OVER (ORDER BY r.txmax, r.id) AS new_pos,
               coalesce(ot.tpos, 0) + r.trank AS new_tpos, r.is_last, r.topic
          FROM ranked r LEFT JOIN outbox_topic ot ON ot.topic = r.topic
    )
    -- No ORDER BY in the aggregates (0004 sorted each of the five arrays): one Agg node
    -- feeds every aggregate the same rows in the same order, so the arrays stay aligned,
    -- and nothing below needs them in pos order (the UPDATE joins by id, the result is
    -- sorted by pos at the end).
    SELECT array_agg(n.id), array_agg(n.new_pos), array_agg(n.new_tpos), array_agg(n.is_last),
           array_agg(n.topic)
      INTO v_ids, v_pos, v_tpos, v_final, v_topics
      FROM numbered n;

    IF v_ids IS NULL THEN
        RETURN;  -- a concurrent claim took the head first (see above)
    END IF;

    IF p_disarm AND pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
        PERFORM setval('outbox_doorbell_armed', 0, true);  -- at once, not at commit: see above
    END IF;

    RETURN QUERY
    WITH state AS (
        UPDATE outbox_relay_state
           SET last_pos = v_last + cardinality(v_ids), published_pos = greatest(published_pos, p_published)
         WHERE id = 1
    ), counters AS (
        INSERT INTO outbox_topic AS t (topic, tpos)
        SELECT x.topic, max(x.tpos) FROM unnest(v_topics, v_tpos) AS x(topic, tpos) GROUP BY x.topic
        ON CONFLICT (topic) DO UPDATE SET tpos = excluded.tpos
    ), upd AS (
        UPDATE outbox o
           SET pos = n.pos, tpos = n.tpos, tx_last = n.is_last, sequenced_at = clock_timestamp(),
               error = coalesce(o.error, CASE WHEN pg_column_size(o.data) > p_max_bytes
                   THEN format('data is %s bytes, over the %s-byte limit', pg_column_size(o.data), p_max_bytes) END)
          FROM unnest(v_ids, v_pos, v_tpos, v_final) AS n(id, pos, tpos, is_last)
         WHERE o.id = ANY(v_ids) AND o.id = n.id
        RETURNING o.pos, o.topic, outbox_envelope(o) AS env, o.created_at, o.error
    )
    SELECT u.pos, u.topic, u.env, u.created_at, u.error FROM upd u ORDER BY u.pos;
END;
$$;
