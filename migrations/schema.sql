-- The outbox schema as it stands: the source of truth a reader opens.
--
-- Everything the change-capture pipeline keeps in PostgreSQL: the outbox table and its
-- bookkeeping, the capture triggers that fill it in the writer's transaction, the doorbell
-- that wakes the relay, and the claim that sequences it. Nothing here knows the
-- application's tables: an application attaches capture to its own tables with
-- outbox_track() (the demo's are in portal/checklists/sql/schema.sql).
--
-- How it changes: `manage.py migrate` builds a new database from this file (the Django app
-- portal/outbox applies it). A change to a released schema edits this file AND adds a
-- numbered step beside it, migrations/NNNN_name.sql, that takes a database built from an
-- older schema to the new one; outbox_schema_version (at the end) records which steps a
-- database includes, so a step is skipped where this file already had it
-- (portal/outbox/sqlfiles.py). Released steps are never edited.
-- tests/portal/test_schema_sql.py proves that migrating yields exactly what this file declares.
--
-- Vocabulary: a writer's transaction inserts outbox rows (one per captured change); the relay
-- leader later "sequences" them, giving each a global position `pos` and a position `tpos`
-- within its topic; subscribers resume by those positions.


-- =========================================================================================
-- The outbox
-- =========================================================================================

-- Operations and sources as domains, not table CHECKs: a domain's constraint is compiled
-- once per session, a table CHECK once per INSERT statement, and every captured row is one.
CREATE DOMAIN outbox_op_type AS text
    CONSTRAINT outbox_op_check CHECK (VALUE IN ('insert', 'update', 'delete', 'event'));
CREATE DOMAIN outbox_source_type AS text
    CONSTRAINT outbox_source_check CHECK (VALUE IN ('api', 'ui', 'admin', 'shell', 'sql'));

-- One row per captured change, written in the writer's own transaction: a rolled-back
-- transaction leaves none, a committed one always leaves its rows.
-- fillfactor 50: the claim's UPDATE cannot be HOT (pos is indexed), but with room on the
-- page the new row version stays beside the old one, which halves the claim's WAL.
CREATE TABLE outbox (
    -- Allocation order, NOT commit order: ids of concurrent transactions interleave and
    -- commit in any order, so no reader may use `id > last_seen` as a cursor.
    id          bigserial   PRIMARY KEY,
    -- Groups one transaction's rows: a claim never splits a transaction.
    txid        xid8        NOT NULL,
    -- The object a viewer watches, e.g. "checklist:42". Compared as bytes (COLLATE "C"):
    -- topics are identifiers, never sorted for people.
    topic       text        COLLATE "C" NOT NULL,
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    op          outbox_op_type NOT NULL,
    -- The row after the change (before it, for a delete), as to_jsonb() renders it.
    data        jsonb       NOT NULL,
    -- The columns an update changed; empty for an insert and a delete (their data is the whole row).
    changed     text[]      NOT NULL DEFAULT '{}',
    -- The tracked row's version after the change (a delete counts as one more): row locks
    -- serialize writers of one row, so version order is that row's commit order.
    version     bigint,
    -- Provenance, from transaction- or session-local settings (outbox.actor,
    -- outbox.source, outbox.request_id); a writer that sets nothing is 'sql'.
    actor       text,
    source      outbox_source_type NOT NULL DEFAULT 'sql',
    request_id  text,
    -- clock_timestamp(): the time of the write, close to its commit (now() is the
    -- transaction's start).
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set by the relay leader in the claiming transaction; NULL means "not sequenced yet".
    -- pos is gapless over the table, tpos gapless within a topic; both follow commit order
    -- for any two transactions that wrote the same row (see outbox_claim).
    pos         bigint,
    tpos        bigint,
    -- true on the last row of its transaction within its topic: a subscriber applies one
    -- transaction's changes to a topic together.
    tx_last     boolean,
    sequenced_at timestamptz,
    -- A poison row (too large to publish) keeps its positions and carries the error.
    error       text
) WITH (fillfactor = 50);

-- pos is unique among sequenced rows; unsequenced rows (every new one) add no entry.
CREATE UNIQUE INDEX outbox_pos ON outbox (pos) WHERE pos IS NOT NULL;
-- The claim's head: unsequenced rows in id order. Partial, so it stays as small as the
-- backlog however long the published history grows.
CREATE INDEX outbox_unsequenced ON outbox (id) WHERE pos IS NULL;
-- Where each unsequenced transaction ends: max(id) of a txid is the last entry of its range.
-- Its predicate names tpos, not pos, though the two are NULL together (only the claim sets
-- them, in one UPDATE): so that a query asking for one txid's unsequenced rows by
-- `tpos IS NULL` can use this index and never outbox_unsequenced. VACUUM at a small backlog
-- leaves outbox_unsequenced estimated at a few entries until the next VACUUM or ANALYZE,
-- however large the backlog grows; planned then, max(id) of a txid became a backward walk of
-- that index from its newest entry, filtered by txid, for every row of a claim (batch x
-- backlog: a claim of 2,000 read 18 million entries; tests/relay/test_claim_backlog_plans.py).
-- A query whose WHERE does not imply an index's predicate cannot use that index at all,
-- whatever the estimates.
CREATE INDEX outbox_unsequenced_tx_end ON outbox (txid, id) WHERE tpos IS NULL;
-- Resume by topic position (catch-up of subscribers).
CREATE UNIQUE INDEX outbox_topic_tpos ON outbox (topic, tpos) WHERE tpos IS NOT NULL;

-- The latest tpos of each topic. The REST API reads it in the same transaction as an
-- object's state, so a client subscribes `since` it and misses nothing.
CREATE TABLE outbox_topic (
    topic  text   COLLATE "C" PRIMARY KEY,
    tpos   bigint NOT NULL
);

-- One row: sequencing and publication progress, and the leader's identity.
-- Invariants: every pos <= last_pos is committed (a claim commits its rows and last_pos
-- together); every pos <= last_pos the outbox lacks is <= pruned_pos (only deletions
-- remove rows, and they raise pruned_pos in the same transaction).
CREATE TABLE outbox_relay_state (
    id              int         PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_pos        bigint      NOT NULL DEFAULT 0,   -- highest pos assigned
    published_pos   bigint      NOT NULL DEFAULT 0,   -- highest pos known to be published (a hint)
    leader          text,
    leader_since    timestamptz,
    heartbeat_at    timestamptz,
    pruned_pos      bigint      NOT NULL DEFAULT 0    -- the retention watermark
);
INSERT INTO outbox_relay_state (id) VALUES (1);


-- =========================================================================================
-- The doorbell: how a commit wakes the relay
-- =========================================================================================
--
-- A payload-less NOTIFY outbox, sent by the writer's transaction and delivered at its commit.
-- PostgreSQL serializes the commits of all transactions that NOTIFY, so writers ring only
-- while the relay sleeps: the relay arms the bell before it sleeps and a claim that finds
-- work disarms it. No commit goes unannounced: a writer reads "armed" after its transaction
-- id exists, so one that read "disarmed" was in progress when the relay armed, and the relay
-- watches every such transaction until it ends (outbox_relay/relay.py, Relay._sleep). Polling
-- is the safety net either way. Each transaction rings at most once ('outbox.rung', a
-- transaction-local setting that a rolled-back savepoint resets with its NOTIFY).

-- The armed flag: 1 = armed. A sequence, read as a plain function call by every writer.
-- setval() is not transactional: arming and disarming take effect at once, not at commit.
CREATE SEQUENCE outbox_doorbell_armed MINVALUE 0 MAXVALUE 1 NO CYCLE;
SELECT setval('outbox_doorbell_armed', 1, true);  -- armed: no relay has run yet

-- The flag as a readable row, for status and humans.
CREATE VIEW outbox_doorbell AS
    SELECT 1 AS id, pg_sequence_last_value('outbox_doorbell_armed') = 1 AS armed;

-- Arm or disarm (the relay). A hint, so its commit does not wait for the disk.
CREATE FUNCTION outbox_set_doorbell(p_armed boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) IS DISTINCT FROM p_armed::int THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        PERFORM setval('outbox_doorbell_armed', p_armed::int, true);
    END IF;
END;
$$;

-- Ring if armed, and remember that this transaction has rung.
CREATE FUNCTION outbox_ring_now() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    rung text;
    xid  xid8;
BEGIN
    -- The transaction id must exist before "armed" is read (see above); a caller such as
    -- outbox_emit may not have written anything yet.
    xid := pg_current_xact_id();
    rung := set_config('outbox.rung', 'yes', true);  -- an assignment, not PERFORM: no query
    IF pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
        NOTIFY outbox;
    END IF;
END;
$$;

-- Raw INSERTs into the outbox ring through the defaults of id and txid: one that leaves
-- out either rings at its transaction's first row. Capture and outbox_emit ring themselves
-- and pass both columns. An INSERT or COPY that names both (a restore of saved rows) does
-- not ring: the relay's poll publishes it.
CREATE FUNCTION outbox_txid_ringing() RETURNS xid8 LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        PERFORM outbox_ring_now();
    END IF;
    RETURN pg_current_xact_id();
END;
$$;

CREATE FUNCTION outbox_id_ringing() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('outbox.rung', true) IS DISTINCT FROM 'yes' THEN
        PERFORM outbox_ring_now();
    END IF;
    RETURN nextval('outbox_id_seq');
END;
$$;

ALTER TABLE outbox ALTER COLUMN id SET DEFAULT outbox_id_ringing();
ALTER TABLE outbox ALTER COLUMN txid SET DEFAULT outbox_txid_ringing();


-- =========================================================================================
-- Capture: every write to a tracked table, whoever the writer
-- =========================================================================================

-- Provenance, set by the application (portal/provenance.py); 'sql' when nobody said.
CREATE FUNCTION outbox_source() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('outbox.source', true), ''), 'sql')
$$;

