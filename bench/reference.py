"""Issue 3's reference capture designs, built next to ours so that both are measured on the
same machine in the same run (the issue quotes their cost on its own machines).

`ref_item` gets "a row trigger inserting the outbox row": into `ref_outbox`, a twin of the
outbox table with its columns, defaults and indexes but none of our triggers (no doorbell,
no provenance, no `changed`, no version). `refn_item` gets the same plus a pg_notify in
every writing transaction (the doorbell the issue rules out). The caller creates both
tables, with the columns of the benchmark's tracked table, before running DDL.
"""

DDL = """
CREATE TABLE ref_outbox (LIKE outbox INCLUDING ALL);
-- Our id and txid defaults ring our doorbell (migrations/schema.sql); the reference has none.
ALTER TABLE ref_outbox ALTER COLUMN id SET DEFAULT nextval('outbox_id_seq');
ALTER TABLE ref_outbox ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
CREATE FUNCTION ref_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ref_outbox (topic, entity, entity_id, op, data)
    VALUES ('checklist:' || NEW.checklist_id, 'item', NEW.id::text, lower(TG_OP), to_jsonb(NEW));
    IF TG_ARGV[0] = 'notify' THEN
        PERFORM pg_notify('ref_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ref_capture AFTER INSERT OR UPDATE ON ref_item FOR EACH ROW EXECUTE FUNCTION ref_capture('none');
CREATE TRIGGER ref_capture AFTER INSERT OR UPDATE ON refn_item FOR EACH ROW EXECUTE FUNCTION ref_capture('notify');
"""
