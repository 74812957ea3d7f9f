-- Step 2: cheaper update capture (see migrations/schema.sql). The version trigger compares
-- the rows' stored bytes instead of their jsonb renderings. Same triggers, same events.

CREATE OR REPLACE FUNCTION outbox_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version;
    IF NEW *<> OLD THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;
