-- Drain speed, second step: the claim's new row versions stay on their page, topics compare
-- as bytes, and a claim runs four statements instead of eight.
--
-- Measured with pg_walinspect on one 2,000-row claim (outbox_claim(2000, ...), 2-CPU dev VM):
--  * fillfactor 50. The claim's UPDATE cannot be HOT (pos and tpos are indexed), but its new
--    row version can still go on the same page when there is room. With full pages every
--    version moved to another page, and PostgreSQL first WAL-logs a lock on the old version
--    before it lets go of that page (heap_update): 2,032 Heap/LOCK records (110 kB) per 2,000
--    rows, and each Heap/UPDATE record carried the whole new row (458 kB). With half of each
--    page left free at insert, the new version fits beside the old: 379 LOCK records (20 kB),
--    and the UPDATE record holds only the changed tail of the row, prefix and suffix shared
--    with the old version being left out (253 kB): WAL per claim 1.05-1.18 MB -> 0.75-0.88 MB.
--    The cost is space: pages of unsequenced rows are filled to half (prune keeps the
--    table to its retention period anyway). Only pages written from now on are affected.
--  * topic COLLATE "C". Topics are identifiers ("checklist:42"), never sorted for people;
--    under a libc locale (C.UTF-8 and en_US.UTF-8 alike in PostgreSQL 15) every comparison
--    copies both strings and calls strcoll, and the claim compares topics in the unique
--    index (topic, tpos), in its window PARTITION BY topic and in outbox_topic's key.
--    Equality with a parameter or a text column of default collation is unaffected; the
--    indexes on topic are rebuilt by this statement.
ALTER TABLE outbox SET (fillfactor = 50);
ALTER TABLE outbox ALTER COLUMN topic TYPE text COLLATE "C";
ALTER TABLE outbox_topic ALTER COLUMN topic TYPE text COLLATE "C";

-- The claim of 0004 with the same contract (arguments, result, durability, locking), in
-- four statements: every statement a plpgsql function runs costs its executor start-up
-- and end (~20-40 us here), which an isolated event pays on its way to the subscribers.
--  1. the head transactions (also the "is there work" test: no lock, no write if empty);
--  2. lock the state row (serializes claims, see 0002) and read last_pos;
--  3. number the batch (unchanged from 0004);
--  4. one statement for every write: the outbox rows, the state row, the topic counters
--     and the doorbell, as data-modifying CTEs (each runs once, whether read or not).
-- Statement 1 runs before the lock: if a concurrent claim sequenced some of those head
-- transactions meanwhile, statement 3 (a new snapshot, after the lock) no longer sees their
-- rows as unsequenced, so the batch is smaller, never wrong.
CREATE OR REPLACE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int, p_disarm boolean)
RETURNS TABLE (r_pos bigint, r_topic text, r_envelope text, r_created_at timestamptz, r_error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_last   bigint;
    v_ids    bigint[];
    v_pos    bigint[];
    v_tpos   bigint[];
    v_final  boolean[];
    v_topics text[];
    v_txids  xid8[];
BEGIN
    v_txids := ARRAY(SELECT DISTINCT h.txid
                       FROM (SELECT o.txid FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT p_limit) h);
    IF cardinality(v_txids) = 0 THEN
        -- Nothing to claim: no write but a hint, so no fsync (see 0004).
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE outbox_relay_state SET published_pos = p_published
         WHERE id = 1 AND published_pos < p_published;
        RETURN;
    END IF;

    SELECT s.last_pos INTO v_last FROM outbox_relay_state s WHERE s.id = 1 FOR UPDATE;

    WITH batch AS (
        SELECT o.id, o.topic, o.txid FROM outbox o WHERE o.txid = ANY(v_txids) AND o.pos IS NULL
    ), txs AS (
        SELECT b.txid, max(b.id) AS txmax FROM batch b GROUP BY b.txid
    ), ranked AS (
        SELECT b.id, b.topic, t.txmax,
               row_number() OVER w AS trank,
               lead(t.txmax) OVER w IS DISTINCT FROM t.txmax AS is_last
          FROM batch b JOIN txs t USING (txid)
        WINDOW w AS (PARTITION BY b.topic ORDER BY t.txmax, b.id)
    ), numbered AS (
        SELECT r.id, v_last + row_number() OVER (ORDER BY r.txmax, r.id) AS new_pos,
               coalesce(ot.tpos, 0) + r.trank AS new_tpos, r.is_last, r.topic
          FROM ranked r LEFT JOIN outbox_topic ot ON ot.topic = r.topic
    )
    -- No ORDER BY in the aggregates (0004 sorted each of the five arrays): one Agg node
    -- feeds every aggregate the same rows in the same order, so the arrays stay aligned,
    -- and nothing below needs them in pos order (the UPDATE joins by id, the result is
    -- sorted by pos at the end).
    SELECT array_agg(n.id), array_agg(n.new_pos), array_agg(n.new_tpos), array_agg(n.is_last),
           array_agg(n.topic)
      INTO v_ids, v_pos, v_tpos, v_final, v_topics
      FROM numbered n;

    IF v_ids IS NULL THEN
        RETURN;  -- a concurrent claim took the head first (see above)
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
    ), doorbell AS (
        UPDATE outbox_doorbell SET armed = false WHERE p_disarm AND id = 1 AND armed
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
