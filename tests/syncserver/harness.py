"""A real sync stack in the test's event loop: broker (XSUB/XPUB proxy thread), the sync
server with the real Subscriber and catch-up pool, against the real test database.

FakeRelay plays the relay where a test must control positions exactly: it sequences
rows into the outbox (pos, tpos, tx_last, outbox_topic, outbox_relay_state) in one
transaction and publishes their envelopes (built by outbox_envelope(), like the relay)
through the broker, plus heartbeats so the Subscriber repairs anything ZeroMQ dropped.
It either writes made-up events itself (commit, items) or sequences what the capture
triggers wrote (sequence): the rows of real REST, ORM or SQL writes.

Topics are real checklists (new_topic): the sync server asks the database whether the
token's user is a member now, so a topic nobody is a member of delivers nothing.

It publishes with the relay's (publisher) key; the sync server subscribes with its own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from contextlib import asynccontextmanager
from typing import Callable, Iterable, TypeVar

import psycopg
import zmq
import zmq.asyncio

from outbox_relay.broker import Broker
from outbox_relay.envelope import decode, encode_heartbeat
from runtime import tokens
from runtime.curve import ClientKeys
from stack.cluster import ORIGIN
from stack.keys import KeySet
from stack.processes import free_port
from syncserver.app import SyncServer
from syncserver.config import Config

SECRET = "test-secret"
# The users the tests' tokens name (token() defaults to 7, alice).
USERNAMES = {1: "victim", 2: "mallory", 7: "alice", 8: "bob"}
T = TypeVar("T")


def ensure_user(conn: psycopg.Connection, user_id: int) -> None:
    conn.execute(
        "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff,"
        " is_active, date_joined) VALUES (%s, '!', false, %s, '', '', '', false, true, now()) ON CONFLICT DO NOTHING",
        (user_id, USERNAMES.get(user_id, f"user{user_id}")))


def new_topic(db_url: str, members: Iterable[int] = (7,)) -> str:
    """The topic of a new checklist whose members are these users (created if missing;
    the first owns it), as a list that existed before the outbox's retention: written
    with capture off (session_replication_role = replica), so its topic has no events
    yet and its members may resume from tpos 0. Tests of the history floor make their
    memberships through the portal instead, with their events."""
    members = list(members)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for user_id in members:
            ensure_user(conn, user_id)
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            cid = conn.execute("INSERT INTO checklists_checklist (title, owner_id, created_at, version)"
                               " VALUES ('harness', %s, now(), 1) RETURNING id", (members[0],)).fetchone()[0]
            for user_id in members:
                conn.execute("INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                             " VALUES (%s, %s, %s, 1)", (cid, user_id, "owner" if user_id == members[0] else "editor"))
    return f"checklist:{cid}"


def wait_sequenced(url: str, timeout: float = 15.0) -> int:
    """Until the relay (a real one) has sequenced every outbox row; returns the highest pos.
    A subscribe before the relay has sequenced a list's membership is rightly answered
    resync ("membership not sequenced yet"): a client retries, a test waits here."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            pending, top = conn.execute(
                "SELECT count(*) FILTER (WHERE pos IS NULL), coalesce(max(pos), 0) FROM outbox").fetchone()
            if not pending:
                return top
            if time.monotonic() > deadline:
                raise AssertionError(f"the relay left {pending} outbox rows unsequenced for {timeout} s")
            time.sleep(0.02)


def django_call(fn: Callable[[], T]) -> "asyncio.Future[T]":
    """Run Django code (ORM, test client) off the event loop: Django refuses synchronous
    database calls inside one. Its connection in that thread is closed afterwards."""
    from django.db import connection

    def run():
        try:
            return fn()
        finally:
            connection.close()
    return asyncio.ensure_future(asyncio.to_thread(run))


async def recv_events(client, count: int, timeout: float = 10.0) -> list[dict]:
    """The next `events` messages, until they hold `count` events. However the hub split
    them: a message carries one or more whole transactions (what it routed in one turn of
    its loop goes out together), so tests must not count on one message per commit."""
    got = [await client.recv_type("events", timeout)]
    while sum(len(m["events"]) for m in got) < count:
        got.append(await client.recv_type("events", timeout))
    assert all(m["events"][-1]["tx_last"] for m in got), "a message ends at a transaction boundary"
    return got


