"""Presence across sync servers (syncserver/presence.py): who has a list open, pushed live on
join and leave to every member on any server; a non-member sees none; a removal ends the
removed user's presence and what he receives; a server killed with kill -9 leaves the
others' lists within seconds; a client that goes silent is dropped."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import pytest

from stack.cluster import Cluster
from stack.sockjs_client import connect
from syncserver import presence as presence_module
from tests.syncserver.harness import ORIGIN, SECRET, django_call, token, wait_sequenced


def test_summary_is_one_entry_per_user_with_tabs_and_the_earliest_since():
    import doctest

    assert doctest.testmod(presence_module).failed == 0


def test_subscribe_takes_presence_as_a_boolean_only():
    from syncserver import protocol

    assert protocol.parse('{"type":"subscribe","topic":"t","since":0,"presence":true}', 1000).presence is True
    assert protocol.parse('{"type":"subscribe","topic":"t","since":0}', 1000).presence is False
    with pytest.raises(protocol.ProtocolError):
        protocol.parse('{"type":"subscribe","topic":"t","since":0,"presence":"yes"}', 1000)


class Tab:
    """A browser tab as presence sees it: subscribed with presence, pinging every second."""

    def __init__(self, client, label: str):
        self.client = client
        self.label = label
        self.presence: list[list[dict]] = []
        self.kinds: list[str] = []
        self._pinger = asyncio.ensure_future(self._ping())

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await self.client.send({"type": "ping", "id": 0})
                await asyncio.sleep(1)

    def stop_pinging(self) -> None:
        self._pinger.cancel()

    async def until(self, predicate, timeout: float = 10.0) -> list[dict]:
        """The first presence list from now on that satisfies predicate."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.label}: no matching presence in {timeout}s; saw {self.presence[-3:]}")
            msg = await self.client.recv(left)
            self.kinds.append(msg["type"])
            if msg["type"] == "presence":
                self.presence.append(msg["users"])
                if predicate(msg["users"]):
                    return msg["users"]

    async def quiet(self, seconds: float) -> list[str]:
        """The message types received in `seconds` (pongs aside)."""
        seen = []
        with contextlib.suppress(asyncio.TimeoutError):
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                msg = await self.client.recv(left)
                if msg["type"] != "pong":
                    seen.append(msg["type"])
        return seen

    async def close(self) -> None:
        self._pinger.cancel()
        await self.client.close()


def tabs(users: list[dict]) -> dict[str, int]:
    return {u["name"]: u["tabs"] for u in users}


