-- The retention watermark: the outbox's own proof that a position is gone for good.
--
-- A subscriber (outbox_relay/subscriber.py) used to skip any position it did not find in
-- the outbox below a position the broker stream claimed, taking the missing rows for
-- pruned ones. A forged heartbeat "pos = last + 3" thus made it skip the next three real
-- commits. Now it skips a missing position only at or below pruned_pos, which only a
-- deletion from the outbox raises, and reads no further than last_pos whatever a message
-- claims.
--
-- Every DELETE on the outbox (`prune`, or anything else: a hand-made DELETE must not
-- leave a hole that subscribers wait at forever) raises pruned_pos to the largest
-- position it deleted, in the deleting transaction, so a reader that sees the rows gone
-- sees the watermark too (the subscriber reads both in one snapshot). Deleting
-- unsequenced rows touches nothing: they have no position to explain. TRUNCATE is not a
-- DELETE and fires nothing; truncating a live outbox is not supported.
--
-- Invariant: every pos <= last_pos that the outbox lacks is <= pruned_pos.

ALTER TABLE outbox_relay_state ADD COLUMN pruned_pos bigint NOT NULL DEFAULT 0;

-- An outbox pruned before this migration: whatever is missing below its oldest sequenced
-- row was pruned (prune deletes the oldest first); with no sequenced row left, every
-- assigned position was.
UPDATE outbox_relay_state
   SET pruned_pos = coalesce((SELECT min(pos) - 1 FROM outbox WHERE pos IS NOT NULL), last_pos)
 WHERE id = 1;

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
