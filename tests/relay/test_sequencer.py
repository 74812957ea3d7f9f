"""The claim (outbox_claim in migrations/0002_relay.sql) against real PostgreSQL."""
import json
import random
import threading

import psycopg
import pytest

from tests.relay.conftest import emit

pytestmark = pytest.mark.django_db(transaction=True)


def claim(conn, batch=2000, max_bytes=1_000_000):
    rows = conn.execute("SELECT r_pos, r_topic, r_envelope, r_error FROM outbox_claim(%s, 0, %s)",
                        (batch, max_bytes)).fetchall()
    return [(p, t, json.loads(e), err) for p, t, e, err in rows]


def sequenced(conn):
    return conn.execute("SELECT id, txid::text, topic, pos, tpos, tx_last FROM outbox ORDER BY pos").fetchall()


def test_a_transaction_that_commits_last_is_not_skipped_nor_holding_others_back(db_url):
    with psycopg.connect(db_url, autocommit=True) as relay, psycopg.connect(db_url) as a:
        a.execute("SELECT outbox_emit('t:a', 'x', '{}')")          # A writes first (smaller id)...
        emit(db_url, 3, topic="t:b")                               # ...B commits meanwhile
        first = claim(relay)
        assert [r[1] for r in first] == ["t:b"] * 3                # A's open transaction holds nothing back
        a.commit()                                                 # ...A commits last
        second = claim(relay)
        assert [r[1] for r in second] == ["t:a"]                   # an id cursor would have skipped it
        assert second[0][0] == first[-1][0] + 1
        assert relay.execute("SELECT count(*) FROM outbox WHERE pos IS NULL").fetchone()[0] == 0


def test_a_batch_never_splits_a_transaction_and_marks_tx_last(db_url):
    emit(db_url, 5, topic="t:1", per_tx=5)
    emit(db_url, 1, topic="t:2")
    with psycopg.connect(db_url, autocommit=True) as conn:
        batch = claim(conn, batch=2)
        assert len(batch) == 5 and {r[1] for r in batch} == {"t:1"}
        assert [r[2]["tx_last"] for r in batch] == [False] * 4 + [True]
        tpos = [r[2]["tpos"] for r in batch]
        assert tpos == list(range(tpos[0], tpos[0] + 5))
        assert len({r[2]["tx"] for r in batch}) == 1
        rest = claim(conn, batch=2)
        assert [r[1] for r in rest] == ["t:2"] and rest[0][2]["tx_last"] is True


def test_tx_last_is_per_topic_within_a_transaction(db_url):
    with psycopg.connect(db_url) as conn:
        for topic in ("t:1", "t:2", "t:1", "t:2"):
            conn.execute("SELECT outbox_emit(%s, 'x', '{}')", (topic,))
    with psycopg.connect(db_url, autocommit=True) as conn:
        got = [(r[1], r[2]["tx_last"]) for r in claim(conn)]
    assert got == [("t:1", False), ("t:2", False), ("t:1", True), ("t:2", True)]


def test_poison_row_keeps_its_position_and_does_not_block(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT outbox_emit('t:p', 'x', %s::jsonb)", (json.dumps({"blob": "x" * 500}),))
        conn.execute("SELECT outbox_emit('t:p', 'x', '{\"ok\": 1}')")
        rows = claim(conn, max_bytes=200)
        assert len(rows) == 2 and rows[1][0] == rows[0][0] + 1
        poison, ok = rows[0][2], rows[1][2]
        assert poison["data"] is None and "over the 200-byte limit" in poison["error"] and rows[0][3]
        assert ok["data"] == {"ok": 1} and "error" not in ok
        assert conn.execute("SELECT count(*) FROM outbox WHERE error IS NOT NULL").fetchone()[0] == 1


def test_positions_gapless_and_unique_under_concurrent_writers_and_claimers(db_url):
    """Writers commit in random order with random delays while two claimers race."""
    writers, per_writer = 6, 40
    stop = threading.Event()
    errors = []

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with psycopg.connect(db_url) as conn:
                for i in range(per_writer):
                    for _ in range(rnd.randint(1, 3)):
                        conn.execute("SELECT outbox_emit(%s, 'x', '{}')", (f"t:{rnd.randint(1, 3)}",))
                    if rnd.random() < 0.2:
                        threading.Event().wait(rnd.random() / 50)  # hold the transaction open a little
                    conn.commit()
        except Exception as exc:  # reported below
            errors.append(exc)

    def claimer() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                claim(conn, batch=7)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    claimers = [threading.Thread(target=claimer) for _ in range(2)]
    for t in threads + claimers:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    for t in claimers:
        t.join(10)
    assert not errors
    with psycopg.connect(db_url, autocommit=True) as conn:
        claim(conn)
        rows = sequenced(conn)
        assert all(r[3] is not None for r in rows)
        pos = [r[3] for r in rows]
        assert pos == list(range(pos[0], pos[0] + len(pos)))
        by_topic = {}
        for _, txid, topic, p, tpos, _ in rows:
            by_topic.setdefault(topic, []).append(tpos)
        for topic, tposes in by_topic.items():
            assert tposes == list(range(tposes[0], tposes[0] + len(tposes))), topic
        # One transaction's rows are contiguous in pos: a batch never interleaves them.
        seen, last = set(), None
        for _, txid, *_ in rows:
            if txid != last:
                assert txid not in seen
                seen.add(txid)
                last = txid
