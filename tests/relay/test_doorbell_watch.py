"""An open transaction never delays the publication of others' commits (issue 13).

A writer rings the doorbell only if it finds it armed at its first outbox row; one that
wrote while the relay was awake (disarmed) commits without ringing. So when the relay arms
and goes to sleep, it watches the transactions that were in progress at that moment and
drains whenever one of them ends. A transaction that stays open must not stop that watch:
the others' commits are published at once, not at the next poll.

The relay here polls every 30 s, so anything published sooner came through the watch.
"""
from __future__ import annotations

import time

import psycopg
import pytest

from tests.relay.conftest import armed, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

POLL = "30"
SOON = 10.0  # well below the poll interval


def sequenced(db_url: str, topic: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT bool_and(pos IS NOT NULL) FROM outbox WHERE topic = %s", (topic,)).fetchone()[0]


def test_a_commit_is_published_at_once_while_another_transaction_stays_open(stack, db_url):
    stack.start_broker()
    stack.start_relay(OUTBOX_RELAY_POLL_INTERVAL=POLL)
    wait_until(lambda: armed(db_url), what="the relay to arm the doorbell and sleep")
    with psycopg.connect(db_url, autocommit=True) as admin, psycopg.connect(db_url) as slow, \
            psycopg.connect(db_url) as quick:
        # Both write while the doorbell reads "disarmed" (as they would while the relay is
        # busy draining), so neither will ring at commit.
        admin.execute("SELECT outbox_set_doorbell(false)")
        slow.execute("SELECT outbox_emit('t:slow', 'x', '{}')")
        quick.execute("SELECT outbox_emit('t:quick', 'x', '{}')")
        admin.execute("NOTIFY outbox")  # the relay wakes, finds nothing, arms, watches both
        wait_until(lambda: armed(db_url), what="the relay to arm again")
        time.sleep(2)  # past any fixed watch deadline: the watch must last while they run
        quick.commit()
        opened = time.monotonic()
        wait_until(lambda: sequenced(db_url, "t:quick"), timeout=SOON,
                   what="the quick commit to be published while the slow transaction stays open")
        time.sleep(max(0.0, 10 - (time.monotonic() - opened)))  # the slow one stays open 10 s
        assert not sequenced(db_url, "t:slow")
        slow.commit()
        wait_until(lambda: sequenced(db_url, "t:slow"), timeout=SOON,
                   what="the slow transaction to be published once it commits")
