-- Step 3: capture compiled per tracked table (see migrations/schema.sql, "Capture"). Each
-- tracked table gets its own three capture functions, with its entity name, topic column and
-- prefix as literals instead of trigger arguments; the events are the same. Every table that
-- the generic functions capture is tracked again with the arguments its triggers had (a
-- trigger an operator disabled stays disabled), and the generic functions go.

-- The name of a tracked table's capture function of one kind ('insert', 'update', 'delete'),
-- schema-qualified and quoted: outbox_capture_<kind>_<table>, in the table's schema, cut to
-- PostgreSQL's 63 characters (two tables of one schema whose names share their first 41
-- characters cannot both be tracked: the second outbox_track fails, as their functions'
-- names would be the same).
CREATE FUNCTION outbox_capture_function(p_table regclass, p_kind text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('%I.%I', n.nspname, left(format('outbox_capture_%s_%s', p_kind, c.relname), 63))
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_table
$$;

-- Detach capture from a table: its triggers and capture functions go (call it before
-- dropping a tracked table, or its functions stay behind). Idempotent.
CREATE FUNCTION outbox_untrack(p_table regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS outbox_version ON %s', p_table);
    FOREACH kind IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'outbox_capture_' || kind, p_table);
        EXECUTE format('DROP FUNCTION IF EXISTS %s()', outbox_capture_function(p_table, kind));
    END LOOP;
END;
$$;

-- Attach capture to a table: outbox_track('checklists_item', 'item', 'checklist_id', 'checklist').
-- The table needs an "id" and a "version" column; its rows' topic is the prefix, a colon and
-- the topic column's value as to_jsonb renders it. Idempotent: run it again after changing
-- the table (its capture functions are compiled anew).
CREATE OR REPLACE FUNCTION outbox_track(p_table regclass, p_entity text, p_topic_col text, p_prefix text)
RETURNS void LANGUAGE plpgsql AS $track$
DECLARE
    -- Ring if armed and not rung yet (the doorbell, above).
    ring constant text := $$
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1
       AND current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        rung := set_config('outbox.rung', 'yes', true);
        NOTIFY outbox;
    END IF;$$;
    -- One outbox row's values: format(row_values, topic, entity, entity_id, op, data, changed,
    -- version) with expressions (entity and op as literals); ids and provenance as for every row.
    insert_into constant text := 'INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, changed,'
                                 ' version, actor, source, request_id)';
    row_values constant text := $$(nextval('outbox_id_seq'), pg_current_xact_id(), %s, %L, %s, %L, %s, %s, %s,
                nullif(current_setting('outbox.actor', true), ''),
                coalesce(nullif(current_setting('outbox.source', true), ''), 'sql'),
                nullif(current_setting('outbox.request_id', true), ''))$$;
    -- The body of a capture function that writes one outbox row: a declaration, the ring,
    -- the INSERT and its values.
    one_row constant text := $$
DECLARE
    %s
    rung text;
BEGIN%s
    %s
    VALUES %s;
    RETURN NULL;
END$$;
    new_topic_of constant text := format('%L || (new_doc ->> %L)', p_prefix || ':', p_topic_col);
    old_topic_of constant text := format('%L || (old_doc ->> %L)', p_prefix || ':', p_topic_col);
    body text;
    kind text;
BEGIN
    PERFORM outbox_untrack(p_table);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN version SET DEFAULT 1', p_table);
    EXECUTE format(
        'CREATE TRIGGER outbox_version BEFORE UPDATE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION outbox_bump_version()', p_table);
    FOREACH kind IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        body := CASE kind
        WHEN 'insert' THEN format(one_row, 'new_doc jsonb := to_jsonb(NEW);', ring, insert_into,
            format(row_values, new_topic_of, p_entity, 'NEW.id::text', 'insert', 'new_doc', $$'{}'$$, 'NEW.version'))
        WHEN 'update' THEN format($$
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
    END IF;%s
    new_doc := to_jsonb(NEW);
    old_doc := to_jsonb(OLD);
    new_topic := %s;
    old_topic := %s;
    changed := ARRAY(SELECT n.key FROM jsonb_each(new_doc) AS n
                      WHERE n.key <> 'version' AND n.value IS DISTINCT FROM old_doc -> n.key ORDER BY n.key);
    IF new_topic = old_topic THEN
        %s
        VALUES %s;
    ELSE
        -- A move between topics: a delete on the old one and an insert on the new one.
        %s
        VALUES %s,
               %s;
    END IF;
    RETURN NULL;
END$$, ring, new_topic_of, old_topic_of,
            insert_into, format(row_values, 'new_topic', p_entity, 'NEW.id::text', 'update', 'new_doc', 'changed', 'NEW.version'),
            insert_into, format(row_values, 'old_topic', p_entity, 'NEW.id::text', 'delete', 'new_doc', 'changed', 'NEW.version'),
                         format(row_values, 'new_topic', p_entity, 'NEW.id::text', 'insert', 'new_doc', 'changed', 'NEW.version'))
        ELSE format(one_row, $$old_doc jsonb := to_jsonb(OLD) || jsonb_build_object('version', OLD.version + 1);$$,
            ring, insert_into,
            format(row_values, old_topic_of, p_entity, 'OLD.id::text', 'delete', 'old_doc', $$'{}'$$, 'OLD.version + 1'))
        END;
        EXECUTE format('CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',
                       outbox_capture_function(p_table, kind), body);
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s()',
                       'outbox_capture_' || kind, upper(kind), p_table, outbox_capture_function(p_table, kind));
    END LOOP;
END;
$track$;

DO $step$
DECLARE
    t      record;
    rest   bytea;
    cut    int;
    args   text[];
    names  text[];
    states text[];
BEGIN
    FOR t IN SELECT tg.tgrelid::regclass AS tbl, tg.tgargs, tg.tgnargs
               FROM pg_trigger tg
              WHERE tg.tgname = 'outbox_capture_insert' AND tg.tgfoid = 'outbox_capture_insert()'::regprocedure
    LOOP
        -- The trigger's arguments, each ended by a zero byte: entity, topic column, and the
        -- prefix with the colon outbox_track added.
        rest := t.tgargs;
        args := '{}';
        FOR i IN 1..t.tgnargs LOOP
            cut := position('\x00'::bytea IN rest);
            args := args || convert_from(substring(rest FOR cut - 1), current_setting('server_encoding'));
            rest := substring(rest FROM cut + 1);
        END LOOP;
        -- Capture an operator switched off (ALTER TABLE ... DISABLE TRIGGER) stays off, and
        -- a replica-mode setting stays as it was ('O', the default: enabled).
        SELECT array_agg(tgname::text), array_agg(tgenabled::text) INTO names, states
          FROM pg_trigger
         WHERE tgrelid = t.tbl AND tgname IN ('outbox_version', 'outbox_capture_insert',
                                              'outbox_capture_update', 'outbox_capture_delete');
        PERFORM outbox_track(t.tbl, args[1], args[2], left(args[3], -1));
        FOR i IN 1..coalesce(array_length(names, 1), 0) LOOP
            CONTINUE WHEN states[i] = 'O';
            EXECUTE format('ALTER TABLE %s %s TRIGGER %I', t.tbl,
                           CASE states[i] WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                          ELSE 'ENABLE ALWAYS' END, names[i]);
        END LOOP;
    END LOOP;
END;
$step$;

DROP FUNCTION outbox_capture_insert();
DROP FUNCTION outbox_capture_update();
DROP FUNCTION outbox_capture_delete();
