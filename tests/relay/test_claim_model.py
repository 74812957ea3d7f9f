"""The claim against a model, over random interleavings (hypothesis, real PostgreSQL).

Three writer connections interleave transactions that update a few hot item rows (real row
locks serialize them), insert new rows, emit explicit events on two other topics, commit or
roll back; claims of random batch sizes (1-5, so batch cut-offs fall everywhere) run between
any two steps. The model knows which transactions committed, in which order, and what each
wrote. After everything commits and the backlog is drained:
- every committed row is sequenced exactly once, nothing rolled back is;
- pos is gapless, and tpos is gapless per topic;
- for every item row, its versions and its writers' commit order both follow pos order
  (and tpos order): a subscriber applying events by position ends as the table does.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 3
HOT_ROWS = 2
SERIAL = itertools.count()

# Kinds weighted by repetition: conflicting updates and commits are what the test is about;
# claims are rarer so that backlogs build up across batch boundaries.
KINDS = ["update"] * 6 + ["commit"] * 3 + ["insert", "emit", "rollback", "claim"]
steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, WRITERS - 1), st.integers(0, HOT_ROWS - 1)),
    min_size=1, max_size=30)


@dataclass
class Tx:
    """A writer's open transaction, as the model sees it."""
    events: int = 0
    locks: set = field(default_factory=set)


@dataclass
class Model:
    checklist: int
    rows: list[int]
    open: dict = field(default_factory=dict)       # writer -> Tx
    commit_seq: dict = field(default_factory=dict)  # txid (text) -> commit order
    committed_events: int = 0

    def holder(self, row: int) -> int | None:
        return next((w for w, tx in self.open.items() if row in tx.locks), None)


@pytest.fixture
def hot(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = conn.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
            " is_staff, is_active, date_joined) VALUES ('', false, 'model', '', '', '', false, true, now())"
            " RETURNING id").fetchone()[0]
        checklist = conn.execute("INSERT INTO checklists_checklist (title, owner_id, created_at, version)"
                                 " VALUES ('model', %s, now(), 1) RETURNING id", (user,)).fetchone()[0]
        rows = [conn.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                             " VALUES (%s, 'v', false, %s, 1) RETURNING id", (checklist, i)).fetchone()[0]
                for i in range(HOT_ROWS)]
    return checklist, rows


@pytest.fixture
def writers(db_url):
    """The writers' connections, shared by every example (each example starts with none of
    them in a transaction): opening three connections per example cost most of its time."""
    conns = [psycopg.connect(db_url) for _ in range(WRITERS)]
    yield conns
    for c in conns:
        c.close()


def claim(conn: psycopg.Connection, batch: int) -> int:
    return conn.execute("SELECT count(*) FROM outbox_claim(%s, 0, 1000000)", (batch,)).fetchone()[0]


def run_step(model: Model, writers: list[psycopg.Connection], relay: psycopg.Connection, step: tuple) -> None:
    kind, a, b = step
    if kind == "claim":
        claim(relay, a + b + 1)  # batch sizes 1..WRITERS + HOT_ROWS - 1
        return
    conn, tx = writers[a], model.open.get(a)
    if kind == "update":
        row = model.rows[b]
        if model.holder(row) not in (None, a):
            return  # would wait for the other writer's lock: not a step this driver can take
        # A text never written before (across examples too): every update is a real change.
        conn.execute("UPDATE checklists_item SET text = %s WHERE id = %s", (f"w{a}-{next(SERIAL)}", row))
        tx = model.open.setdefault(a, Tx())
        tx.locks.add(row)
        tx.events += 1
    elif kind == "insert":
        conn.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                     " VALUES (%s, 'new', false, 9, 1)", (model.checklist,))
        model.open.setdefault(a, Tx()).events += 1
    elif kind == "emit":
        conn.execute("SELECT outbox_emit(%s, 'model', '{}')", (f"model:{b % 2}",))
        model.open.setdefault(a, Tx()).events += 1
    elif kind == "commit" and tx is not None:
        txid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        conn.commit()
        model.commit_seq[txid] = len(model.commit_seq)
        model.committed_events += tx.events
        del model.open[a]
    elif kind == "rollback" and tx is not None:
        conn.rollback()
        del model.open[a]


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(program=steps, final_batch=st.integers(1, 3))
# The race of test_commit_order.py: writer 0's first row is at the head; it updates row 0
# after writer 1 did and committed.
@example(program=[("insert", 0, 0), ("update", 1, 0), ("commit", 1, 0), ("update", 0, 0)], final_batch=1)
def test_claim_follows_commit_order_over_random_interleavings(db_url, hot, writers, program, final_batch):
    checklist, rows = hot
    model = Model(checklist, rows)
    with psycopg.connect(db_url, autocommit=True) as relay:
        while claim(relay, 2000):
            pass
        first_id = relay.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        last_pos = relay.execute("SELECT last_pos FROM outbox_relay_state").fetchone()[0]
        topic_tpos = dict(relay.execute("SELECT topic, tpos FROM outbox_topic").fetchall())
        try:
            for step in program:
                run_step(model, writers, relay, step)
            for w in sorted(model.open):  # whatever is still open commits, in writer order
                run_step(model, writers, relay, ("commit", w, 0))
        finally:
            for w in writers:
                w.rollback()  # nothing is open unless a step failed
        while claim(relay, final_batch):
            pass

        got = relay.execute(
            "SELECT id, txid::text, topic, pos, tpos, entity, entity_id, version FROM outbox"
            " WHERE id > %s ORDER BY pos", (first_id,)).fetchall()

    assert len(got) == model.committed_events, "a committed row is missing or a rolled-back one appeared"
    assert all(r[3] is not None for r in got)
    assert [r[3] for r in got] == list(range(last_pos + 1, last_pos + 1 + len(got))), "pos is not gapless"
    by_topic: dict[str, list[int]] = {}
    for r in got:
        by_topic.setdefault(r[2], []).append(r[4])
    for topic, tposes in by_topic.items():
        start = topic_tpos.get(topic, 0)
        assert tposes == list(range(start + 1, start + 1 + len(tposes))), f"tpos of {topic} not gapless in pos order"
    for row in rows:
        history = [r for r in got if r[5] == "item" and r[6] == str(row)]
        versions = [r[7] for r in history]
        assert versions == sorted(versions) and len(set(versions)) == len(versions), \
            f"item {row}: versions {versions} out of pos order"
        commits = [model.commit_seq[r[1]] for r in history]
        assert commits == sorted(commits), f"item {row}: writers' commit order {commits} differs from pos order"

