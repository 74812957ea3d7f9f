"""Authority decided when it matters (issue 14): every subscribe and resume is decided on
the membership as it stands, a subscription ends with its token, a resume never reaches
before the membership began, and events name writers no more precisely than REST does.

Real pieces throughout: the portal's REST API (Django test client, API-token auth, in a
thread), the capture triggers, the sync server with its database pool, and clients
speaking the protocol over SockJS transports. FakeRelay.sequence() plays the relay's
claim, so a test decides when a committed change is sequenced and published.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from stack.sockjs_client import connect
from tests.syncserver.harness import ORIGIN, django_call, new_topic, recv_events, sync_stack, token, wait_delivered

pytestmark = pytest.mark.django_db(transaction=True)


class People:
    """Portal users, each with an API token, calling the REST API like a third-party
    program (so writes carry `user:<id>:token:<token id>` and a request id)."""

    def __init__(self, *names: str):
        from django.contrib.auth.models import User
        from rest_framework.test import APIClient

        from portal.apitokens.services import create_token

        self.ids: dict[str, int] = {}
        self.token_ids: dict[str, int] = {}
        self._clients = {}
        for name in names:
            user = User.objects.create_user(name)
            token, key = create_token(user, "test")
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
            self.ids[name], self.token_ids[name], self._clients[name] = user.pk, token.pk, client

    async def call(self, who: str, method: str, path: str, body: dict | None = None, expect: int = 200):
        def run():
            client = self._clients[who]
            resp = getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)
            assert resp.status_code == expect, (method, path, resp.status_code, resp.content[:300])
            return resp.json() if resp.content else None
        return await django_call(run)

    async def new_list(self, owner: str, title: str = "Plans") -> tuple[int, str]:
        cid = (await self.call(owner, "post", "/api/checklists/", {"title": title}, 201))["id"]
        return cid, f"checklist:{cid}"

    async def share(self, owner: str, cid: int, username: str) -> None:
        await self.call(owner, "post", f"/api/checklists/{cid}/members/", {"username": username, "role": "editor"}, 201)

    async def add_item(self, who: str, cid: int, text: str) -> dict:
        return await self.call(who, "post", f"/api/checklists/{cid}/items/", {"text": text}, 201)

    async def sync_token(self, who: str, topic: str) -> dict:
        return await self.call(who, "post", "/api/sync/token/", {"topics": [topic]})

    async def tpos(self, who: str, cid: int) -> int:
        return (await self.call(who, "get", f"/api/checklists/{cid}/"))["tpos"]


def portal_stack(db_url: str, **overrides):
    """The sync stack verifying the tokens the portal (these tests' Django settings) signs."""
    from django.conf import settings

    return sync_stack(db_url, token_secret=settings.SYNC_TOKEN_SECRET, **overrides)


async def expect(client, message: dict, why: str) -> None:
    got = await client.recv()
    assert got == message, f"{why}: expected {message}, got {got}"


# -- 1. a removed member ------------------------------------------------------------------

@pytest.mark.parametrize("since_kind", ["huge", "current", "removal"])
async def test_a_removed_member_with_a_token_from_before_the_removal_receives_nothing(db_url, since_kind):
    async with portal_stack(db_url) as stack:
        people = await django_call(lambda: People("alice", "bob"))
        cid, topic = await people.new_list("alice")
        await people.share("alice", cid, "bob")
        await people.add_item("alice", cid, "before")
        await stack.relay.sequence()
        old_token = (await people.sync_token("bob", topic))["token"]
        live = await connect("rawwebsocket", stack.sockjs_url)
        again = await connect("xhr_streaming", stack.sockjs_url, ORIGIN)
        try:
            assert (await live.auth(old_token))["type"] == "authed"
            await live.subscribe(topic, await people.tpos("bob", cid))
            assert (await live.recv())["type"] == "subscribed"

            await people.call("alice", "delete", f"/api/checklists/{cid}/members/bob/", expect=204)
            removal = (await stack.relay.sequence())[-1].tpos
            await expect(live, {"type": "revoked", "topic": topic}, "the open subscription ends at the removal")
            for text in ("after 1", "after 2"):
                await people.add_item("alice", cid, text)
            current = (await stack.relay.sequence())[-1].tpos

            # A new connection with the token bob fetched before the removal (still valid).
            assert (await again.auth(old_token))["type"] == "authed"
            since = {"huge": 10**12, "current": current, "removal": removal}[since_kind]
            await again.subscribe(topic, since)
            await expect(again, {"type": "revoked", "topic": topic}, f"subscribe since {since_kind} tpos {since}")
            # The same connection, resubscribing.
            await live.subscribe(topic, since)
            await expect(live, {"type": "revoked", "topic": topic}, "resubscribe on the revoked connection")

            await people.add_item("alice", cid, "after 3")
            await stack.relay.sequence()
            assert await again.quiet(0.5) == []
            assert await live.quiet(0.1) == []
        finally:
            await live.close()
            await again.close()


# -- 2. tokens bound subscriptions --------------------------------------------------------

async def test_events_stop_when_the_token_expires_without_renewal(db_url, settings):
    settings.SYNC_TOKEN_TTL = 2
    async with portal_stack(db_url) as stack:
        people = await django_call(lambda: People("alice"))
        cid, topic = await people.new_list("alice")
        await stack.relay.sequence()
        grant = await people.sync_token("alice", topic)
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            assert (await c.auth(grant["token"]))["type"] == "authed"
            await c.subscribe(topic, await people.tpos("alice", cid))
            assert (await c.recv())["type"] == "subscribed"
            await people.add_item("alice", cid, "while valid")
            await stack.relay.sequence()
            assert [e["data"]["text"] for e in (await c.recv_type("events"))["events"]] == ["while valid"]

            await asyncio.sleep(max(0.0, grant["expires_at"] - time.time()))
            await people.add_item("alice", cid, "after expiry")
            await stack.relay.sequence()
            got = await c.recv(5)
            assert (got["type"], got.get("code"), got.get("ref"), got.get("topic")) == (
                "error", "token_expired", "subscribe", topic), f"once the token expired, got {got}"
            assert await c.quiet(0.6) == []
        finally:
            await c.close()


async def test_renewing_over_the_open_connection_keeps_events_flowing_past_the_first_expiry(db_url):
    topic, dropped = new_topic(db_url), new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            authed = await c.auth(token([topic, dropped], ttl=2))
            assert authed["type"] == "authed" and 0 < authed["expires_in"] <= 2
            assert authed["expires_at"] == pytest.approx(time.time() + authed["expires_in"], abs=1)
            for t in (topic, dropped):
                await c.subscribe(t, 0)
                assert (await c.recv())["type"] == "subscribed"
            # Renewed before expiry, without `dropped`: that subscription ends at once.
            renewed = await c.auth(token([topic], ttl=300))
            assert renewed["type"] == "authed" and renewed["expires_in"] > 250
            got = await c.recv()
            assert (got["type"], got["code"], got["ref"], got["topic"]) == ("error", "forbidden_topic", "auth", dropped)
            await asyncio.sleep(authed["expires_in"] + 0.3)
            await stack.relay.items(topic, 2)
            await stack.relay.items(dropped, 1)
            got = await recv_events(c, 2)
            assert [e["tpos"] for m in got for e in m["events"]] == [1, 2] and {m["topic"] for m in got} == {topic}
            assert await c.quiet(0.4) == []
        finally:
            await c.close()


# -- 3. history before membership, and who wrote ------------------------------------------

async def test_a_new_member_cannot_read_what_the_list_carried_before_he_joined(db_url):
    async with portal_stack(db_url) as stack:
        people = await django_call(lambda: People("alice", "carol"))
        cid, topic = await people.new_list("alice")
        secret = await people.add_item("alice", cid, "Surprise party for carol")
        await people.call("alice", "delete", f"/api/items/{secret['id']}/", expect=204)
        await people.add_item("alice", cid, "Cake")
        await people.share("alice", cid, "carol")
        await stack.relay.sequence()
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            assert (await c.auth((await people.sync_token("carol", topic))["token"]))["type"] == "authed"
            await c.subscribe(topic, 0)
            got = await c.recv()
            assert got["type"] == "resync", f"since 0 before joining, got {str(got)[:600]}"
            joined = await people.tpos("carol", cid)
            await c.subscribe(topic, joined)
            assert await c.recv() == {"type": "subscribed", "topic": topic, "tpos": joined}
        finally:
            await c.close()


@pytest.mark.parametrize("path", ["live", "ring", "outbox"])
async def test_events_name_writers_as_rest_does_without_token_or_request_ids(db_url, path):
    async with portal_stack(db_url, recent_events=0 if path == "outbox" else 256) as stack:
        people = await django_call(lambda: People("alice", "bob"))
        cid, topic = await people.new_list("alice")
        await people.share("alice", cid, "bob")
        await stack.relay.sequence()
        since = await people.tpos("bob", cid)
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            assert (await c.auth((await people.sync_token("bob", topic))["token"]))["type"] == "authed"
            if path == "live":
                await c.subscribe(topic, since)
                assert (await c.recv())["type"] == "subscribed"
            await people.add_item("alice", cid, "Milk")
            milk = (await stack.relay.sequence())[-1]
            await wait_delivered(stack, milk.pos)
            if path != "live":
                await c.subscribe(topic, since)
            events = (await c.recv_type("recovered" if path != "live" else "events"))["events"]
            assert [e["data"]["text"] for e in events] == ["Milk"]
            assert events[0]["actor"] == f"user:{people.ids['alice']}", events[0]
            assert "request_id" not in events[0] and "token" not in str(events[0]["actor"]), events[0]
        finally:
            await c.close()


# -- the history floor --------------------------------------------------------------------

async def test_a_membership_not_yet_sequenced_answers_resync_until_the_relay_has_it(db_url):
    async with portal_stack(db_url) as stack:
        people = await django_call(lambda: People("alice", "bob"))
        cid, topic = await people.new_list("alice")
        await people.add_item("alice", cid, "old news")
        await stack.relay.sequence()
        await people.share("alice", cid, "bob")  # committed, not sequenced
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            assert (await c.auth((await people.sync_token("bob", topic))["token"]))["type"] == "authed"
            before = await people.tpos("bob", cid)
            await c.subscribe(topic, before)
            got = await c.recv()
            assert got["type"] == "resync", got
            joined = (await stack.relay.sequence())[-1]
            assert joined.entity == "membership" and joined.op == "insert"
            # Until the hub has the join, `since` equals its head: `subscribed`, then the
            # join live. Once it has it, the join comes as `recovered`, as asserted here.
            await wait_delivered(stack, joined.pos)
            after = await people.tpos("bob", cid)
            assert after == joined.tpos
            await c.subscribe(topic, after - 1)  # from the join itself
            rec = await c.recv_type("recovered")
            assert [(e["entity"], e["op"]) for e in rec["events"]] == [("membership", "insert")]
            assert (await c.recv())["type"] == "subscribed"
        finally:
            await c.close()


async def test_rejoining_gives_events_from_the_rejoin_on(db_url, caplog):
    caplog.set_level(logging.DEBUG, logger="syncserver.hub")  # a failure shows why the hub resynced
    async with portal_stack(db_url) as stack:
        people = await django_call(lambda: People("alice", "bob"))
        cid, topic = await people.new_list("alice")
        await people.share("alice", cid, "bob")
        await stack.relay.sequence()
        first = await people.tpos("bob", cid)
        await people.call("alice", "delete", f"/api/checklists/{cid}/members/bob/", expect=204)
        await people.add_item("alice", cid, "while bob was away")
        await people.share("alice", cid, "bob")
        await people.add_item("alice", cid, "after the rejoin")
        events = await stack.relay.sequence()
        rejoin = next(e for e in events if e.entity == "membership" and e.op == "insert")
        await wait_delivered(stack, events[-1].pos)  # else the hub may answer from its head
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            assert (await c.auth((await people.sync_token("bob", topic))["token"]))["type"] == "authed"
            await c.subscribe(topic, first)  # from before the removal: not the current membership's
            assert (await c.recv())["type"] == "resync"
            await c.subscribe(topic, rejoin.tpos - 1)
            rec = await c.recv_type("recovered")
            assert [e["data"].get("text") for e in rec["events"]] == [None, "after the rejoin"]
            assert (await c.recv())["type"] == "subscribed"
        finally:
            await c.close()


async def test_a_database_failure_during_the_check_answers_resync(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await c.auth(token([topic]))
            await stack.server.catchup.pool.close()
            await c.subscribe(topic, 0)
            got = await c.recv(15)
            assert got["type"] == "resync", got
        finally:
            await c.close()


async def test_a_subscribe_after_the_database_dropped_the_servers_connections_is_answered(db_url):
    """PostgreSQL restarted (or an operator terminated the sync server's sessions): the pool
    still holds the dead connections. The next subscribe's grant check and catch-up read
    must use fresh ones, not answer resync because the first connection they got was dead
    (make chaos counted 20 needless resyncs in 5 restarts)."""
    import psycopg

    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        for since in (0, 10**6):  # live at 0; a since ahead needs the catch-up read
            c = await connect("rawwebsocket", stack.sockjs_url)
            try:
                await c.auth(token([topic]))
                with psycopg.connect(db_url, autocommit=True) as admin:
                    killed = admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND application_name = 'syncserver'").fetchone()[0]
                assert killed >= 1  # the pool's idle connection(s)
                await c.subscribe(topic, 0)
                got = await c.recv(15)
                assert got["type"] == "subscribed", got
            finally:
                await c.close()


# -- the check under a reconnect storm, and its order against a removal ----------------------

async def test_thousands_of_subscribes_at_once_cost_one_query_per_loop_iteration(db_url):
    """2,000 subscribes by 200 users in one burst (a restart's reconnect storm): the checks of
    one loop iteration go out as one query, identical (user, topic) pairs share an answer."""
    from psycopg_pool import AsyncConnectionPool

    from syncserver.authority import DatabaseAuthority
    from syncserver.hub import Hub
    from tests.syncserver.test_units import FakeCatchUp, Sink

    users = list(range(100, 300))
    topic = new_topic(db_url, users[:100])  # half of them are members
    pool = AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": False})
    await pool.open()
    try:
        authority = DatabaseAuthority(pool)
        hub = Hub(FakeCatchUp(), authority=authority)
        sinks = [Sink(users[i % len(users)]) for i in range(2000)]
        outcomes = await asyncio.gather(*[hub.subscribe(s, topic, 0) for s in sinks])
        assert authority.queries == 1
        for sink, outcome in zip(sinks, outcomes):
            assert outcome == ("live" if sink.user_id in users[:100] else "revoked"), (sink.user_id, outcome)
        # Another burst while a query runs: it waits and goes out as the next single query.
        more = [Sink(users[0]) for _ in range(300)]
        first = asyncio.gather(*[hub.subscribe(s, topic, 0) for s in sinks[:10]])
        await asyncio.sleep(0)
        second = asyncio.gather(*[hub.subscribe(s, topic, 0) for s in more])
        await first
        await second
        assert authority.queries == 3
    finally:
        await pool.close()


async def test_a_removal_committed_while_the_check_runs_revokes_the_subscription_on_the_stream(db_url):
    """The subscription is registered before the database is asked: a removal that commits
    after the check said yes still reaches it, through the live stream."""
    async with portal_stack(db_url) as stack:
        people = await django_call(lambda: People("alice", "bob"))
        cid, topic = await people.new_list("alice")
        await people.share("alice", cid, "bob")
        await stack.relay.sequence()
        since = await people.tpos("bob", cid)
        authority = stack.server.authority
        check = authority.check
        checked = asyncio.Event()
        release = asyncio.Event()

        def slow_check(user_id, t):
            fut = check(user_id, t)
            wrapped = asyncio.get_running_loop().create_future()

            async def later():
                result = await fut  # answered (bob is a member), then held back
                checked.set()
                await release.wait()
                wrapped.set_result(result)
            asyncio.ensure_future(later())
            return wrapped
        authority.check = slow_check
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await c.auth((await people.sync_token("bob", topic))["token"])
            await c.subscribe(topic, since)
            await asyncio.wait_for(checked.wait(), 10)
            await people.call("alice", "delete", f"/api/checklists/{cid}/members/bob/", expect=204)
            await people.add_item("alice", cid, "after the removal")
            removal = await stack.relay.sequence()
            await wait_delivered(stack, removal[-1].pos)
            release.set()
            await expect(c, {"type": "revoked", "topic": topic}, "removed while the check was answered")
            assert await c.quiet(0.4) == []
        finally:
            authority.check = check
            await c.close()
