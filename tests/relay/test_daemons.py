"""Broker and relay as real processes, a real subscriber, real PostgreSQL faults."""
import json
import signal
import subprocess
import threading
import time
import urllib.request

import psycopg
import pytest

from stack.processes import free_port, python_module
from tests.relay.conftest import emit, relay_state, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def assert_exactly_once_in_order(collector, first: int, last: int) -> None:
    assert collector.positions() == list(range(first, last + 1))


def test_events_flow_end_to_end_and_sigterm_exits_0(stack, collectors):
    broker = stack.start_broker()
    port = free_port()
    relay = stack.start_relay(OUTBOX_RELAY_MAX_EVENT_BYTES="300", OUTBOX_RELAY_METRICS_PORT=str(port))
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    emit(stack.database_url, 10, topic="checklist:1", per_tx=2)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:  # a poison row in the middle
        conn.execute("SELECT outbox_emit('checklist:1', 'big', %s::jsonb)", (json.dumps({"b": "x" * 1000}),))
    emit(stack.database_url, 5, topic="checklist:2")
    sub.wait_for_pos(start + 16)
    assert_exactly_once_in_order(sub, start + 1, start + 16)
    poison = sub.events[10]
    assert poison.error and poison.data is None
    assert [e.tx_last for e in sub.events[:4]] == [False, True, False, True]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "outbox_relay_leader 1.0" in metrics
    assert "outbox_relay_events_published_total 16.0" in metrics
    assert "outbox_relay_poison_rows_total 1.0" in metrics
    assert "outbox_relay_publish_lag_seconds_count" in metrics
    assert relay.stop() == 0 and "relay stopped" in relay.output()
    assert broker.stop() == 0