def token(topics, user_id=7, username="alice", ttl=300, secret=SECRET, now=None) -> str:
    return tokens.mint(secret, user_id=user_id, username=username, topics=list(topics), ttl=ttl, now=now)


LAST_POS_SQL = "SELECT last_pos FROM outbox_relay_state WHERE id = 1"


class FakeRelay:
    def __init__(self, dsn: str, frontend: str, curve: ClientKeys):
        self.dsn = dsn
        self.frontend = frontend
        self.curve = curve
        self.conn: psycopg.AsyncConnection | None = None
        # Heartbeats read the position on a connection of their own: on self.conn, a
        # heartbeat's read could open a transaction that a commit()/sequence() starting
        # meanwhile joined as a savepoint, never committed (tests/syncserver/test_harness.py).
        self.beat_conn: psycopg.AsyncConnection | None = None
        self.pub = None
        self._beat: asyncio.Task | None = None
        self.beat_every = 0.3  # seconds between heartbeats

    async def open(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.dsn)
        self.beat_conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        self.pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.curve.apply(self.pub)
        self.pub.connect(self.frontend)
        self._beat = asyncio.create_task(self._heartbeats())

    async def close(self) -> None:
        if self._beat:
            self._beat.cancel()
        if self.pub is not None:
            self.pub.close(0)
        for conn in (self.conn, self.beat_conn):
            if conn is not None:
                await conn.close()

    async def last_pos(self) -> int:
        cur = await self.conn.execute(LAST_POS_SQL)
        pos = (await cur.fetchone())[0]
        await self.conn.commit()
        return pos

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.beat_every)
            cur = await self.beat_conn.execute(LAST_POS_SQL)
            await self.pub.send_multipart([b"_heartbeat", encode_heartbeat((await cur.fetchone())[0])])

    async def commit(self, topic: str, changes: list[dict], publish: bool = True) -> list:
        """One transaction's events on one topic: [{"entity","id","op","data"}...] -> Events."""
        async with self.conn.transaction():
            cur = await self.conn.execute("SELECT last_pos FROM outbox_relay_state WHERE id = 1 FOR UPDATE")
            pos = (await cur.fetchone())[0]
            await self.conn.execute("INSERT INTO outbox_topic (topic, tpos) VALUES (%s, 0) ON CONFLICT DO NOTHING", (topic,))
            cur = await self.conn.execute("SELECT tpos FROM outbox_topic WHERE topic = %s FOR UPDATE", (topic,))
            tpos = (await cur.fetchone())[0]
            for i, ch in enumerate(changes, 1):
                await self.conn.execute(
                    "INSERT INTO outbox (topic, entity, entity_id, op, data, version, source, pos, tpos, tx_last, sequenced_at)"
                    " VALUES (%s, %s, %s, %s, %s::jsonb, %s, 'sql', %s, %s, %s, now())",
                    (topic, ch.get("entity", "item"), str(ch.get("id", 1)), ch.get("op", "update"),
                     json.dumps(ch.get("data", {})), ch.get("version", 1), pos + i, tpos + i, i == len(changes)))
            n = len(changes)
            await self.conn.execute("UPDATE outbox_topic SET tpos = %s WHERE topic = %s", (tpos + n, topic))
            await self.conn.execute("UPDATE outbox_relay_state SET last_pos = %s, published_pos = %s WHERE id = 1",
                                    (pos + n, pos + n))
            cur = await self.conn.execute("SELECT outbox_envelope(o) FROM outbox o WHERE pos > %s AND pos <= %s ORDER BY pos",
                                          (pos, pos + n))
            raws = [r[0].encode() for r in await cur.fetchall()]
        if publish:
            await self.publish(raws)
        return [decode(r) for r in raws]

    async def sequence(self, publish: bool = True) -> list:
        """Sequence every committed unsequenced row (what the capture triggers wrote), as
        the relay's claim does: transactions in the order of their largest row id, rows by
        id, gapless pos and per-topic tpos, tx_last on each transaction's last row of a
        topic; then publish them. Returns their Events in pos order."""
        async with self.conn.transaction():
            cur = await self.conn.execute("SELECT last_pos FROM outbox_relay_state WHERE id = 1 FOR UPDATE")
            pos = (await cur.fetchone())[0]
            cur = await self.conn.execute("SELECT id, topic, txid::text FROM outbox WHERE pos IS NULL ORDER BY id FOR UPDATE")
            rows = await cur.fetchall()
            if not rows:
                return []
            last_id = {}
            for rid, _topic, tx in rows:
                last_id[tx] = rid
            rows.sort(key=lambda r: (last_id[r[2]], r[0]))
            final = {}
            for rid, topic, tx in rows:
                final[(tx, topic)] = rid
            tpos: dict[str, int] = {}
            for topic in {r[1] for r in rows}:
                cur = await self.conn.execute("SELECT tpos FROM outbox_topic WHERE topic = %s", (topic,))
                found = await cur.fetchone()
                tpos[topic] = found[0] if found else 0
            first = pos
            for rid, topic, tx in rows:
                pos += 1
                tpos[topic] += 1
                await self.conn.execute(
                    "UPDATE outbox SET pos = %s, tpos = %s, tx_last = %s, sequenced_at = now() WHERE id = %s",
                    (pos, tpos[topic], final[(tx, topic)] == rid, rid))
            for topic, t in tpos.items():
                await self.conn.execute("INSERT INTO outbox_topic (topic, tpos) VALUES (%s, %s)"
                                        " ON CONFLICT (topic) DO UPDATE SET tpos = EXCLUDED.tpos", (topic, t))
            await self.conn.execute("UPDATE outbox_relay_state SET last_pos = %s, published_pos = %s WHERE id = 1",
                                    (pos, pos))
            cur = await self.conn.execute("SELECT outbox_envelope(o) FROM outbox o WHERE pos > %s AND pos <= %s"
                                          " ORDER BY pos", (first, pos))
            raws = [r[0].encode() for r in await cur.fetchall()]
        if publish:
            await self.publish(raws)
        return [decode(r) for r in raws]

    async def publish(self, raws: list[bytes]) -> None:
        for raw in raws:
            await self.pub.send_multipart([json.loads(raw)["topic"].encode(), raw])

    async def items(self, topic: str, n: int, publish: bool = True) -> list:
        """n single-event transactions on topic."""
        out = []
        for i in range(n):
            out += await self.commit(topic, [{"id": i, "data": {"i": i}}], publish)
        return out


