"""Nothing on the internal network is trusted: a real broker, a real relay, the subscriber
library and PostgreSQL, with an attacker who can reach the broker's ports."""
from __future__ import annotations

import json
import time

import pytest
import zmq

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
    start = relay_state(stack.db_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.db_url, after_pos=start, heartbeat_timeout=1.0)
    forger = anonymous(zmq.PUB, stack.frontend)
    try:
        keep_sending(forger, forged_event(start + 1))
    finally:
        forger.close(0)
    emit(stack.db_url, 1, topic="t:1")
    sub.wait_for_pos(start + 1)
    time.sleep(0.3)
    assert [(e.pos, e.data) for e in sub.events] == [(start + 1, {"i": 0})], "a forged event was delivered"


def test_a_forged_heartbeat_ahead_skips_nothing(stack, collectors):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.db_url)[0]
    sub = collectors(broker_url=stack.backend, dsn=stack.db_url, after_pos=start, heartbeat_timeout=1.0)
    forger = anonymous(zmq.PUB, stack.frontend)
    try:
        keep_sending(forger, forged_heartbeat(start + 3))
    finally:
        forger.close(0)
    emit(stack.db_url, 3)
    wait_until(lambda: relay_state(stack.db_url)[1] >= start + 3, what="the relay to publish")
    try:
        wait_until(lambda: len(sub.events) >= 3, timeout=5, what="three real events")
    except TimeoutError:
        pass
    assert sub.positions() == [start + 1, start + 2, start + 3], "real commits were skipped"


def test_an_anonymous_subscriber_reads_nothing(stack, collectors):
    stack.start_broker()
    stack.start_relay()
    start = relay_state(stack.db_url)[0]
    spy = anonymous(zmq.SUB, stack.backend)
    try:
        sub = collectors(broker_url=stack.backend, dsn=stack.db_url, after_pos=start, heartbeat_timeout=1.0)
        time.sleep(0.5)  # both connected
        emit(stack.db_url, 3, topic="checklist:1")
        sub.wait_for_pos(start + 3)
        read = []
        deadline = time.monotonic() + 1.0  # heartbeats come every 0.3 s: the loop must end
        while time.monotonic() < deadline and spy.poll(100):
            read.append(spy.recv_multipart())
    finally:
        spy.close(0)
    assert read == [], f"an anonymous subscriber read {len(read)} messages, e.g. {read[:1]}"
