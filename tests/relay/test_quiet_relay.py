"""A quiet relay stays armed and claims each ring once.

While events come slowly, every writer rings the doorbell anyway (the relay sleeps between
them), so disarming at each ring only bought more work: disarm in the claim, wait
claim_interval, claim again, arm, list the transactions in progress, claim once more, about
three claims per event. Armed, a ring costs one claim. The relay polls every 30 s here, so
every event published in time came through a ring.
"""
from __future__ import annotations

import re
import time
import urllib.request

import psycopg
import pytest

from stack.processes import free_port
from tests.relay.conftest import armed, relay_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

EVENTS = 20
SPACING = 0.02  # ten times BUSY_GAP: a trickle, however slow the machine


def metrics(port: int, *names: str) -> list[float]:
    """Values from one scrape of the relay's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [float(re.search(rf"^{name} (\S+)$", text, re.M).group(1)) for name in names]


def metric(port: int, name: str) -> float:
    return metrics(port, name)[0]


def claims(port: int) -> float:
    return metric(port, "outbox_relay_claims_total")


def test_a_trickle_costs_one_claim_per_event_and_leaves_the_doorbell_armed(stack, collectors):
    stack.start_broker()
    port = free_port()
    stack.start_relay(OUTBOX_RELAY_POLL_INTERVAL="30", OUTBOX_RELAY_METRICS_PORT=str(port))
    db = stack.database_url
    wait_until(lambda: armed(db), what="the relay to arm the doorbell")
    start = relay_state(db)[0]
    sub = collectors(broker_url=stack.backend, dsn=db, after_pos=start, heartbeat_timeout=1.0)
    time.sleep(0.2)  # the arming's own claim is behind us
    before = claims(port)
    with psycopg.connect(db, autocommit=True) as conn:
        for i in range(EVENTS):
            conn.execute("SELECT outbox_emit('checklist:1', 'test', %s::jsonb)", (f'{{"i": {i}}}',))
            time.sleep(SPACING)
    sub.wait_for_pos(start + EVENTS)
    assert sub.positions() == list(range(start + 1, start + EVENTS + 1))
    assert [e.data["i"] for e in sub.events] == list(range(EVENTS))
    spent = claims(port) - before
    # One claim per ring; a little slack for a ring that arrives while the claim before it
    # already took its row (that wake-up then claims nothing). Disarming at each ring, as
    # the relay did before, takes about three per event.
    assert EVENTS <= spent <= EVENTS + 3, spent
    # Every claim's duration is in outbox_relay_claim_seconds (operators see a slow claim
    # there). A claim is counted when sent and timed when answered, so one may be in flight
    # (on a busy machine, even when the test starts): compare the relay's two totals, both
    # counted from its start, from one scrape.
    wait_until(lambda: len(set(metrics(port, "outbox_relay_claims_total", "outbox_relay_claim_seconds_count"))) == 1,
               what="every claim sent to be timed")
    assert armed(db)


def test_a_doorbell_disarmed_behind_the_relays_back_is_armed_again_at_the_next_empty_wake(stack, collectors):
    """The doorbell is a hint anyone may flip: a quiet relay that finds it disarmed at a
    wake-up with nothing to claim arms it again, so later writers ring again."""
    stack.start_broker()
    stack.start_relay(OUTBOX_RELAY_POLL_INTERVAL="30")
    db = stack.database_url
    wait_until(lambda: armed(db), what="the relay to arm the doorbell")
    start = relay_state(db)[0]
    sub = collectors(broker_url=stack.backend, dsn=db, after_pos=start, heartbeat_timeout=1.0)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT outbox_set_doorbell(false)")
        conn.execute("NOTIFY outbox")  # a wake-up that finds nothing to claim
        wait_until(lambda: armed(db), timeout=10, what="the relay to arm the doorbell again")
        conn.execute("SELECT outbox_emit('checklist:1', 'test', '{}')")  # rings: armed again
    sub.wait_for_pos(start + 1, timeout=10)  # well before the 30 s poll