@pytest.mark.django_db(transaction=True)
def test_presence_across_two_servers_authority_removal_and_kill_9(db_url):
    from django.contrib.auth.models import User
    from django.db import transaction

    from portal.checklists.models import Checklist, Membership, checklist_topic

    cluster = Cluster(db_url, sync_servers=2, origin=ORIGIN, token_secret=SECRET,
                      relay_env={"OUTBOX_RELAY_HEARTBEAT_INTERVAL": "0.3", "OUTBOX_RELAY_POLL_INTERVAL": "0.5"})
    try:
        cluster.start()
        one, two = cluster.sync_url_of("syncserver"), cluster.sync_url_of("syncserver-2")

        async def scenario():
            alice, bob, carol = [await django_call(lambda n=n: User.objects.create_user(n, password="x"))
                                 for n in ("alice", "bob", "carol")]

            def new_list():
                with transaction.atomic():
                    checklist = Checklist.objects.create(title="Here now", owner=alice)
                    Membership.objects.create(checklist=checklist, user=alice, role=Membership.OWNER)
                    Membership.objects.create(checklist=checklist, user=bob, role=Membership.EDITOR)
                return checklist
            checklist = await django_call(new_list)
            # Subscribing before the relay has sequenced the new memberships is rightly
            # answered resync (a page retries); on a busy machine the relay can be late.
            await asyncio.to_thread(wait_sequenced, db_url)
            topic = checklist_topic(checklist.pk)

            async def open_tab(url, user, label, transport="websocket"):
                c = await connect(transport, url, ORIGIN)
                await c.auth(token([topic], user_id=user.pk, username=user.username))
                await c.send({"type": "subscribe", "topic": topic, "since": 0, "presence": True})
                return Tab(c, label)

            a1 = await open_tab(one, alice, "alice@1")
            assert tabs(await a1.until(lambda u: tabs(u) == {"alice": 1})) == {"alice": 1}
            b2 = await open_tab(two, bob, "bob@2", "xhr_streaming")
            await b2.until(lambda u: tabs(u) == {"alice": 1, "bob": 1})
            await a1.until(lambda u: tabs(u) == {"alice": 1, "bob": 1})  # across servers, pushed
            a2 = await open_tab(two, alice, "alice@2")
            seen = await a1.until(lambda u: tabs(u) == {"alice": 2, "bob": 1})
            assert [u["name"] for u in seen] == ["alice", "bob"]  # by since: alice came first
            assert all(u["since"] and u["user_id"] for u in seen)

            # A non-member with a token naming the list: refused, and no presence, ever.
            c3 = await open_tab(one, carol, "carol@1")
            assert "revoked" in await c3.quiet(1.5)
            assert "presence" not in c3.kinds + await c3.quiet(0.5)
            assert "carol" not in tabs(a1.presence[-1])

            # Removing bob: his subscription ends, he leaves everyone's list, he gets nothing more.
            await django_call(lambda: Membership.objects.filter(checklist=checklist, user=bob).delete())
            await a1.until(lambda u: tabs(u) == {"alice": 2})
            after = await b2.quiet(1.5)
            assert "revoked" in after
            assert "presence" not in after[after.index("revoked"):], after

            # kill -9 of server two: alice's second tab there leaves within seconds.
            killed_at = time.monotonic()
            cluster.kill("syncserver-2", signal.SIGKILL)
            await a1.until(lambda u: tabs(u) == {"alice": 1}, timeout=15)
            assert time.monotonic() - killed_at < 10

            # A tab that goes silent (its network dropped) is closed and leaves.
            a3 = await open_tab(one, alice, "alice@1b")
            await a1.until(lambda u: tabs(u) == {"alice": 2})
            a3.stop_pinging()
            await a1.until(lambda u: tabs(u) == {"alice": 1}, timeout=15)
            await asyncio.wait_for(a3.client.closed.wait(), 5)
            assert a3.client.close_frame == [3001, "No message from the client"]

            # A closed tab leaves at once.
            a4 = await open_tab(one, alice, "alice@1c")
            await a1.until(lambda u: tabs(u) == {"alice": 2})
            await a4.close()
            await a1.until(lambda u: tabs(u) == {"alice": 1}, timeout=8)
            for t in (a1, a2, b2, c3):
                with contextlib.suppress(Exception):
                    await t.close()

        try:
            asyncio.run(asyncio.wait_for(scenario(), 120))
        except BaseException:
            print(cluster.outputs()[-6000:])  # shown with the failure
            raise
    finally:
        cluster.stop()
    assert "Traceback" not in cluster.outputs()


@pytest.mark.django_db(transaction=True)
def test_a_stopped_server_leaves_no_database_connection_behind(db_url):
    """Stopping a sync server closes the presence writer's connection too (it stayed open
    until garbage collection: a server stopped and started in one process, as the tests
    do, leaked one connection each time)."""
    import psycopg

    from tests.syncserver.harness import new_topic, sync_stack

    def others() -> int:
        with psycopg.connect(db_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]

    topic = new_topic(db_url)

    async def scenario() -> int:
        before = await asyncio.to_thread(others)
        async with sync_stack(db_url) as stack:
            c = await connect("rawwebsocket", stack.sockjs_url)
            await c.auth(token([topic]))
            await c.send({"type": "subscribe", "topic": topic, "since": 0, "presence": True})
            kinds = []
            while "presence" not in kinds:  # written to the database, and read back
                kinds.append((await c.recv())["type"])
            await c.close()
        deadline = time.monotonic() + 5
        while (after := await asyncio.to_thread(others)) > before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # a closed connection's backend exits a moment later
        return after - before

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) <= 0
