-- The claim's plans no longer depend on the statistics the outbox had when they were made.
--
-- The relay plans the claim once per session (plan_cache_mode = force_generic_plan, see
-- outbox_relay/relay.py), so those plans are made with the statistics of that moment, and
-- kept until an ANALYZE or VACUUM of the outbox invalidates them. On a new or emptied
-- (pruned, truncated) outbox they say "about one row", and 0006's plans then went wrong in
-- two ways (auto_explain, 2-CPU dev VM):
--  * numbering joined each batch row to a per-transaction GROUP BY; for one row the
--    planner makes that a nested loop that runs the HashAggregate again for every outer
--    row, quadratic in the batch: a 2,000-row claim took 111 ms instead of 27, and under
--    32 writers the claim's backend used up to 48% of a core (21-48% over eight runs),
--    18-23% with this. The end of
--    each transaction (txmax) is now a window over the batch itself: sorts only, no join.
--  * the head query chose a sequential scan of the whole outbox and a sort (cheapest
--    for "one row"), not the partial index of unsequenced rows; on a history of millions
--    of rows that is a full scan per claim until autovacuum analyzes. enable_seqscan is
--    off for the claim's own statements (a function SET clause), so every lookup uses
--    the indexes that 0002-0005 made for it, whatever the statistics say.
-- Same contract as 0006 (arguments, result, durability, locking); only numbering changed.
CREATE OR REPLACE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int, p_disarm boolean)
RETURNS TABLE (r_pos bigint, r_topic text, r_envelope text, r_created_at timestamptz, r_error text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
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
        SELECT o.id, o.topic, max(o.id) OVER (PARTITION BY o.txid) AS txmax
          FROM outbox o WHERE o.txid = ANY(v_txids) AND o.pos IS NULL
    ), ranked AS (
        SELECT b.id, b.topic, b.txmax,
               row_number() OVER w AS trank,
               lead(b.txmax) OVER w IS DISTINCT FROM b.txmax AS is_last
          FROM batch b
        WINDOW w AS (PARTITION BY b.topic ORDER BY b.txmax, b.id)
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
