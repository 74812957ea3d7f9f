-- Lean capture: the same rows, the same invariants, less work per writer transaction.
--
-- Where a single-row write into a tracked table spent its capture time (2-CPU dev VM,
-- synchronous_commit off, backend CPU per transaction: ~14 us untracked, ~65-95 us tracked):
-- not in the outbox row itself but in starting the statements that write it.
--  * outbox's two CHECK constraints are re-read from their catalog text (stringToNode) and
--    re-planned by every statement that inserts into outbox: 11-17 us of a 25-38 us
--    single-row INSERT. The same rules as domain constraints are compiled once per
--    session (type cache): the INSERT drops to 15-20 us.
--  * the doorbell was a deferred per-row constraint trigger: an event queued per row, and at
--    commit a trigger call running two queries. The capture trigger now rings itself, with
--    one query, once per transaction; the constraint trigger remains for raw INSERTs only.
--  * the capture function ran a separate query for `changed`; it is now a sub-select of
--    the INSERT (one statement per event), and a no-op update is detected without a query.
-- Together: -15% backend CPU per single-row insert or update transaction (measured in
-- pairs, both schemas at the same time). Not done, measured too small to pay: a partial
-- unique index for pos (~0-2 us), dropping an unsequenced index (~2 us); a statement-level
-- trigger with transition tables does not help single-row writes (one INSERT either way).

-- op and source: the CHECKs of 0001, as domain constraints. A domain over text reads as
-- text (clients see the text type), compares with text, and concatenates as text. The
-- domains are created without constraints first so that changing the column types does not
-- rewrite the table; adding the constraints then only scans it.
CREATE DOMAIN outbox_op_type AS text;
CREATE DOMAIN outbox_source_type AS text;
ALTER TABLE outbox
    DROP CONSTRAINT outbox_op_check,
    DROP CONSTRAINT outbox_source_check,
    ALTER COLUMN op TYPE outbox_op_type,
    ALTER COLUMN source TYPE outbox_source_type;
ALTER DOMAIN outbox_op_type
    ADD CONSTRAINT outbox_op_check CHECK (VALUE IN ('insert', 'update', 'delete', 'event'));
ALTER DOMAIN outbox_source_type
    ADD CONSTRAINT outbox_source_check CHECK (VALUE IN ('api', 'ui', 'admin', 'shell', 'sql'));

-- The doorbell, rung by the writer in its transaction (NOTIFY is delivered at commit, and
-- discarded with the (sub)transaction that sent it), at most once per transaction.
--
-- 0001 read "armed" at commit; this reads it at the transaction's first outbox row. No
-- commit is left unannounced by that: the writer has its transaction id before it reads
-- (see outbox_ring_now), so if it read "disarmed", the relay's arming became visible after
-- that id was assigned; right after arming, the relay records the transactions in progress,
-- drains, and once those have ended drains again (outbox_relay/relay.py, _lead and
-- _watch_unrung). The writer is either committed before that first drain or in the list.
-- What changes is latency in one case: a transaction still running when the relay's watch
-- gives up (ARMED_WATCH, 0.5 s) is published by the next poll (OUTBOX_RELAY_POLL_INTERVAL)
-- instead of a ring. Under REPEATABLE READ the read uses the transaction's first snapshot,
-- at commit as well as here, so that case is as in 0001.
-- The 'outbox.rung' flag is transaction-local and shared with 0001's outbox_ring(); a
-- rolled-back savepoint resets it together with the NOTIFY it discards.
CREATE FUNCTION outbox_ring_now() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    rung text;
    xid  xid8;
BEGIN
    -- The argument above needs the transaction id assigned before "armed" is read; a caller
    -- such as outbox_emit may not have written anything yet.
    xid := pg_current_xact_id();
    rung := set_config('outbox.rung', 'yes', true);  -- an assignment, not PERFORM: no query
    IF (SELECT armed FROM outbox_doorbell WHERE id = 1) THEN
        NOTIFY outbox;
    END IF;
END;
$$;

-- Rows inserted by neither the capture trigger nor outbox_emit (raw INSERTs) still ring at
-- commit as in 0001; rows of a transaction that has rung already queue nothing (the WHEN is
-- evaluated as the row is inserted, the trigger itself at commit).
DROP TRIGGER outbox_doorbell_ring ON outbox;
CREATE CONSTRAINT TRIGGER outbox_doorbell_ring
    AFTER INSERT ON outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (current_setting('outbox.rung', true) IS DISTINCT FROM 'yes')
    EXECUTE FUNCTION outbox_ring();

CREATE OR REPLACE FUNCTION outbox_emit(p_topic text, p_type text, p_payload jsonb, p_entity_id text DEFAULT '')
RETURNS bigint LANGUAGE sql AS $$
    SELECT outbox_ring_now() WHERE current_setting('outbox.rung', true) IS DISTINCT FROM 'yes';
    INSERT INTO outbox (topic, entity, entity_id, op, data, actor, source, request_id)
    VALUES (p_topic, p_type, p_entity_id, 'event', p_payload,
            nullif(current_setting('outbox.actor', true), ''),
            outbox_source(),
            nullif(current_setting('outbox.request_id', true), ''))
    RETURNING id
$$;

-- The capture trigger of 0001, same arguments and same rows: one INSERT per event and no
-- other query (plus, once per transaction, the doorbell).
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
    -- assigned already (this is an AFTER ROW trigger: the tracked row is written).
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        IF (SELECT armed FROM outbox_doorbell WHERE id = 1) THEN
            NOTIFY outbox;
        END IF;
    END IF;

    IF TG_OP = 'INSERT' THEN
        new_doc := to_jsonb(NEW);
        INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (prefix || ':' || (new_doc ->> topic_col), entity, new_doc ->> 'id', 'insert', new_doc,
                ARRAY(SELECT k FROM jsonb_object_keys(new_doc) AS k WHERE k <> 'version' ORDER BY k),
                (new_doc ->> 'version')::bigint,
                nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSIF TG_OP = 'DELETE' THEN
        -- A delete is one more version of the row, so consumers order it after the last update.
        old_doc := to_jsonb(OLD);
        old_doc := old_doc || jsonb_build_object('version', (old_doc ->> 'version')::bigint + 1);
        INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (prefix || ':' || (old_doc ->> topic_col), entity, old_doc ->> 'id', 'delete', old_doc, '{}',
                (old_doc ->> 'version')::bigint,
                nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSE
        new_topic := prefix || ':' || (new_doc ->> topic_col);
        old_topic := prefix || ':' || (old_doc ->> topic_col);
        IF new_topic = old_topic THEN
            -- changed is not empty: the rows differ outside version (tested above), and NEW
            -- and OLD have the same columns.
            INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (new_topic, entity, new_doc ->> 'id', 'update', new_doc,
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
            INSERT INTO outbox (topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
            VALUES (old_topic, entity, old_doc ->> 'id', 'delete', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), '')),
                   (new_topic, entity, new_doc ->> 'id', 'insert', new_doc, changed_cols,
                    (new_doc ->> 'version')::bigint,
                    nullif(current_setting('outbox.actor', true), ''), outbox_source(),
                    nullif(current_setting('outbox.request_id', true), ''));
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
