"""Nothing on the internal network is trusted: a real broker, a real relay, the subscriber
library and PostgreSQL, with an attacker who can reach the broker's ports."""
from __future__ import annotations

import json
import time

import psycopg
import pytest
import zmq

from runtime.curve import ClientKeys
from stack.keys import KeySet
from tests.relay.conftest import emit, relay_state, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def forged_event(pos: int, topic: str = "t:1", tpos: int = 1) -> list[bytes]:
    env = {"v": 1, "pos": pos, "tpos": tpos, "topic": topic, "tx": "1", "entity": "item", "id": "1",
           "op": "update", "version": 99, "data": {"forged": True}, "changed": ["text"], "actor": None,
           "source": "api", "request_id": None, "committed_at": "2030-01-01T00:00:00.000000Z", "tx_last": True}
    return [topic.encode(), json.dumps(env).encode()]


def forged_heartbeat(pos: int) -> list[bytes]:
    return [b"_heartbeat", json.dumps({"v": 1, "type": "heartbeat", "pos": pos, "ts": "x"}).encode()]


def anonymous(kind: int, url: str) -> zmq.Socket:
    """A plain socket, as anything on the internal network could open."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    return sock


def keep_sending(sock: zmq.Socket, frames: list[bytes], seconds: float = 1.5) -> None:
    """Past ZeroMQ's slow-joiner window: whatever the broker would accept, it has by then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.send_multipart(frames)
        time.sleep(0.05)


def test_an_anonymous_publisher_cannot_inject_an_event(stack, collectors):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    forger = anonymous(zmq.PUB, stack.frontend)
    try:
        keep_sending(forger, forged_event(start + 1))
    finally:
        forger.close(0)
    emit(stack.database_url, 1, topic="t:1")
    sub.wait_for_pos(start + 1)
    time.sleep(0.3)
    assert [(e.pos, e.data) for e in sub.events] == [(start + 1, {"i": 0})], "a forged event was delivered"


def test_a_forged_heartbeat_ahead_skips_nothing(stack, collectors):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    forger = anonymous(zmq.PUB, stack.frontend)
    try:
        keep_sending(forger, forged_heartbeat(start + 3))
    finally:
        forger.close(0)
    emit(stack.database_url, 3)
    wait_until(lambda: relay_state(stack.database_url)[1] >= start + 3, what="the relay to publish")
    try:
        wait_until(lambda: len(sub.events) >= 3, timeout=5, what="three real events")
    except TimeoutError:
        pass
    assert sub.positions() == [start + 1, start + 2, start + 3], "real commits were skipped"


def test_an_anonymous_subscriber_reads_nothing(stack, collectors):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    spy = anonymous(zmq.SUB, stack.backend)
    try:
        sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
        time.sleep(0.5)  # both connected
        emit(stack.database_url, 3, topic="checklist:1")
        sub.wait_for_pos(start + 3)
        read = []
        deadline = time.monotonic() + 1.0  # heartbeats come every 0.3 s: the loop must end
        while time.monotonic() < deadline and spy.poll(100):
            read.append(spy.recv_multipart())
    finally:
        spy.close(0)
    assert read == [], f"an anonymous subscriber read {len(read)} messages, e.g. {read[:1]}"


# ------------------------------------------------------------------ with keys, after the fix

def keyed(kind: int, url: str, curve: ClientKeys) -> zmq.Socket:
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    curve.apply(sock)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    return sock


@pytest.mark.parametrize("who", ["an unknown key", "a subscriber key"])
def test_only_publisher_keys_publish(stack, collectors, who):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    curve = stack.keys.subscriber() if who == "a subscriber key" else ClientKeys.generate(stack.keys.broker_public)
    forger = keyed(zmq.PUB, stack.frontend, curve)
    try:
        keep_sending(forger, forged_event(start + 1))
        keep_sending(forger, forged_heartbeat(start + 3), seconds=0.5)
    finally:
        forger.close(0)
    emit(stack.database_url, 3, topic="t:1")
    sub.wait_for_pos(start + 3)
    time.sleep(0.3)
    assert [(e.pos, e.data) for e in sub.events] == [(start + i + 1, {"i": i}) for i in range(3)]
    assert sub.sub.unfounded_claims == 0  # nothing even reached it


@pytest.mark.parametrize("who", ["an unknown key", "a publisher key"])
def test_only_subscriber_keys_read(stack, collectors, who):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    curve = stack.keys.publisher() if who == "a publisher key" else ClientKeys.generate(stack.keys.broker_public)
    spy = keyed(zmq.SUB, stack.backend, curve)
    try:
        sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
        time.sleep(0.5)
        emit(stack.database_url, 3, topic="checklist:1")
        sub.wait_for_pos(start + 3)
        read = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and spy.poll(100):
            read.append(spy.recv_multipart())
    finally:
        spy.close(0)
    assert read == [] and sub.positions() == [start + 1, start + 2, start + 3]


