"""Resume after a disconnect: recovered (from the ring or the outbox) or resync; never partial."""
from __future__ import annotations

import json

import psycopg
import pytest

from stack.sockjs_client import connect
from syncserver.redaction import browser_raw
from tests.syncserver.harness import ORIGIN, new_topic, recv_events, sync_stack, token, wait_delivered

pytestmark = pytest.mark.django_db(transaction=True)


async def _subscribe(client, topic, since):
    await client.auth(token([topic]))
    await client.subscribe(topic, since)


@pytest.mark.parametrize("ring", [256, 0], ids=["from-ring", "from-outbox"])
async def test_reconnect_gets_exactly_the_missed_events(db_url, ring):
    topic = new_topic(db_url)
    async with sync_stack(db_url, recent_events=ring) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url)
        await _subscribe(c, topic, 0)
        assert (await c.recv())["type"] == "subscribed"
        await stack.relay.items(topic, 2)
        seen = [e["tpos"] for m in await recv_events(c, 2) for e in m["events"]]
        assert seen == [1, 2]
        await c.close()
        missed = await stack.relay.items(topic, 5)
        await wait_delivered(stack, missed[-1].pos)  # else the hub may answer from its head
        c2 = await connect("xhr_streaming", stack.sockjs_url, ORIGIN)
        try:
            await _subscribe(c2, topic, 2)
            rec = await c2.recv_type("recovered")
            assert rec["events"] == [json.loads(browser_raw(e)) for e in missed]
            assert await c2.recv() == {"type": "subscribed", "topic": topic, "tpos": 7}
            await stack.relay.items(topic, 1)
            assert [e["tpos"] for e in (await c2.recv_type("events"))["events"]] == [8]
            assert await c2.quiet(0.3) == []
        finally:
            await c2.close()


async def test_too_far_behind_after_pruning_gets_resync(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url, recent_events=2) as stack:
        events = await stack.relay.items(topic, 6)
        await wait_delivered(stack, events[-1].pos)  # else the hub may answer from its head
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await conn.execute("DELETE FROM outbox WHERE topic = %s AND tpos <= 3", (topic,))
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await _subscribe(c, topic, 1)  # needs tpos 2..6; 2 and 3 are gone
            assert await c.recv() == {"type": "resync", "topic": topic, "tpos": 6}
            assert await c.quiet(0.3) == []
            await c.subscribe(topic, 3)  # 4..6 are still there
            rec = await c.recv_type("recovered")
            assert [e["tpos"] for e in rec["events"]] == [4, 5, 6]
            assert (await c.recv())["tpos"] == 6
        finally:
            await c.close()


async def test_client_ahead_of_the_outbox_gets_resync_and_one_just_ahead_of_the_stream_does_not(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        await stack.relay.items(topic, 2)
        # Sequenced but not yet published: the REST API may already report tpos 3.
        unpublished = await stack.relay.commit(topic, [{"id": 9}], publish=False)
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await _subscribe(c, topic, 3)
            assert await c.recv() == {"type": "subscribed", "topic": topic, "tpos": 3}
            await stack.relay.publish([e.raw for e in unpublished])
            await stack.relay.items(topic, 1)
            assert [e["tpos"] for e in (await c.recv_type("events"))["events"]] == [4]  # 3 not twice
            await c.subscribe(topic, 40)
            assert await c.recv() == {"type": "resync", "topic": topic, "tpos": 4}
        finally:
            await c.close()


async def test_unknown_topic_since_zero_is_live(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await _subscribe(c, topic, 0)
            assert await c.recv() == {"type": "subscribed", "topic": topic, "tpos": 0}
        finally:
            await c.close()
