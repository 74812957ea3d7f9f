-- Commit order at any backlog, and a ring for every raw INSERT.
--
-- Positions must follow commit order for every two transactions that wrote the same row.
-- Row locks give the order: a transaction that writes a row another one wrote waits for that
-- one's commit, so every outbox id of the earlier transaction is below the later one's row
-- for it, and so below the later one's largest id (its "end", txmax). Within a batch the
-- claim orders transactions by their end. Across batches, 0002-0008 took "the first N rows by
-- id plus the rest of their transactions": a transaction that wrote an early row, stayed open
-- while others committed, then updated a row after one of them did, was sequenced in the batch
-- of its first row, before the transaction it followed.
--
-- Now a batch holds only transactions that END within the head: the first N unsequenced rows
-- by id end at id C (the cut), and a transaction whose rows go on beyond C waits for a later
-- claim. Every transaction that a batch member follows on a shared row ended earlier, so it
-- ends within the cut too, and it committed earlier, so it was visible to the same snapshot:
-- it is in the same batch, ordered before, or in an earlier one. A batch never splits a
-- transaction, as before. When every transaction of the head goes on beyond it (one larger
-- than N rows, or several straddling the cut), the cut moves to where the first of them
-- ends, so the claim always makes progress.
--
-- Finding whether a transaction goes on beyond the cut is an index lookup: the index of
-- unsequenced rows by transaction now also holds the id, so max(id) of a transaction is the
-- last entry of its range.

CREATE INDEX outbox_unsequenced_tx_end ON outbox (txid, id) WHERE pos IS NULL;
DROP INDEX outbox_unsequenced_txid;

CREATE OR REPLACE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int, p_disarm boolean)
RETURNS TABLE (r_pos bigint, r_topic text, r_envelope text, r_created_at timestamptz, r_error text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_last   bigint;
    v_upto   bigint := 9223372036854775807;  -- pass 1: the first p_limit rows, wherever they end
    v_limit  int    := p_limit;
    v_ids    bigint[];
    v_pos    bigint[];
    v_tpos   bigint[];
    v_final  boolean[];
    v_topics text[];
BEGIN
    -- A scalar subquery with ORDER BY/LIMIT, not EXISTS (see 0004): one index lookup.
    IF (SELECT o.id FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT 1) IS NULL THEN
        -- Nothing to claim: no write but a hint, so no fsync (see 0004).
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE outbox_relay_state SET published_pos = p_published
         WHERE id = 1 AND published_pos < p_published;
        RETURN;
    END IF;

    -- The state row lock serializes claims (see 0002); every statement below sees what the
    -- claims before this one sequenced.
    SELECT s.last_pos INTO v_last FROM outbox_relay_state s WHERE s.id = 1 FOR UPDATE;

    FOR pass IN 1..2 LOOP
        WITH head AS (
            SELECT o.id, o.topic, o.txid FROM outbox o
             WHERE o.pos IS NULL AND o.id <= v_upto
             ORDER BY o.id LIMIT v_limit
        ), ended AS (
            -- A scalar subquery, so it stays one index lookup per row whatever the plan.
            SELECT h.id, h.topic, max(h.id) OVER () AS cut,
                   (SELECT max(x.id) FROM outbox x WHERE x.txid = h.txid AND x.pos IS NULL) AS txmax
              FROM head h
        ), ranked AS (
            SELECT e.id, e.topic, e.txmax,
                   row_number() OVER w AS trank,
                   lead(e.txmax) OVER w IS DISTINCT FROM e.txmax AS is_last
              FROM ended e
             WHERE e.txmax <= e.cut
            WINDOW w AS (PARTITION BY e.topic ORDER BY e.txmax, e.id)
        ), numbered AS (
            SELECT r.id, v_last + row_number() OVER (ORDER BY r.txmax, r.id) AS new_pos,
                   coalesce(ot.tpos, 0) + r.trank AS new_tpos, r.is_last, r.topic
              FROM ranked r LEFT JOIN outbox_topic ot ON ot.topic = r.topic
        )
        -- One Agg node feeds every aggregate the same rows in the same order (see 0006).
        SELECT array_agg(n.id), array_agg(n.new_pos), array_agg(n.new_tpos), array_agg(n.is_last),
               array_agg(n.topic)
          INTO v_ids, v_pos, v_tpos, v_final, v_topics
          FROM numbered n;
        EXIT WHEN v_ids IS NOT NULL OR pass = 2;

        -- Every transaction of the head goes on beyond it: cut where the first of them ends.
        SELECT min((SELECT max(x.id) FROM outbox x WHERE x.txid = h.txid AND x.pos IS NULL))
          INTO v_upto
          FROM (SELECT o.txid FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT p_limit) h;
        EXIT WHEN v_upto IS NULL;  -- nothing left: a concurrent claim took it
        v_limit := NULL;           -- every row up to the cut
    END LOOP;

    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    IF p_disarm AND pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
        PERFORM setval('outbox_doorbell_armed', 0, true);  -- at once, not at commit: see 0008
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

-- Raw INSERTs ring through a column default (0008), now of id as well as txid: 0008's txid
-- default alone missed an INSERT that passed its own txid (as capture and outbox_emit do),
-- which then waited for the relay's poll. An INSERT (or COPY) that names both id and txid,
-- as a restore of saved rows does, is published by the poll. A statement trigger would ring
-- for every INSERT whatever it names, but it costs every captured row ~14k instructions
-- (a trigger call; measured with bench.writer_cost), for writers that name both columns.
-- Capture and outbox_emit ring themselves and pass both columns, so they pay nothing here.
CREATE FUNCTION outbox_id_ringing() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        PERFORM outbox_ring_now();
    END IF;
    RETURN nextval('outbox_id_seq');
END;
$$;
ALTER TABLE outbox ALTER COLUMN id SET DEFAULT outbox_id_ringing();

-- outbox_emit and the capture trigger of 0008, passing id as well as txid.
CREATE OR REPLACE FUNCTION outbox_emit(p_topic text, p_type text, p_payload jsonb, p_entity_id text DEFAULT '')
RETURNS bigint LANGUAGE sql AS $$
    SELECT outbox_ring_now() WHERE current_setting('outbox.rung', true) IS DISTINCT FROM 'yes';
    INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, actor, source, request_id)
    VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), p_topic, p_type, p_entity_id, 'event', p_payload,
            nullif(current_setting('outbox.actor', true), ''),
            outbox_source(),
            nullif(current_setting('outbox.request_id', true), ''))
    RETURNING id