def test_a_lying_publisher_with_a_valid_key_still_cannot_make_a_subscriber_skip(stack, collectors, caplog):
    """Defence in depth: a relay key in the wrong hands (or a relay that is wrong) claims
    positions the outbox has not sequenced. Not acted on, counted, and the real commits at
    those positions are delivered when they come."""
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    liar = keyed(zmq.PUB, stack.frontend, stack.keys.publisher())
    try:
        keep_sending(liar, forged_heartbeat(start + 3))
        keep_sending(liar, forged_event(start + 5), seconds=0.5)  # a gap to a position nobody committed
        emit(stack.database_url, 5, topic="t:1")
        sub.wait_for_pos(start + 5)
    finally:
        liar.close(0)
    time.sleep(0.3)
    assert [(e.pos, e.data) for e in sub.events] == [(start + i + 1, {"i": i}) for i in range(5)]
    assert sub.sub.unfounded_claims >= 1
    assert "beyond what the outbox has sequenced" in caplog.text and "skipping" not in caplog.text


def _delete(db_url: str, where: str, *args) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM outbox WHERE {where}", args)


def test_pruned_positions_are_skipped_and_a_hole_behind_the_watermarks_back_is_not(stack, collectors, caplog):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    emit(stack.database_url, 6, topic="t:1")
    wait_until(lambda: relay_state(stack.database_url)[1] >= start + 6, what="the relay to publish")
    _delete(stack.database_url, "pos <= %s", start + 2)  # pruned: the watermark says so
    with psycopg.connect(stack.database_url, autocommit=True) as conn:  # a hole it does not explain
        conn.execute("ALTER TABLE outbox DISABLE TRIGGER outbox_retention_watermark")
        try:
            conn.execute("DELETE FROM outbox WHERE pos = %s", (start + 5,))
        finally:
            conn.execute("ALTER TABLE outbox ENABLE TRIGGER outbox_retention_watermark")
    late = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    late.wait_for_pos(start + 4)
    time.sleep(1.5)  # heartbeats keep asking; the hole stays unjumped
    assert late.positions() == [start + 3, start + 4] and late.sub.delivered_pos == start + 4
    assert "were pruned from the outbox" in caplog.text
    assert "missing from the outbox but not pruned" in caplog.text


def test_a_refused_subscriber_says_so_loses_nothing_and_goes_live_once_allowed(stack, collectors, caplog,
                                                                              monkeypatch):
    from outbox_relay import handshakes

    monkeypatch.setattr(handshakes, "RETRY", 0.3)
    broker = stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.database_url)[0]
    newcomer = ClientKeys.generate(stack.keys.broker_public)  # not (yet) in the broker's list
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0,
                     curve=newcomer)
    emit(stack.database_url, 3)
    sub.wait_for_pos(start + 3, timeout=15)  # from the outbox, each time the stream stays silent
    assert "the broker refused this key" in caplog.text and sub.sub.catch_ups >= 1
    # The operator adds the key and restarts the broker: the subscriber retries and is live.
    broker.stop()
    stack.start_broker(OUTBOX_BROKER_SUBSCRIBER_KEYS=f"{stack.keys.syncserver_public},{newcomer.public}")
    wait_until(lambda: "the broker accepts this key again" in caplog.text, what="the subscriber to be accepted")
    wait_until(lambda: sub.sub.heartbeat_at is not None, what="a heartbeat")
    before = sub.sub.catch_ups
    emit(stack.database_url, 3)
    sub.wait_for_pos(start + 6)
    assert sub.sub.catch_ups == before, "delivered from the outbox, not live"
    assert sub.positions() == list(range(start + 1, start + 7))


def test_rotating_the_relay_key_loses_nothing(stack, collectors):
    """docs/security.md: add the new public key, roll the relay onto it, remove the old."""
    old, new = stack.keys.relay_public, KeySet.generate()
    both = f"{old},{new.relay_public}"
    broker = stack.start_broker(OUTBOX_BROKER_PUBLISHER_KEYS=both)
    relay = stack.start_relay()
    start = relay_state(stack.database_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.database_url, after_pos=start, heartbeat_timeout=1.0)
    emit(stack.database_url, 2)
    sub.wait_for_pos(start + 2)
    relay.stop()
    relay = stack.start_relay(name="relay-new", OUTBOX_RELAY_CURVE_SECRET_KEY=new.relay)
    emit(stack.database_url, 2)
    sub.wait_for_pos(start + 4)
    broker.stop()
    broker = stack.start_broker(OUTBOX_BROKER_PUBLISHER_KEYS=new.relay_public)
    emit(stack.database_url, 2)
    sub.wait_for_pos(start + 6)
    assert sub.positions() == list(range(start + 1, start + 7))
    assert f"broker accepted a publisher key={new.relay_public}" in broker.output()