@dataclasses.dataclass
class Stack:
    server: SyncServer
    relay: FakeRelay
    base: str
    backend: str
    frontend: str
    keys: KeySet

    @property
    def sockjs_url(self) -> str:
        return f"{self.base}/sync"


@asynccontextmanager
async def sync_stack(db_url: str, **overrides):
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    keys = KeySet.generate()
    broker = Broker(keys.broker_config(frontend, backend))
    broker.start()
    settings = {"token_secret": SECRET, "allowed_origins": frozenset({ORIGIN}), **overrides}
    config = Config(port=0, broker_url=backend, database_url=db_url, curve=keys.subscriber(), **settings)
    server = SyncServer(config)
    relay = FakeRelay(db_url, frontend, keys.publisher())
    try:
        port = await server.start()
        await relay.open()
        stack = Stack(server, relay, f"http://127.0.0.1:{port}", backend, frontend, keys)
        await wait_stream_ready(stack)
        yield stack
    finally:
        await relay.close()
        await server.stop()
        broker.stop()


async def wait_stream_ready(stack: Stack, timeout: float = 10.0) -> None:
    """Until the server's subscriber has caught up with the outbox (it is then live)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    target = await stack.relay.last_pos()
    while stack.server.source.delivered_pos < target or stack.server.broker_heard is None:
        if loop.time() > deadline:
            raise TimeoutError(f"subscriber at {stack.server.source.delivered_pos}, outbox at {target}")
        await asyncio.sleep(0.05)


async def wait_delivered(stack: Stack, pos: int, timeout: float = 10.0) -> None:
    """Until the server's subscriber has handed every event up to `pos` to the hub."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while stack.server.source.delivered_pos < pos:
        if loop.time() > deadline:
            raise TimeoutError(f"subscriber at {stack.server.source.delivered_pos}, waiting for {pos}")
        await asyncio.sleep(0.02)