-- Explicit domain events (not row changes), in the caller's transaction; returns the row id.
CREATE FUNCTION outbox_emit(p_topic text, p_type text, p_payload jsonb, p_entity_id text DEFAULT '')
RETURNS bigint LANGUAGE sql AS $$
    SELECT outbox_ring_now() WHERE current_setting('outbox.rung', true) IS DISTINCT FROM 'yes';
    INSERT INTO outbox (id, txid, topic, entity, entity_id, op, data, actor, source, request_id)
    VALUES (nextval('outbox_id_seq'), pg_current_xact_id(), p_topic, p_type, p_entity_id, 'event', p_payload,
            nullif(current_setting('outbox.actor', true), ''),
            outbox_source(),
            nullif(current_setting('outbox.request_id', true), ''))
    RETURNING id
$$;

-- A tracked table's "version" column: a new row starts at the column's default (1, set by
-- outbox_track); this BEFORE UPDATE trigger adds 1 on every real change and keeps it on an
-- UPDATE that changes nothing (which then captures nothing). Row locks serialize writers of
-- one row, so version order is that row's commit order. "Changes" compares the rows' stored
-- bytes (*<>, record image inequality): valid for every column type, and a fraction of the
-- cost of rendering both rows as jsonb; a value rewritten with another representation
-- (numeric 1.0 as 1.00) counts as a change, as its jsonb rendering differs too. A writer's
-- own value for "version" is ignored.
CREATE FUNCTION outbox_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version;
    IF NEW *<> OLD THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;

