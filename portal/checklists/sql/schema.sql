-- What the Cloud Checklist app adds to the database, as it stands: which of its tables the
-- outbox captures, and who may watch which topic. The source of truth for this part, as
-- migrations/schema.sql is for the outbox, and changed the same way: the checklists app's
-- first Django migration builds a new database from this file; a change to a released
-- schema also adds a numbered step here (portal/checklists/sql/NNNN_name.sql, skipped where
-- checklists_schema_version says the database has it). tests/portal/test_schema_sql.py
-- proves that migrating yields exactly this.


-- =========================================================================================
-- Capture
-- =========================================================================================

-- All three tables publish on checklist:<id>: a viewer of a list watches the list, its
-- items and its members as one stream.
SELECT outbox_track('checklists_checklist', 'checklist', 'id', 'checklist');
SELECT outbox_track('checklists_membership', 'membership', 'checklist_id', 'checklist');
SELECT outbox_track('checklists_item', 'item', 'checklist_id', 'checklist');


-- =========================================================================================
-- Authority: who may watch checklist:N now, and from which position
-- =========================================================================================
--
-- The sync server keeps no domain rules: at every subscribe and resume it asks
-- sync_grants() about the user's *current* membership. This is the SQL twin of
-- portal/checklists/permissions.py can_watch() (a member of checklist N may watch
-- "checklist:N"); tests/portal/test_sync_grants.py proves the two agree.
--
-- The history floor. A member may resume only from where his membership began: just before
-- the transaction that made the current membership row part of this list (its insert, or
-- the move or change of user that brought it here). A transaction is applied whole, and
-- everything it wrote is in the state that membership first saw (a list created with its
-- owner: the owner sees the list's own insert). Its events on a topic have consecutive
-- tpos (the relay never splits a transaction), so the floor is the last tpos before the
-- membership's event that another transaction wrote (0 if none). The membership's own
-- writes record which outbox row began it (sync_membership_start, kept by a trigger on
-- checklists_membership only), so finding that event needs no index on the outbox, which
-- every writer would pay for.

-- membership id -> id of the outbox row of the event its current membership began with
-- (NULL: no such event was captured). No foreign keys: the trigger keeps it, and Django's
-- flush may TRUNCATE checklists_membership without touching this table; a row of a
-- deleted membership is never read (lookups start from the membership) and is replaced
-- if the id is used again.
CREATE TABLE sync_membership_start (
    membership_id bigint PRIMARY KEY,
    outbox_id     bigint
);

-- AFTER ROW, named so that it fires after outbox_capture (triggers of one kind fire in
-- name order), whose row for this membership is then the latest outbox row this session
-- inserted: currval() names it in O(1), however many rows the transaction wrote. The
-- row is checked (its entity, id, topic and transaction) before it is trusted; anything
-- else (capture switched off for this table) records NULL.
CREATE FUNCTION sync_membership_started() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM sync_membership_start WHERE membership_id = OLD.id;
        RETURN NULL;
    END IF;
    BEGIN
        v_id := currval('outbox_id_seq'::regclass);
    EXCEPTION WHEN object_not_in_prerequisite_state THEN  -- no outbox row in this session
        v_id := NULL;
    END;
    SELECT o.id INTO v_id FROM outbox o
     WHERE o.id = v_id AND o.txid = pg_current_xact_id() AND o.entity = 'membership'
       AND o.entity_id = NEW.id::text AND o.topic = 'checklist:' || NEW.checklist_id;
    INSERT INTO sync_membership_start (membership_id, outbox_id) VALUES (NEW.id, v_id)
        ON CONFLICT (membership_id) DO UPDATE SET outbox_id = EXCLUDED.outbox_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sync_membership_start AFTER INSERT OR DELETE ON checklists_membership
    FOR EACH ROW EXECUTE FUNCTION sync_membership_started();
-- A membership moved to another list, or given to another user, begins again there.
CREATE TRIGGER sync_membership_start_moved AFTER UPDATE OF checklist_id, user_id ON checklists_membership
    FOR EACH ROW WHEN (OLD.checklist_id IS DISTINCT FROM NEW.checklist_id OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION sync_membership_started();

-- "checklist:<id>" -> id; NULL for anything else (another kind of topic, a non-canonical
-- or out-of-range number). Never an error: one odd topic must not fail a whole batch.
CREATE FUNCTION sync_checklist_id(p_topic text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_topic ~ '^checklist:[1-9][0-9]{0,18}$'
             AND (length(p_topic) < 29 OR substr(p_topic, 11) <= '9223372036854775807' COLLATE "C")
        THEN substr(p_topic, 11)::bigint
    END
$$;

-- The grants of p_user on p_topics, as the database stands in the caller's snapshot:
-- a topic missing from the result may not be watched now; floor is the lowest `since`
-- the user may resume from: 0 if the membership's first event is gone (pruned) or was
-- never captured, NULL while that event is not sequenced yet (the client retries).
-- A plain SQL function, inlined into the caller's query (the sync server joins it
-- LATERAL to a whole batch of checks).
CREATE FUNCTION sync_grants(p_user bigint, p_topics text[])
RETURNS TABLE (topic text, floor bigint) LANGUAGE sql STABLE AS $$
    SELECT t.topic,
           CASE WHEN o.id IS NULL THEN 0
                WHEN o.tpos IS NULL THEN NULL
                -- Backwards on outbox_topic_tpos from the membership's event, past the rest
                -- of its own transaction (a few rows) to the one before.
                ELSE coalesce((SELECT max(p.tpos) FROM outbox p
                                WHERE p.topic = o.topic AND p.tpos < o.tpos AND p.txid <> o.txid), 0)
           END
      FROM unnest(p_topics) AS t(topic)
      JOIN checklists_membership m ON m.user_id = p_user AND m.checklist_id = sync_checklist_id(t.topic)
      LEFT JOIN sync_membership_start s ON s.membership_id = m.id
      LEFT JOIN outbox o ON o.id = s.outbox_id
$$;


-- The number of the last numbered step (portal/checklists/sql/NNNN_*.sql) this schema
-- includes: none yet (see migrations/schema.sql, "Schema version").
CREATE TABLE checklists_schema_version (
    id      int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version int NOT NULL
);
INSERT INTO checklists_schema_version (version) VALUES (0);
