"""The claim (outbox_claim in migrations/schema.sql) against real PostgreSQL."""
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


# ---- the envelope, fsync-free empty claims, the doorbell in the claim

def test_sql_envelope_is_the_python_envelope_for_awkward_values(db_url):
    from outbox_relay.envelope import decode, encode

    awkward = 'quote " backslash \\ newline \n tab \t unicode é ✓ \u0001'
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('outbox.actor', %s, true), set_config('outbox.request_id', %s, true)",
                     (awkward, "r\"1"))
        conn.execute("SELECT outbox_emit(%s, %s, %s::jsonb, %s)",
                     ("t:" + awkward, "ev\"ent", json.dumps({"k": awkward, "n": [1, None, True]}), "id\\1"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT * FROM outbox_claim(10, 0, 1000000)")
        row = conn.execute("SELECT o.*, outbox_envelope(o) AS env FROM outbox o ORDER BY pos DESC LIMIT 1").fetchone()
        cols = [d.name for d in conn.execute("SELECT o.*, 1 AS env FROM outbox o LIMIT 0").description]
    doc = dict(zip(cols, row))
    sql_env = doc.pop("env")
    assert json.loads(sql_env) == json.loads(encode(doc))
    event = decode(sql_env.encode())
    assert event.topic == "t:" + awkward and event.actor == awkward and event.id == "id\\1"
    assert list(json.loads(sql_env)) == list(json.loads(encode(doc)))  # same keys, same order


def test_poison_envelope_has_no_data_and_the_error(db_url):
    emit(db_url, 1, topic="t:p")
    with psycopg.connect(db_url, autocommit=True) as conn:
        [(pos, topic, env, err)] = claim(conn, max_bytes=1)
    assert err and env["error"] == err and env["data"] is None and env["pos"] == pos


def _state_version(conn):
    return conn.execute("SELECT xmin::text, published_pos FROM outbox_relay_state").fetchone()


def test_an_empty_claim_writes_nothing_unless_published_pos_moved(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT * FROM outbox_claim(10, 0, 1000000)")  # drain whatever is there
        before = _state_version(conn)
        assert conn.execute("SELECT count(*) FROM outbox_claim(10, 0, 1000000, true)").fetchone()[0] == 0
        assert _state_version(conn) == before                      # no update: no xid, no fsync
        newer = before[1] + 5
        conn.execute("SELECT count(*) FROM outbox_claim(10, %s, 1000000, true)", (newer,))
        assert _state_version(conn)[1] == newer                    # a newer published_pos is still recorded


def test_a_claim_with_work_disarms_the_doorbell_and_an_empty_one_does_not(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT * FROM outbox_claim(100000, 0, 1000000)")
        conn.execute("SELECT outbox_set_doorbell(true)")
        conn.execute("SELECT count(*) FROM outbox_claim(10, 0, 1000000, true)")
        assert conn.execute("SELECT armed FROM outbox_doorbell").fetchone()[0] is True
        emit(db_url, 2, topic="t:d")
        assert conn.execute("SELECT count(*) FROM outbox_claim(10, 0, 1000000, true)").fetchone()[0] == 2
        assert conn.execute("SELECT armed FROM outbox_doorbell").fetchone()[0] is False
        conn.execute("SELECT outbox_set_doorbell(true)")
        assert conn.execute("SELECT armed FROM outbox_doorbell").fetchone()[0] is True
        emit(db_url, 1, topic="t:d")
        conn.execute("SELECT count(*) FROM outbox_claim(10, 0, 1000000, false)")
        assert conn.execute("SELECT armed FROM outbox_doorbell").fetchone()[0] is True


def test_record_published_never_goes_back(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute("SELECT published_pos FROM outbox_relay_state").fetchone()[0]
        assert conn.execute("SELECT outbox_record_published(%s)", (cur + 7,)).fetchone()[0] == cur + 7
        assert conn.execute("SELECT outbox_record_published(%s)", (cur,)).fetchone()[0] == cur + 7
