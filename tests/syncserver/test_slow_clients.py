"""A client that stops reading cannot make the sync server hold ever more of its output.

Each message to a connection that already leaves more than SYNC_MAX_PENDING_BYTES unread
closes it instead (the client reconnects and resumes from its last tpos: nothing is lost);
a single message larger than the limit still goes to a client that reads. The limit here is
the smallest allowed, 64 KiB; the kernel's socket buffers on loopback take several MB before
the server has to hold anything, hence the volume written.
"""
from __future__ import annotations

import asyncio

import pytest

from stack.sockjs_client import connect
from syncserver import metrics
from tests.syncserver.harness import ORIGIN, new_topic, recv_events, sync_stack, token

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 64 * 1024
BIG = "x" * 32 * 1024  # one change's data
PER_TX = 8             # 256 KB a transaction: each message is over the limit by itself


def slow_closed() -> float:
    return metrics.SLOW_CLOSED._value.get()


@pytest.mark.parametrize("transport", ["rawwebsocket", "websocket", "eventsource", "xhr_streaming"])
async def test_a_client_that_stops_reading_is_closed_and_resumes_without_loss(db_url, transport):
    topic = new_topic(db_url)
    async with sync_stack(db_url, max_pending_bytes=LIMIT) as stack:
        before = slow_closed()
        c = await connect(transport, stack.sockjs_url, ORIGIN)
        await c.auth(token([topic]))
        await c.subscribe(topic, 0)
        assert (await c.recv())["type"] == "subscribed"
        c.pause()  # a frozen tab, a stalled network, or a client that never reads on purpose
        committed = 0
        for _ in range(200):  # at most 50 MB, far past any socket buffer
            await stack.relay.commit(topic, [{"id": i, "data": {"big": BIG}} for i in range(PER_TX)])
            committed += PER_TX
            if slow_closed() > before:
                break
        assert slow_closed() == before + 1, "the server kept writing to a client that reads nothing"
        await asyncio.sleep(0.1)
        assert stack.server.hub.sinks == {}, "the closed connection left the hub"
        c.resume()
        got = []
        try:
            while True:
                message = await c.recv(timeout=10)
                if message.get("type") == "events":
                    got += message["events"]
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            pass  # the connection is gone: what it had not read went with it
        finally:
            await c.close()
        assert len(got) < committed
        assert [e["tpos"] for e in got] == list(range(1, len(got) + 1))
        # The client resumes from what it applied and gets exactly the rest.
        again = await connect(transport, stack.sockjs_url, ORIGIN)
        try:
            await again.auth(token([topic]))
            await again.subscribe(topic, len(got))
            answer = await again.recv()
            assert answer["type"] in ("subscribed", "recovered"), answer
            rest = answer.get("events", [])
            if len(rest) < committed - len(got):
                rest += [e for m in await recv_events(again, committed - len(got) - len(rest)) for e in m["events"]]
            assert [e["tpos"] for e in rest] == list(range(len(got) + 1, committed + 1))
        finally:
            await again.close()


async def test_a_message_larger_than_the_limit_still_reaches_a_client_that_reads(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url, max_pending_bytes=LIMIT) as stack:
        before = slow_closed()
        c = await connect("rawwebsocket", stack.sockjs_url, ORIGIN)
        try:
            await c.auth(token([topic]))
            await c.subscribe(topic, 0)
            assert (await c.recv())["type"] == "subscribed"
            for _ in range(3):
                await stack.relay.commit(topic, [{"id": i, "data": {"big": BIG}} for i in range(PER_TX)])
            got = [e for m in await recv_events(c, 3 * PER_TX) for e in m["events"]]
            assert [e["tpos"] for e in got] == list(range(1, 3 * PER_TX + 1))
            assert slow_closed() == before
        finally:
            await c.close()