def test_kill_9_of_the_leader_standby_takes_over_without_loss(stack, collectors):
    stack.start_broker()
    first = stack.start_relay("relay-a")
    second = stack.start_relay("relay-b", wait="relay standby")
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    total, done = 600, threading.Event()

    def writer() -> None:
        for _ in range(total // 10):
            emit(stack.database_url, 10, topic="checklist:7", per_tx=5)
            time.sleep(0.005)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    wait_until(lambda: sub.sub.delivered_pos > start + 50, what="first events")
    first.kill(signal.SIGKILL)  # mid-stream
    second.wait_for_line("relay leader", timeout=5)
    t.join(60)
    assert done.is_set()
    sub.wait_for_pos(start + total, timeout=20)
    assert_exactly_once_in_order(sub, start + 1, start + total)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        pos = [r[0] for r in conn.execute("SELECT pos FROM outbox ORDER BY pos")]
    assert pos == list(range(start + 1, start + total + 1))


def test_two_relays_started_at_once_with_concurrent_writers(stack, collectors):
    stack.start_broker()
    start = relay_state(stack.database_url)[0]
    relays = [stack.start_relay(f"relay-{i}", wait=None) for i in range(2)]
    for r in relays:
        r.wait_for_line("relay started")
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    threads = [threading.Thread(target=emit, args=(stack.database_url, 100, f"t:{i % 2}", 1 + i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sub.wait_for_pos(start + 400)
    assert_exactly_once_in_order(sub, start + 1, start + 400)
    leaders = [r for r in relays if "relay leader" in r.output()]
    assert len(leaders) == 1 and all("relay standby" in r.output() for r in relays if r is not leaders[0])
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(DISTINCT pos), min(pos), max(pos) FROM outbox").fetchone() == (400, start + 1, start + 400)


def _terminate(db_url: str, app: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()", (app,)).fetchone()[0]


def test_listener_terminated_no_event_lost(stack, collectors):
    stack.start_broker()
    # A long poll interval: only the doorbell and the reconnect's drain can deliver in time.
    relay = stack.start_relay(OUTBOX_RELAY_POLL_INTERVAL="60")
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=30)
    emit(stack.database_url, 3)
    sub.wait_for_pos(start + 3, timeout=10)
    assert _terminate(stack.database_url, "outbox-relay-listener") == 1
    emit(stack.database_url, 3)
    relay.wait_for_line("listener lost", timeout=10)
    wait_until(lambda: _listening(stack.database_url), what="the listener to reconnect")
    emit(stack.database_url, 3)
    sub.wait_for_pos(start + 9, timeout=10)
    assert_exactly_once_in_order(sub, start + 1, start + 9)


def _listening(db_url: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay-listener'"
                            " AND datname = current_database()").fetchone()[0] == 1


def test_leader_connection_terminated_it_stops_and_recovers(stack, collectors):
    stack.start_broker()
    relay = stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    emit(stack.database_url, 5)
    sub.wait_for_pos(start + 5)
    assert _terminate(stack.database_url, "outbox-relay") == 1
    relay.wait_for_line("lost its database session", timeout=10)
    emit(stack.database_url, 5)
    sub.wait_for_pos(start + 10, timeout=15)
    assert_exactly_once_in_order(sub, start + 1, start + 10)
    assert relay.output().count("relay leader") == 2


def _set_silent_writers(db_url: str, silent: bool) -> None:
    """Writers ring from outbox_emit and the capture trigger (migrations/schema.sql), raw INSERTs
    through txid's default (0008); none of them rings in a session whose outbox.rung is
    already 'yes'."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        db = psycopg.sql.Identifier(conn.info.dbname)
        if silent:
            conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET outbox.rung = 'yes'").format(db))
        else:
            conn.execute(psycopg.sql.SQL("ALTER DATABASE {} RESET outbox.rung").format(db))


def test_doorbell_disabled_polling_still_delivers(stack, collectors):
    _set_silent_writers(stack.database_url, True)
    try:
        stack.start_broker()
        relay = stack.start_relay(OUTBOX_RELAY_POLL_INTERVAL="0.3")
        start = relay_state(stack.database_url)[0]
        sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=30)
        for _ in range(3):
            emit(stack.database_url, 2)
            time.sleep(0.2)
        sub.wait_for_pos(start + 6)
        assert_exactly_once_in_order(sub, start + 1, start + 6)
        assert relay.alive()
    finally:
        _set_silent_writers(stack.database_url, False)


def test_broker_restart_and_late_subscriber_repair_gaps(stack, collectors):
    broker = stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    emit(stack.database_url, 5)
    sub.wait_for_pos(start + 5)
    broker.kill(signal.SIGKILL)
    broker.proc.wait(5)
    emit(stack.database_url, 5)  # published into the void
    wait_until(lambda: relay_state(stack.database_url)[1] >= start + 10, what="relay to publish")
    stack.start_broker()
    emit(stack.database_url, 5)
    sub.wait_for_pos(start + 15, timeout=20)
    # (ZeroMQ may have queued the messages sent while the broker was down and delivered
    # them after the reconnect, or dropped them: either way each arrives exactly once.)
    assert_exactly_once_in_order(sub, start + 1, start + 15)
    # A late joiner from an old position: catches up from the outbox, then goes live.
    late = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start + 2, heartbeat_timeout=1.0)
    emit(stack.database_url, 2)
    late.wait_for_pos(start + 17)
    assert_exactly_once_in_order(late, start + 3, start + 17)
    # after_pos=None: live only, from the published position the relay has recorded (with
    # its claims and heartbeats: a quiet relay records the last event's at the next one).
    wait_until(lambda: relay_state(stack.database_url)[1] >= start + 17, what="relay to record pos 17")
    live = collectors(broker_url=stack.backend, dsn=stack.database_url, heartbeat_timeout=1.0)
    wait_until(lambda: live.sub.delivered_pos >= start + 17, what="live subscriber to start")
    emit(stack.database_url, 1)
    live.wait_for_pos(start + 18)
    assert live.positions() == [start + 18]


def _lose_on_the_wire(db_url: str, n: int) -> None:
    """Sequence n events and record them as published, without sending them: to every
    subscriber they are lost messages (claiming our own uncommitted rows, the relay never
    sees them unsequenced)."""
    with psycopg.connect(db_url) as conn:
        for i in range(n):
            conn.execute("SELECT outbox_emit('t:lost', 'x', '{}')")
        last = conn.execute("SELECT max(r_pos) FROM outbox_claim(1000000, 0, 1000000)").fetchone()[0]
        conn.execute("UPDATE outbox_relay_state SET published_pos = greatest(published_pos, %s)", (last,))


def test_lost_messages_are_repaired_on_gap_and_on_heartbeat(stack, collectors):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=5)
    emit(stack.database_url, 2)
    sub.wait_for_pos(start + 2)
    _lose_on_the_wire(stack.database_url, 3)
    emit(stack.database_url, 2)  # the next live event reveals the gap
    sub.wait_for_pos(start + 7)
    assert sub.sub.catch_ups == 1
    _lose_on_the_wire(stack.database_url, 3)  # nothing follows: the heartbeat reveals it
    sub.wait_for_pos(start + 10)
    assert sub.sub.catch_ups == 2
    assert_exactly_once_in_order(sub, start + 1, start + 10)
    assert [e.topic for e in sub.events[2:5]] == ["t:lost"] * 3


def test_a_burst_larger_than_one_drain_arrives_whole_from_the_stream(stack, collectors):
    """The subscriber reads messages already queued without awaiting each (up to
    DRAIN_AT_MOST per turn): a burst of several drains' worth, in one transaction, arrives
    exactly once and in order from the stream itself, with no repair from the outbox."""
    from outbox_relay.subscriber import DRAIN_AT_MOST

    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=5)
    emit(stack.database_url, 1)
    sub.wait_for_pos(start + 1)
    repairs = sub.sub.catch_ups
    burst = 2 * DRAIN_AT_MOST + 7
    emit(stack.database_url, burst, per_tx=burst)
    sub.wait_for_pos(start + 1 + burst)
    assert_exactly_once_in_order(sub, start + 1, start + 1 + burst)
    assert sub.sub.catch_ups == repairs


@pytest.mark.parametrize("module, env", [
    ("outbox_relay", {"OUTBOX_RELAY_BATCH_SIZE": "many"}),
    ("outbox_relay", {"OUTBOX_RELAY_POLL_INTERVAL": "0"}),
    ("outbox_relay.broker", {"OUTBOX_BROKER_FRONTEND": "127.0.0.1:5557"}),
])
def test_bad_settings_exit_2_with_one_line(module, env):
    import os
    proc = subprocess.run(python_module(module), env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and list(env)[0] in lines[0]


def test_out_of_order_commits_are_all_delivered_repeatedly(stack, collectors):
    """Transaction A writes first and commits last, again and again, while B commits in
    between (and a third transaction stays open throughout): every event arrives."""
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    with psycopg.connect(stack.database_url) as idle, psycopg.connect(stack.database_url) as a:
        idle.execute("SELECT outbox_emit('t:open', 'x', '{}')")  # open for the whole test
        for i in range(20):
            a.execute("SELECT outbox_emit('t:a', 'x', '{}')")
            emit(stack.database_url, 1, topic="t:b")
            sub.wait_for_pos(start + 2 * i + 1, timeout=10)  # B is not held back by A or the open one
            a.commit()
            sub.wait_for_pos(start + 2 * i + 2, timeout=10)
        idle.rollback()
    assert_exactly_once_in_order(sub, start + 1, start + 40)
    assert [e.topic for e in sub.events] == ["t:b", "t:a"] * 20
