"""The real processes: `python -m syncserver` configuration errors, readiness, /healthz,
/metrics, SIGTERM; and end to end: ORM write -> relay -> broker -> sync server ->
websocket and xhr-streaming clients."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from stack.cluster import Cluster
from stack.keys import KeySet
from stack.processes import python_module
from stack.sockjs_client import connect
from tests.syncserver.harness import ORIGIN, SECRET, django_call, token, wait_sequenced


@pytest.mark.parametrize("env", [{"SYNC_PORT": "x"}, {"SYNC_ALLOWED_ORIGINS": "*"}, {"SYNC_TRANSPORTS": "smoke"}])
def test_bad_configuration_is_one_line_and_exit_2(env):
    proc = subprocess.run(python_module("syncserver"), env={**os.environ, "DATABASE_URL": "postgresql://x/y",
                                                            **KeySet.generate().sync_env(), **env},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("syncserver: ") and proc.stderr.count("\n") == 1


@pytest.mark.django_db(transaction=True)
def test_end_to_end_orm_write_reaches_websocket_and_xhr_streaming_clients(db_url):
    cluster = Cluster(db_url, relays=0, sync_servers=0, origin=ORIGIN, token_secret=SECRET,
                      relay_env={"OUTBOX_RELAY_HEARTBEAT_INTERVAL": "0.3", "OUTBOX_RELAY_POLL_INTERVAL": "0.5"})
    try:
        _end_to_end(cluster)
    finally:
        cluster.stop()


def _end_to_end(cluster: Cluster) -> None:
    from django.contrib.auth.models import User
    from django.db import transaction

    from portal.checklists.models import Checklist, Item, Membership, checklist_topic

    cluster.start_broker()
    relay = cluster.start_relay("relay", wait="relay leader")
    sync = cluster.start_sync()
    assert sync.wait_for_line("syncserver ready", 20).endswith(f"port={cluster.sync_port}")
    base, sockjs_url = cluster.sync_base, cluster.sockjs_url

    async def scenario():
        user = await django_call(lambda: User.objects.create_user("alice", password="x"))

        def new_list():
            # One transaction, as the portal does: the owner's membership begins with the
            # list, so she may resume from tpos 0 (the sync server asks the database).
            with transaction.atomic():
                checklist = Checklist.objects.create(title="Groceries", owner=user)
                Membership.objects.create(checklist=checklist, user=user, role=Membership.OWNER)
            return checklist
        checklist = await django_call(new_list)
        topic = checklist_topic(checklist.pk)
        # (it failed about once in a few runs when the subscribe came first)
        await asyncio.to_thread(wait_sequenced, cluster.database_url)
        clients = [await connect("rawwebsocket", sockjs_url), await connect("xhr_streaming", sockjs_url, ORIGIN)]
        for c in clients:
            await c.auth(token([topic], user_id=user.pk))
            await c.subscribe(topic, 0)
        await django_call(lambda: [Item.objects.create(checklist=checklist, text=f"item {i}", position=i) for i in range(3)])
        await django_call(lambda: Item.objects.filter(checklist=checklist, position=0).update(done=True))
        for c in clients:
            events, seen = [], []
            while not any(e["entity"] == "item" and e["op"] == "update" for e in events):
                try:
                    msg = await c.recv(15)
                except asyncio.TimeoutError:
                    raise AssertionError(f"{c.transport}: no event in 15 s; received {seen}\n"
                                         f"--- relay\n{relay.output()}\n--- sync\n{sync.output()}") from None
                seen.append(msg)
                # A new checklist's topic starts at tpos 0 (tests/conftest.py resets the relay's
                # tables): a resync here means the topic had history before this test.
                assert msg["type"] != "resync", f"{c.transport} got {msg} subscribing {topic} since 0"
                if msg["type"] in ("events", "recovered"):
                    events += msg["events"]
            assert [e["tpos"] for e in events] == list(range(1, len(events) + 1))
            items = [e for e in events if e["entity"] == "item"]
            assert [(e["op"], e["data"]["text"]) for e in items] == [
                ("insert", "item 0"), ("insert", "item 1"), ("insert", "item 2"), ("update", "item 0")]
            assert items[-1]["data"]["done"] is True and items[-1]["changed"] == ["done"]
        http = AsyncHTTPClient(force_instance=True)
        # The broker's status is "unknown" until the sync server hears its first heartbeat
        # (one a second); on a fast machine the events above can all arrive before it.
        deadline = time.monotonic() + 5
        while True:
            health = json.loads((await http.fetch(f"{base}/healthz")).body)
            if health["broker"]["status"] != "unknown" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert health["db"]["status"] == "ok" and health["broker"]["status"] == "ok"
        metrics = (await http.fetch(f"{base}/metrics")).body.decode()
        assert 'sync_connections{transport="rawwebsocket"} 1.0' in metrics
        assert "sync_commit_to_push_seconds_count" in metrics
        http.close()
        # SIGTERM with clients connected: each session is closed cleanly, exit code 0.
        assert await asyncio.to_thread(sync.stop) == 0
        for c in clients:
            await asyncio.wait_for(c.closed.wait(), 5)
        assert clients[1].close_frame == [3000, "Server shutting down"]
        for c in clients:
            await c.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "Traceback" not in sync.output()
