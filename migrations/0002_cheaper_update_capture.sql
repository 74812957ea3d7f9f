-- Step 2: cheaper update capture (see migrations/schema.sql). The version trigger compares
-- the rows' stored bytes instead of their jsonb renderings, and the update capture computes
-- `changed` inside its INSERT. Same triggers, same events.

CREATE OR REPLACE FUNCTION outbox_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version;
    IF NEW *<> OLD THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION outbox_capture_update() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF new_topic = old_topic THEN
        -- `changed` computed inside the INSERT: one executor run per captured row, not two.
        INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed, version, actor, source, request_id)
        VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), new_topic, TG_ARGV[0], NEW.id::text, 'update', new_doc,
                ARRAY(SELECT n.key FROM jsonb_each(new_doc) AS n
                       WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key ORDER BY n.key),
                NEW.version,
                nullif(current_setting('outbox.actor', true), ''), coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
                nullif(current_setting('outbox.request_id', true), ''));
    ELSE
        -- A move between topics: a delete on the old one and an insert on the new one.
        changed := ARRAY(SELECT n.key FROM jsonb_each(new_doc) AS n
                          WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key ORDER BY n.key);
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