-- The capture triggers (AFTER ROW), one per kind of write, each inserting its outbox row(s)
-- with one statement, are compiled per tracked table by outbox_track: the table's entity
-- name, topic column and topic prefix are literals in its own three functions, e.g.
-- outbox_capture_insert_checklists_item() (`\sf` shows one). Generic functions reading them
-- from trigger arguments (TG_ARGV) cost about 12k more instructions per captured row, 7% of
-- capture's whole cost (measured with bench.writer_cost).
--
-- Each function first reads the doorbell: disarmed (a busy relay), that is all; armed, the
-- first row of the transaction rings and marks the transaction rung. id and txid are passed,
-- so their ringing defaults stay out of the way. The doorbell check and the provenance are
-- written out in each function rather than called: a function call per captured row costs
-- more than the expressions.
--
-- An insert's data is the whole row, and `changed` is empty, as for a delete. An update whose
-- version did not move changed nothing (outbox_bump_version's verdict): no event. One that
-- moves the row to another topic is a delete on the old topic and an insert on the new one,
-- in that order. A delete is one more version of the row, so consumers order it after the
-- last update.

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
CREATE FUNCTION outbox_track(p_table regclass, p_entity text, p_topic_col text, p_prefix text)
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


-- =========================================================================================
-- Sequencing and publication (the relay leader)
-- =========================================================================================

-- The wire envelope of one row (outbox_relay/envelope.py documents it): built here so that
-- live publication, replay and catch-up send the very same bytes. Concatenated rather than
-- json_build_object'd: the same document, keys in the same order, compact; to_json()
-- escapes the free-text fields, and op, source, txid and the numbers need no escaping.
-- A poison row goes out with its positions, data null and the error.
CREATE FUNCTION outbox_envelope(o outbox) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT '{"v":1,"pos":' || coalesce(o.pos::text, 'null')
        || ',"tpos":' || coalesce(o.tpos::text, 'null')
        || ',"topic":' || to_json(o.topic)::text
        || ',"tx":"' || o.txid::text
        || '","entity":' || to_json(o.entity)::text
        || ',"id":' || to_json(o.entity_id)::text
        || ',"op":"' || o.op
        || '","version":' || coalesce(o.version::text, 'null')
        || ',"data":' || CASE WHEN o.error IS NULL THEN o.data::text ELSE 'null' END
        || ',"changed":' || to_json(o.changed)::text
        || ',"actor":' || coalesce(to_json(o.actor)::text, 'null')
        || ',"source":"' || o.source
        || '","request_id":' || coalesce(to_json(o.request_id)::text, 'null')
        || ',"committed_at":"' || to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","tx_last":' || CASE WHEN o.tx_last THEN 'true' ELSE 'false' END
        || CASE WHEN o.error IS NULL THEN '}' ELSE ',"error":' || to_json(o.error)::text || '}' END
$$;

-- The claim: sequence one batch and return its envelopes in pos order, in one round trip.
--
-- Which rows. Of the first p_limit unsequenced rows by id (the head), the transactions that
-- END within the head: a transaction whose rows go on beyond it waits for a later claim.
-- Positions follow commit order for any two transactions that wrote the same row: the
-- later one wrote that row after the earlier one committed (row locks), so all of the
-- earlier one's ids are below the later one's "end" (its largest id, txmax); the earlier one
-- committed first, so any snapshot that sees the later one sees it; it therefore ends
-- within any head the later one ends within, and a batch orders transactions by their end.
-- A batch never splits a transaction. If every transaction of the head goes on beyond it
-- (one larger than p_limit rows, or several straddling the cut), the cut moves to where the
-- first of them ends, so a claim with work always sequences something. A transaction still
-- open is invisible and holds nothing back; one that commits late is sequenced then (no
-- `id > last_seen` cursor, which would skip it).
--
-- Durability. The claim commits synchronously, and the relay publishes only after: a claim
-- lost in a crash after its events went out would let the next leader give the same
-- positions to other rows, which subscribers would drop as duplicates. An empty claim
-- writes nothing but the published_pos hint, asynchronously.
--
-- Also: records p_published (the caller's published_pos), disarms the doorbell when it
-- found work and p_disarm, and marks a row whose data is over p_max_bytes (stored size) as
-- poison. Concurrent claims serialize on the state row's lock, so even two relays that both
-- believe they lead never hand out a position twice.
--
-- Plans. The relay plans this once per session (plan_cache_mode = force_generic_plan), so
-- no plan may depend on the statistics of that moment: every lookup below is an index
-- lookup (enable_seqscan off for these statements, scalar subqueries for per-row lookups,
-- numbering by window functions over the batch alone), linear in the batch whatever the
-- size of the backlog or of the published history (tests/relay/test_claim_plans.py).
CREATE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int, p_disarm boolean)
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
    -- A scalar subquery with ORDER BY/LIMIT, not EXISTS: one index lookup.
    IF (SELECT o.id FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT 1) IS NULL THEN
        -- Nothing to claim: no write but the hint, so no wait for the disk.
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE outbox_relay_state SET published_pos = p_published
         WHERE id = 1 AND published_pos < p_published;
        RETURN;
    END IF;

    -- The state row lock serializes claims; every statement below sees what the claims
    -- before this one sequenced.
    SELECT s.last_pos INTO v_last FROM outbox_relay_state s WHERE s.id = 1 FOR UPDATE;

    FOR pass IN 1..2 LOOP
        WITH head AS (
            SELECT o.id, o.topic, o.txid FROM outbox o
             WHERE o.pos IS NULL AND o.id <= v_upto
             ORDER BY o.id LIMIT v_limit
        ), ended AS (
            -- A scalar subquery, so it stays one index lookup per row whatever the plan.
            SELECT h.id, h.topic, max(h.id) OVER () AS cut,
                   -- tpos, not pos: only outbox_unsequenced_tx_end answers it (see that index).
                   (SELECT max(x.id) FROM outbox x WHERE x.txid = h.txid AND x.tpos IS NULL) AS txmax
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
        -- One Agg node feeds every aggregate the same rows in the same order: the arrays
        -- stay aligned without sorting each.
        SELECT array_agg(n.id), array_agg(n.new_pos), array_agg(n.new_tpos), array_agg(n.is_last),
               array_agg(n.topic)
          INTO v_ids, v_pos, v_tpos, v_final, v_topics
          FROM numbered n;
        EXIT WHEN v_ids IS NOT NULL OR pass = 2;

        -- Every transaction of the head goes on beyond it: cut where the first of them ends.
        SELECT min((SELECT max(x.id) FROM outbox x WHERE x.txid = h.txid AND x.tpos IS NULL))
          INTO v_upto
          FROM (SELECT o.txid FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT p_limit) h;
        EXIT WHEN v_upto IS NULL;  -- nothing left: a concurrent claim took it
        v_limit := NULL;           -- every row up to the cut
    END LOOP;

    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    IF p_disarm AND pg_sequence_last_value('outbox_doorbell_armed'::regclass) = 1 THEN
        PERFORM setval('outbox_doorbell_armed', 0, true);  -- at once, not at commit
    END IF;

    -- Every write in one statement (data-modifying CTEs each run once, read or not).
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
               -- pg_column_size: the stored size, without rendering the document.
               error = coalesce(o.error, CASE WHEN pg_column_size(o.data) > p_max_bytes
                   THEN format('data is %s bytes, over the %s-byte limit', pg_column_size(o.data), p_max_bytes) END)
          FROM unnest(v_ids, v_pos, v_tpos, v_final) AS n(id, pos, tpos, is_last)
         WHERE o.id = ANY(v_ids) AND o.id = n.id
        RETURNING o.pos, o.topic, outbox_envelope(o) AS env, o.created_at, o.error
    )
    SELECT u.pos, u.topic, u.env, u.created_at, u.error FROM upd u ORDER BY u.pos;
END;
$$;

-- The claim without the doorbell (tools and tests).
CREATE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int)
RETURNS TABLE (r_pos bigint, r_topic text, r_envelope text, r_created_at timestamptz, r_error text)
LANGUAGE sql AS $$
    SELECT * FROM outbox_claim(p_limit, p_published, p_max_bytes, false)