$$;

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
    -- assigned already (this is an AFTER ROW trigger: the tracked row is written). id and
    -- txid are passed to the INSERTs below: their defaults would ring once more (for raw INSERTs).
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
            NOTIFY outbox;
        END IF;
    END IF;

    IF TG_OP = 'INSERT' THEN
        new_doc := to_jsonb(NEW);
        INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), prefix || ':' || (new_doc ->> topic_col), entity, new_doc ->> 'id', 'insert', new_doc,
                ARRAY(SELECT k FROM jsonb_object_keys(new_doc) AS k WHERE k <> 'version' ORDER BY k),
                (new_doc ->> 'version')::bigint,
                nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSIF TG_OP = 'DELETE' THEN
        -- A delete is one more version of the row, so consumers order it after the last update.
        old_doc := to_jsonb(OLD);
        old_doc := old_doc || jsonb_build_object('version', (old_doc ->> 'version')::bigint + 1);
        INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), prefix || ':' || (old_doc ->> topic_col), entity, old_doc ->> 'id', 'delete', old_doc, '{}',
                (old_doc ->> 'version')::bigint,
                nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSE
        new_topic := prefix || ':' || (new_doc ->> topic_col);
        old_topic := prefix || ':' || (old_doc ->> topic_col);
        IF new_topic = old_topic THEN
            -- changed is not empty: the rows differ outside version (tested above), and NEW
            -- and OLD have the same columns.
            INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), new_topic, entity, new_doc ->> 'id', 'update', new_doc,
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
            INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), old_topic, entity, old_doc ->> 'id', 'delete', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), '')),
                   (nextval('outbox_id_seq'), pg_current_xact_id(), new_topic, entity, new_doc ->> 'id', 'insert', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), ''));
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
