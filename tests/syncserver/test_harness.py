"""The sync-server tests' FakeRelay must commit what it writes whatever its heartbeats do
at the same moment. Its heartbeat read the position on the same connection and committed
after it: a commit() or sequence() whose transaction began in between became a savepoint
inside the heartbeat's transaction (whose own commit then failed), so its rows were never
committed. tests/syncserver/test_authority.py failed that way under load in CI: the portal
read tpos 0 and the sync server found the new membership not sequenced."""
from __future__ import annotations

import asyncio

import psycopg

from stack.keys import KeySet
from stack.processes import free_port
from tests.syncserver.harness import FakeRelay, new_topic


async def test_what_the_fake_relay_writes_is_committed_while_it_beats(db_url):
    relay = FakeRelay(db_url, f"tcp://127.0.0.1:{free_port()}", KeySet.generate().publisher())
    relay.beat_every = 0  # a heartbeat at every turn of the loop: one is nearly always in flight
    await relay.open()
    try:
        topic = new_topic(db_url)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other:
            for i in range(1, 101):
                await relay.commit(topic, [{"id": i}], publish=False)
                cur = await other.execute("SELECT tpos FROM outbox_topic WHERE topic = %s", (topic,))
                seen = await cur.fetchone()
                assert seen == (i,), f"commit {i}: another session sees {seen}"
                await asyncio.sleep(0)
        assert not relay._beat.done(), "the heartbeats died"
    finally:
        await relay.close()
