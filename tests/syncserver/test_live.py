"""Live delivery through the real stack: broker -> Subscriber -> hub -> SockJS transports."""
from __future__ import annotations

import json
import time

import pytest

from stack.sockjs_client import connect
from syncserver.redaction import browser_raw
from tests.syncserver.harness import ORIGIN, new_topic, recv_events, sync_stack, token

pytestmark = pytest.mark.django_db(transaction=True)


TRANSPORT = {"raw": "rawwebsocket", "framed": "websocket", "xhr_streaming": "xhr_streaming",
             "eventsource": "eventsource", "xhr": "xhr"}


@pytest.mark.parametrize("kind", list(TRANSPORT))
async def test_clients_receive_exactly_the_committed_events_in_order(db_url, kind):
    topic, other = new_topic(db_url), new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect(TRANSPORT[kind], stack.sockjs_url, ORIGIN)
        try:
            authed = await c.auth(token([topic]))
            assert (authed["type"], authed["user"]) == ("authed", "alice") and 299 <= authed["expires_in"] <= 300
            await c.subscribe(topic, 0)
            assert await c.recv() == {"type": "subscribed", "topic": topic, "tpos": 0}
            await stack.relay.items(other, 2)  # another topic: not delivered
            tx = await stack.relay.commit(topic, [{"id": 1, "data": {"a": 1}}, {"id": 2, "data": {"b": 2}}])
            singles = await stack.relay.items(topic, 3)
            got = await recv_events(c, 5)  # messages end at transaction boundaries
            # The relay's envelopes as browsers may see them (syncserver/redaction.py).
            events = [e for m in got for e in m["events"]]
            assert events == [json.loads(browser_raw(e)) for e in [*tx, *singles]]
            assert [e["tpos"] for e in events] == [1, 2, 3, 4, 5]
            assert all(m["topic"] == topic for m in got)
            assert await c.quiet(0.4) == []
        finally:
            await c.close()


async def test_heartbeats_reach_clients_with_the_delivered_pos(db_url):
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await stack.relay.items(new_topic(db_url), 1)
            for _ in range(40):
                if c.heartbeats and c.heartbeats[-1]["pos"] == stack.server.source.delivered_pos:
                    break
                await c.quiet(0.1)
            assert c.heartbeats and c.heartbeats[-1]["pos"] == await stack.relay.last_pos()
            assert set(c.heartbeats[-1]) == {"type", "pos", "time"} and abs(c.heartbeats[-1]["time"] - time.time()) < 2
        finally:
            await c.close()
