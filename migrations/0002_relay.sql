-- The relay's side of the outbox: the envelope builder and the claim, as SQL functions
-- so a whole batch is claimed, sequenced and encoded in one round trip.

-- Unsequenced rows by transaction: a batch takes all rows of the transactions it starts,
-- and without this index that lookup would scan the whole backlog once per batch.
CREATE INDEX outbox_unsequenced_txid ON outbox (txid) WHERE pos IS NULL;

-- The wire envelope of one sequenced row (see outbox_relay/envelope.py). Built here
-- because PostgreSQL renders JSON faster than Python re-encodes it, and because the
-- relay, replay and subscriber catch-up must all send the very same bytes.
-- A poison row (error set) goes out with its position, data null and the error.
CREATE FUNCTION outbox_envelope(o outbox) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN o.error IS NULL THEN
        json_build_object(
            'v', 1, 'pos', o.pos, 'tpos', o.tpos, 'topic', o.topic, 'tx', o.txid::text,
            'entity', o.entity, 'id', o.entity_id, 'op', o.op, 'version', o.version,
            'data', o.data, 'changed', o.changed, 'actor', o.actor, 'source', o.source,
            'request_id', o.request_id,
            'committed_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'tx_last', coalesce(o.tx_last, false))::text
    ELSE
        json_build_object(
            'v', 1, 'pos', o.pos, 'tpos', o.tpos, 'topic', o.topic, 'tx', o.txid::text,
            'entity', o.entity, 'id', o.entity_id, 'op', o.op, 'version', o.version,
            'data', NULL, 'changed', o.changed, 'actor', o.actor, 'source', o.source,
            'request_id', o.request_id,
            'committed_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'tx_last', coalesce(o.tx_last, false), 'error', o.error)::text
    END
$$;

-- Claim one batch: record what the caller has published so far, then sequence up to
-- p_limit committed unsequenced rows (plus the rest of their transactions: a batch never
-- splits one), assigning gapless pos and per-topic tpos, and return their envelopes in
-- pos order. Transactions are ordered by the largest id among their rows: a transaction
-- that wrote a row after another one committed (row locks) has the larger max id, so the
-- order respects commit order wherever it matters. A row whose data exceeds p_max_bytes
-- (stored size) is poison: it keeps its position, gets an error, and goes out without data.
CREATE FUNCTION outbox_claim(p_limit int, p_published bigint, p_max_bytes int)
RETURNS TABLE (r_pos bigint, r_topic text, r_envelope text, r_created_at timestamptz, r_error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_last   bigint;
    v_ids    bigint[];
    v_pos    bigint[];
    v_tpos   bigint[];
    v_final  boolean[];
    v_topics text[];
BEGIN
    -- The state row lock serializes claims: even two relays that both believe they lead
    -- (a lock connection lost mid-claim) can never hand out a position twice.
    UPDATE outbox_relay_state
       SET published_pos = greatest(published_pos, p_published)
     WHERE id = 1
    RETURNING last_pos INTO v_last;

    -- Number the batch. Computed into arrays first so that the UPDATE below is planned
    -- as index lookups by id (a join against a CTE misestimates and scans the table).
    WITH head AS (
        SELECT DISTINCT h.txid
          FROM (SELECT o.txid FROM outbox o WHERE o.pos IS NULL ORDER BY o.id LIMIT p_limit) h
    ), batch AS (
        SELECT o.id, o.topic, o.txid FROM outbox o JOIN head USING (txid) WHERE o.pos IS NULL
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
    SELECT array_agg(n.id ORDER BY n.new_pos), array_agg(n.new_pos ORDER BY n.new_pos),
           array_agg(n.new_tpos ORDER BY n.new_pos), array_agg(n.is_last ORDER BY n.new_pos),
           array_agg(n.topic ORDER BY n.new_pos)
      INTO v_ids, v_pos, v_tpos, v_final, v_topics
      FROM numbered n;

    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    UPDATE outbox_relay_state SET last_pos = v_last + cardinality(v_ids) WHERE id = 1;
    INSERT INTO outbox_topic AS t (topic, tpos)
    SELECT x.topic, max(x.tpos) FROM unnest(v_topics, v_tpos) AS x(topic, tpos) GROUP BY x.topic
    ON CONFLICT (topic) DO UPDATE SET tpos = excluded.tpos;

    RETURN QUERY
    WITH upd AS (
        UPDATE outbox o
           SET pos = n.pos, tpos = n.tpos, tx_last = n.is_last, sequenced_at = clock_timestamp(),
               -- pg_column_size: the stored size, without rendering the document twice.
               error = coalesce(o.error, CASE WHEN pg_column_size(o.data) > p_max_bytes
                   THEN format('data is %s bytes, over the %s-byte limit', pg_column_size(o.data), p_max_bytes) END)
          FROM unnest(v_ids, v_pos, v_tpos, v_final) AS n(id, pos, tpos, is_last)
         WHERE o.id = n.id
        RETURNING o.pos, o.topic, outbox_envelope(o) AS env, o.created_at, o.error
    )
    SELECT u.pos, u.topic, u.env, u.created_at, u.error FROM upd u ORDER BY u.pos;
END;
$$;
