-- Capture closer to a bare outbox insert (issue 16): one trigger per kind of write, no
-- work a row's outbox row does not need.
--
--  * Inserts: no BEFORE trigger (the version column defaults to 1), no `changed` list (an
--    insert's data is the whole row: `changed` is empty, as for a delete), entity id and
--    version read from NEW instead of the JSON document.
--  * The doorbell is read first: while it is disarmed (a busy relay) a writer reads one
--    sequence and nothing else; 'outbox.rung' is set only when it rings.
--  * Updates: the BEFORE trigger decides whether anything changed; the capture trigger
--    trusts its verdict (the version moved) instead of comparing the documents again.
--  * outbox_source() written out in each row's INSERT (a function call per row costs more).
--  * pos is unique among sequenced rows only: unsequenced rows (every new one) add no entry.

-- The version trigger runs on UPDATE only; a new row starts at the column's default.
CREATE OR REPLACE FUNCTION outbox_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (to_jsonb(NEW) - 'version') = (to_jsonb(OLD) - 'version') THEN
        NEW.version := OLD.version;
    ELSE
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION outbox_capture_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_doc jsonb := to_jsonb(NEW);
    rung    text;
BEGIN
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1
       AND current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        NOTIFY outbox;
    END IF;
    INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
    VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), TG_ARGV[2] || (new_doc ->> TG_ARGV[1]), TG_ARGV[0],
            NEW.id::text, 'insert', new_doc, '{}', NEW.version,
            nullif(current_setting('outbox.actor', true), ''), coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
            nullif(current_setting('outbox.request_id', true), ''));
    RETURN NULL;
END;
$$;

CREATE FUNCTION outbox_capture_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_doc   jsonb;
    old_doc   jsonb;
    new_topic text;
    old_topic text;
    changed   text[];
    rung      text;
BEGIN
    IF NEW.version = OLD.version THEN
        RETURN NULL;  -- outbox_bump_version found no difference: no event
    END IF;
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1
       AND current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        NOTIFY outbox;
    END IF;
    new_doc := to_jsonb(NEW);
    old_doc := to_jsonb(OLD);
    new_topic := TG_ARGV[2] || (new_doc ->> TG_ARGV[1]);
    old_topic := TG_ARGV[2] || (old_doc ->> TG_ARGV[1]);
    changed := ARRAY(SELECT n.key FROM jsonb_each(new_doc) AS n
                      WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key ORDER BY n.key);
    IF new_topic = old_topic THEN
        INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), new_topic, TG_ARGV[0], NEW.id::text, 'update', new_doc,
                changed, NEW.version,
                nullif(current_setting('outbox.actor', true), ''), coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSE
        -- A move between topics: a delete on the old one and an insert on the new one.
        INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), old_topic, TG_ARGV[0], NEW.id::text, 'delete', new_doc,
                changed, NEW.version,
                nullif(current_setting('outbox.actor', true), ''), coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
                nullif(current_setting('outbox.request_id', true), '')),
               (nextval('outbox_id_seq'), pg_current_xact_id(), new_topic, TG_ARGV[0], NEW.id::text, 'insert', new_doc,
                changed, NEW.version,
                nullif(current_setting('outbox.actor', true), ''), coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
                nullif(current_setting('outbox.request_id', true), ''));
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION outbox_capture_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- A delete is one more version of the row, so consumers order it after the last update.
    old_doc jsonb := to_jsonb(OLD) || jsonb_build_object('version', OLD.version + 1);
    rung    text;
BEGIN
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1
       AND current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        NOTIFY outbox;
    END IF;
    INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
    VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), TG_ARGV[2] || (old_doc ->> TG_ARGV[1]), TG_ARGV[0],
            OLD.id::text, 'delete', old_doc, '{}', OLD.version + 1,
            nullif(current_setting('outbox.actor', true), ''), coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
            nullif(current_setting('outbox.request_id', true), ''));
    RETURN NULL;
END;
$$;

-- Attach capture to a table: outbox_track('checklists_item', 'item', 'checklist_id', 'checklist').
-- The table needs an "id" and a "version" column. Idempotent: run it again after changing
-- the table (or to move a table from the capture of 0001).
CREATE OR REPLACE FUNCTION outbox_track(p_table regclass, p_entity text, p_topic_col text, p_prefix text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    topic_prefix text := p_prefix || ':';
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_version ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_capture ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_capture_insert ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_capture_update ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_capture_delete ON %s', p_table);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN version SET DEFAULT 1', p_table);
    EXECUTE format(
        'CREATE TRIGGER outbox_version BEFORE UPDATE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_bump_version()', p_table);
    EXECUTE format(
        'CREATE TRIGGER outbox_capture_insert AFTER INSERT ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_capture_insert(%L, %L, %L)', p_table, p_entity, p_topic_col, topic_prefix);
    EXECUTE format(
        'CREATE TRIGGER outbox_capture_update AFTER UPDATE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_capture_update(%L, %L, %L)', p_table, p_entity, p_topic_col, topic_prefix);
    EXECUTE format(
        'CREATE TRIGGER outbox_capture_delete AFTER DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_capture_delete(%L, %L, %L)', p_table, p_entity, p_topic_col, topic_prefix);
END;
$$;

-- Every table captured the old way moves to the new triggers (same arguments).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT tgrelid::regclass AS tbl, tgargs FROM pg_trigger
              WHERE tgname = 'outbox_capture' AND NOT tgisinternal LOOP
        PERFORM outbox_track(t.tbl, a[1], a[2], a[3])
           FROM (SELECT string_to_array(encode(t.tgargs, 'escape'), '\000') AS a) args;  -- each argument ends in a NUL
    END LOOP;
END
$$;
DROP FUNCTION outbox_capture();

ALTER TABLE outbox DROP CONSTRAINT outbox_pos_key;
CREATE UNIQUE INDEX outbox_pos ON outbox (pos) WHERE pos IS NOT NULL;