$$;

-- Record what the relay has published (heartbeats, stop): a hint for the next leader's
-- republish and for subscribers' start, so its commit does not wait for the disk. Never
-- goes back. Returns the recorded value.
CREATE FUNCTION outbox_record_published(p_pos bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE outbox_relay_state SET published_pos = greatest(published_pos, p_pos), heartbeat_at = now()
     WHERE id = 1
    RETURNING published_pos INTO v;
    RETURN coalesce(v, p_pos);
END;
$$;


-- =========================================================================================
-- Retention
-- =========================================================================================

-- Every DELETE on the outbox (`outbox-admin prune`, or a hand-made one) raises pruned_pos
-- to the largest position it deleted, in the deleting transaction: a reader that sees the
-- rows gone sees the watermark too. A subscriber skips a missing position only at or below
-- it, never because a message claimed a higher position. Deleting unsequenced rows changes
-- nothing (they have no position). TRUNCATE is not a DELETE and fires nothing; truncating
-- a live outbox is not supported.
CREATE FUNCTION outbox_raise_watermark() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_max bigint;
BEGIN
    SELECT max(g.pos) INTO v_max FROM outbox_deleted g;
    -- Only when it rises: a DELETE of unsequenced rows, or below the watermark, takes no
    -- lock on the state row the claim serializes on.
    IF v_max IS NOT NULL AND v_max > (SELECT s.pruned_pos FROM outbox_relay_state s WHERE s.id = 1) THEN
        UPDATE outbox_relay_state SET pruned_pos = greatest(pruned_pos, v_max) WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_retention_watermark
    AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS outbox_deleted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_raise_watermark();


-- =========================================================================================
-- Presence (issue 18): who has a topic open right now, across every sync server
-- =========================================================================================

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


-- =========================================================================================
-- Schema version
-- =========================================================================================

-- The number of the last numbered step (migrations/NNNN_*.sql) this schema includes. A
-- database built from this file skips the steps it includes already; every step applied
-- to an older database raises it.
CREATE TABLE outbox_schema_version (
    id      int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version int NOT NULL
);
INSERT INTO outbox_schema_version (version) VALUES (4);
