"""The sync server trusts nothing on the internal network: an attacker who reaches the
broker's ports cannot put an event on a client's screen, make the server skip real
commits, or make /healthz report a position nobody committed."""
from __future__ import annotations

import asyncio
import json

import pytest
import zmq
import zmq.asyncio
from tornado.httpclient import AsyncHTTPClient

from stack.sockjs_client import connect
from syncserver.redaction import for_browsers
from tests.syncserver.harness import ORIGIN, new_topic, sync_stack, token

pytestmark = pytest.mark.django_db(transaction=True)


def forged_event(pos: int, topic: str, tpos: int) -> list[bytes]:
    env = {"v": 1, "pos": pos, "tpos": tpos, "topic": topic, "tx": "1", "entity": "item", "id": "1",
           "op": "update", "version": 99, "data": {"text": "forged"}, "changed": ["text"], "actor": None,
           "source": "api", "request_id": None, "committed_at": "2030-01-01T00:00:00.000000Z", "tx_last": True}
    return [topic.encode(), json.dumps(env).encode()]


def forged_heartbeat(pos: int) -> list[bytes]:
    return [b"_heartbeat", json.dumps({"v": 1, "type": "heartbeat", "pos": pos, "ts": "x"}).encode()]


async def keep_sending(url: str, frames: list[bytes], seconds: float = 1.5) -> None:
    """A plain PUB on the broker frontend, as anything on the internal network could open."""
    sock = zmq.asyncio.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await sock.send_multipart(frames)
            await asyncio.sleep(0.05)
    finally:
        sock.close(0)


def seen_by_browsers(event) -> dict:
    """The envelope a browser receives for a relay's event (syncserver/redaction.py)."""
    return json.loads(for_browsers(event).raw)


async def test_a_forged_event_never_reaches_a_client_and_the_real_commit_does(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url, ORIGIN)
        try:
            await c.auth(token([topic]))
            await c.subscribe(topic, 0)
            await c.recv_type("subscribed")
            await keep_sending(stack.frontend, forged_event(await stack.relay.last_pos() + 1, topic, 1))
            real = await stack.relay.commit(topic, [{"id": 1, "data": {"text": "real"}}])
            got = (await c.recv_type("events"))["events"]
            assert got == [seen_by_browsers(real[0])], f"the client got {got}"
            assert await c.quiet(0.3) == []
        finally:
            await c.close()


async def test_a_forged_heartbeat_ahead_neither_skips_commits_nor_fools_healthz(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url, ORIGIN)
        http = AsyncHTTPClient(force_instance=True)
        try:
            await c.auth(token([topic]))
            await c.subscribe(topic, 0)
            await c.recv_type("subscribed")
            ahead = await stack.relay.last_pos() + 3
            forging = asyncio.create_task(keep_sending(stack.frontend, forged_heartbeat(ahead)))
            reported = set()
            while not forging.done():  # the real relay's heartbeats come every 0.3 s as well
                health = json.loads((await http.fetch(f"{stack.base}/healthz")).body)
                reported.add(health["broker"]["pos"])
                await asyncio.sleep(0.05)
            await forging
            assert ahead not in reported, f"/healthz repeated a forged position: {reported}"
            real = await stack.relay.items(topic, 3)
            got = []
            try:
                while len(got) < 3:
                    got += (await c.recv_type("events", timeout=5))["events"]
            except asyncio.TimeoutError:
                pass
            assert got == [seen_by_browsers(e) for e in real], f"the client got {got}"
        finally:
            http.close()
            await c.close()


async def test_a_lying_heartbeat_with_a_relay_key_is_counted_in_metrics_not_acted_on(db_url):
    """Defence in depth, past CURVE: a publisher key in the wrong hands."""
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url, ORIGIN)
        http = AsyncHTTPClient(force_instance=True)
        liar = zmq.asyncio.Context.instance().socket(zmq.PUB)
        liar.setsockopt(zmq.LINGER, 0)
        stack.keys.publisher().apply(liar)
        liar.connect(stack.frontend)
        try:
            await c.auth(token([topic]))
            await c.subscribe(topic, 0)
            await c.recv_type("subscribed")
            ahead = await stack.relay.last_pos() + 3
            reported = set()
            for _ in range(20):
                await liar.send_multipart(forged_heartbeat(ahead))
                await asyncio.sleep(0.05)
                reported.add(json.loads((await http.fetch(f"{stack.base}/healthz")).body)["broker"]["pos"])
            assert ahead not in reported, reported
            real = await stack.relay.items(topic, 3)
            got = []
            while len(got) < 3:
                got += (await c.recv_type("events", timeout=5))["events"]
            assert got == [seen_by_browsers(e) for e in real]
            metrics = (await http.fetch(f"{stack.base}/metrics")).body.decode()
            counted = [line for line in metrics.splitlines()
                       if line.startswith('outbox_subscriber_unfounded_claims_total{kind="heartbeat"}')]
            assert counted and float(counted[0].split()[-1]) >= 1, metrics[-2000:]
        finally:
            liar.close(0)
            http.close()
            await c.close()
