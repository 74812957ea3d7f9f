-- Step 4: where a transaction ends, looked up by an index no other plan can mistake for it
-- (see migrations/schema.sql, outbox_unsequenced_tx_end). The claim asked for max(id) of a
-- txid among rows `pos IS NULL`, which outbox_unsequenced could also answer; planned while
-- that index was estimated nearly empty (after a VACUUM at a small backlog, or on a new
-- outbox), the lookup walked it from its newest entry for every row of the batch, and a
-- claim's work grew with batch x backlog. The index now covers `tpos IS NULL` (the same
-- rows: the claim sets pos and tpos in one UPDATE, and nothing else sets either) and the
-- claim asks by tpos, so only that index can answer.
--
-- Building the index reads the outbox under a lock that holds writers of tracked tables
-- until the migration commits: fast on an outbox kept short by `outbox-admin prune`; prune
-- first where it holds millions of rows.

DROP INDEX outbox_unsequenced_tx_end;
CREATE INDEX outbox_unsequenced_tx_end ON outbox (txid, id) WHERE tpos IS NULL;

CREATE OR REPLACE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int, p_disarm boolean)
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
