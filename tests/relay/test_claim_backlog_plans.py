"""A claim's work stays proportional to its batch when the planner's picture of the outbox
lags the backlog, as it does in production between two vacuums (see outbox_claim and the
outbox indexes in migrations/schema.sql).

The trap: VACUUM at a moment with (almost) no backlog leaves the partial index of
unsequenced rows nearly empty but as many pages long as the largest backlog it held, so
the planner estimates it at a handful of entries until the next VACUUM or ANALYZE, however
large the backlog grows meanwhile. Planned then (the relay plans once per session, and again
after each VACUUM or ANALYZE), "where does this transaction end" (max(id) of a txid) became a
backward walk of that index from its newest entry, filtered by txid: one walk through the
whole backlog for every row of the batch. The claim grew with batch x backlog, the backlog
grew while it ran, and at 10,000 events/s the relay stopped publishing for seconds at a time
(bench: throughput ramp).

Counted in index entries read (pg_stat_user_indexes, of this test database alone), not
timed: works on any server from PostgreSQL 15, with or without auto_explain."""
from __future__ import annotations

import psycopg
import pytest

from outbox_relay import sequencer
from outbox_relay.relay import GENERIC_PLANS_SQL
from tests.relay.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 2000
PAST = 10_000  # rows of a past backlog, sequenced before the trap is set
# Transactions of 20 rows on 10 topics, each committed in turn by one server-side loop.
EMIT = """
DO $$
BEGIN
    FOR t IN 1..%(txs)s LOOP
        PERFORM outbox_emit('t:' || (t %% 10), 'test', jsonb_build_object('t', t, 'i', i))
           FROM generate_series(1, 20) AS i;
        COMMIT;
    END LOOP;
END
$$"""
ENTRIES_READ = "SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = 'outbox'"


def entries_read(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(conn.execute(ENTRIES_READ).fetchone()[0])


def claim_counting_reads(relay: psycopg.Connection, admin: psycopg.Connection) -> tuple[list, int]:
    """One claim of BATCH on the relay's session; the rows and the outbox index entries it read."""
    before = entries_read(admin)
    rows = relay.execute(sequencer.CLAIM_SQL, (BATCH, 0, 1_000_000, True), prepare=True).fetchall()
    relay.execute("SELECT pg_stat_force_next_flush()")  # publish this session's counts now
    return rows, entries_read(admin) - before


@pytest.fixture
def outbox_without_autovacuum(db_url):
    """No autovacuum on the outbox while the test runs: an ANALYZE in the middle would give
    the planner the truth, and the trap this test sets would not close."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.info.server_version < 150000:
            pytest.skip("counting a session's index reads at once needs pg_stat_force_next_flush (PostgreSQL 15)")
        conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = off)")
    try:
        yield
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE outbox RESET (autovacuum_enabled)")


def test_a_claim_reads_index_entries_in_proportion_to_its_batch_not_to_the_backlog(db_url, outbox_without_autovacuum):
    with psycopg.connect(db_url, autocommit=True) as admin:
        # A past backlog, sequenced; then VACUUM while none is left: the partial indexes are
        # as many pages long as they were, and the statistics say they are empty.
        admin.execute(EMIT % {"txs": PAST // 20})
        drain(admin)
        admin.execute("VACUUM ANALYZE outbox")
        # Now a backlog of 10,000 rows (500 transactions) that the statistics do not know of.
        admin.execute(EMIT % {"txs": 500})

        with psycopg.connect(db_url, autocommit=True) as relay:
            relay.execute(GENERIC_PLANS_SQL)  # as the relay plans: once per session, generic
            rows, read = claim_counting_reads(relay, admin)

    assert len(rows) == BATCH
    # The head (one entry per row), one lookup per row where its transaction ends, the
    # UPDATE's lookup by id: three entries per row claimed. Plus, where another session's
    # snapshot kept VACUUM from removing the past backlog's dead entries (autovacuum's
    # ANALYZE of another table does), each walk of the head over them: a few walks of
    # PAST entries at most. The trap read about batch x backlog / 2, some eighteen million.
    assert read <= 10 * BATCH + 10 * PAST, f"one claim of {BATCH} rows read {read:,} index entries"


def test_a_claim_planned_on_an_empty_outbox_reads_in_proportion_to_its_batch(db_url, outbox_without_autovacuum):
    with psycopg.connect(db_url, autocommit=True) as admin, psycopg.connect(db_url, autocommit=True) as relay:
        admin.execute("ANALYZE outbox")  # the statistics of a new (or emptied) outbox: no rows
        relay.execute(GENERIC_PLANS_SQL)
        # The first claim plans the claim's statements, as a new relay's first claim does;
        # the plans stay until the next VACUUM or ANALYZE of the outbox.
        assert relay.execute(sequencer.CLAIM_SQL, (BATCH, 0, 1_000_000, True), prepare=True).fetchall() == []
        admin.execute(EMIT % {"txs": 500})
        rows, read = claim_counting_reads(relay, admin)

    assert len(rows) == BATCH
    assert read <= 10 * BATCH, f"one claim of {BATCH} rows read {read:,} index entries"
