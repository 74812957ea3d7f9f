"""Positions follow commit order at any backlog (issue 13).

For any two transactions that wrote the same row, the one that committed later must get the
higher pos and tpos, whatever the backlog, the batch size or the moment of a takeover. The
race: T2 writes an early row (a low outbox id) and stays open; other rows commit; T1 updates
item X and commits; T2 updates X and commits. T2's first row is at the head of the backlog,
T1's row is further back: a claim that takes "the first N rows by id, plus the rest of their
transactions" sequences T2 (version 3 of X) before T1 (version 2 of X).
"""
from __future__ import annotations

import signal

import psycopg
import pytest

from tests.relay.conftest import drain, emit, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hot_item(db_url) -> tuple[int, int]:
    """(checklist id, item id): one checklist with one item, committed."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = conn.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
            " is_staff, is_active, date_joined) VALUES ('', false, 'writer', '', '', '', false, true, now())"
            " RETURNING id").fetchone()[0]
        checklist = conn.execute(
            "INSERT INTO checklists_checklist (title, owner_id, created_at, version)"
            " VALUES ('hot', %s, now(), 1) RETURNING id", (user,)).fetchone()[0]
        item = conn.execute(
            "INSERT INTO checklists_item (checklist_id, text, done, position, version)"
            " VALUES (%s, 'v1', false, 0, 1) RETURNING id", (checklist,)).fetchone()[0]
    return checklist, item


def cutoff_race(db_url: str, checklist: int, item: int, filler: int) -> None:
    """The race of the module docstring, with `filler` committed rows between T2's first row
    and T1's update; leaves everything committed and unsequenced."""
    with psycopg.connect(db_url) as t2, psycopg.connect(db_url) as t1:
        t2.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                   " VALUES (%s, 'early', false, 1, 1)", (checklist,))
        emit(db_url, filler, topic="t:filler")
        t1.execute("UPDATE checklists_item SET text = 'v2' WHERE id = %s", (item,))
        t1.commit()
        t2.execute("UPDATE checklists_item SET text = 'v3' WHERE id = %s", (item,))
        t2.commit()


def item_history(conn: psycopg.Connection, item: int) -> list[tuple]:
    """(pos, tpos, version, text) of every event of the item, in pos order."""
    return conn.execute(
        "SELECT pos, tpos, version, data ->> 'text' FROM outbox"
        " WHERE entity = 'item' AND entity_id = %s ORDER BY pos", (str(item),)).fetchall()


def assert_in_commit_order(history: list[tuple]) -> None:
    assert all(pos is not None for pos, *_ in history), history
    assert [v for _, _, v, _ in history] == sorted(v for _, _, v, _ in history), \
        f"versions out of pos order: {history}"
    assert [t for _, t, _, _ in history] == sorted(t for _, t, _, _ in history), history
    assert history[-1][3] == "v3"  # a subscriber applying in pos order ends as the table does


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 200])
def test_a_batch_cutoff_never_puts_a_later_commit_first(db_url, hot_item, batch):
    checklist, item = hot_item
    with psycopg.connect(db_url, autocommit=True) as relay:
        drain(relay, 2000)  # the fixture's own rows
        cutoff_race(db_url, checklist, item, filler=batch + 1)
        drain(relay, batch)
        assert relay.execute("SELECT count(*) FROM outbox WHERE pos IS NULL").fetchone()[0] == 0
        assert_in_commit_order(item_history(relay, item))


def test_a_straddling_transaction_waits_for_rows_it_conflicts_with_beyond_the_head(db_url, hot_item):
    """Every transaction in the head extends beyond it: the claim still makes progress, and
    takes the earlier-ending conflicting transaction first."""
    checklist, item = hot_item
    with psycopg.connect(db_url, autocommit=True) as relay:
        drain(relay, 2000)
        cutoff_race(db_url, checklist, item, filler=0)  # head = [T2's early row], T1 right behind
        drain(relay, 1)
        assert_in_commit_order(item_history(relay, item))


@pytest.mark.parametrize("batch", ["1", "2", "50"])
def test_order_holds_across_a_takeover_mid_backlog(stack, db_url, hot_item, batch):
    """A backlog of many batches (no relay ran while it built up), a leader killed with
    kill -9 while draining it, a standby finishing the job."""
    checklist, item = hot_item
    for _ in range(3):
        cutoff_race(db_url, checklist, item, filler=2 * int(batch) + 5)
    emit(db_url, 300, topic="t:after")
    stack.start_broker()
    first = stack.start_relay("relay-a", OUTBOX_RELAY_BATCH_SIZE=batch)

    def claimed_some() -> bool:
        with psycopg.connect(db_url, autocommit=True) as conn:
            return conn.execute("SELECT last_pos FROM outbox_relay_state").fetchone()[0] > 0

    wait_until(claimed_some, what="the first claims")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(5)
    stack.start_relay("relay-b", OUTBOX_RELAY_BATCH_SIZE=batch)

    def drained() -> bool:
        with psycopg.connect(db_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM outbox WHERE pos IS NULL").fetchone()[0] == 0

    wait_until(drained, timeout=60, what="the backlog to drain")
    with psycopg.connect(db_url, autocommit=True) as conn:
        history = item_history(conn, item)
        texts = [t for *_, t in history if t in ("v2", "v3")]
        assert texts == ["v2", "v3"] * 3
        assert_in_commit_order(history)
        positions = [p for (p,) in conn.execute("SELECT pos FROM outbox ORDER BY pos")]
        assert positions == list(range(1, len(positions) + 1))
