"""Presence: who has a topic open right now (user, since when, how many tabs), the same on
every sync server.

Where the state lives, and why: in PostgreSQL (sync_presence, sync_presence_server in
migrations/schema.sql), which every sync server already reaches. The broker would need
no table, but it admits only relay keys as publishers (a sync server may only read), and
a server that joins late would have nobody to ask for the current state; a table is the
current state, and LISTEN/NOTIFY is the change feed between servers.

- A subscription that asked for presence (`subscribe` with `"presence": true`) and went
  live is one row (server, session, topic); it is deleted when the subscription ends for
  any reason (unsubscribe, tab closed, revoked by a removal, token expiry, resync). Every
  change notifies `sync_presence` with the topic, in the same transaction.
- On a notification, each server that has presence subscribers of the topic reads the
  topic's rows and pushes a `presence` message to them. Only live subscriptions get it,
  and a subscription is live only after the database said its user may watch the topic:
  non-members never see a list's presence; a removed member's subscription ends, so his
  row goes and nothing more reaches him.
- Liveness: each server refreshes its sync_presence_server row every second; any server
  deletes a server silent for EXPIRE_AFTER seconds with its rows (kill -9, cut off) and
  notifies their topics. A connection with presence that sent nothing for SILENT_AFTER
  seconds is closed (the browser client pings every 2 s while it shows presence), so a
  tab whose network dropped leaves within seconds, although TCP would notice much later.
- One writer task applies joins and leaves in order, batched per transaction; after any
  database failure it rebuilds this server's rows from what it holds in memory.

`summarize` is pure (the message's content); the rest is the database adapter.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from datetime import datetime
from typing import Any, Iterable

import psycopg

from runtime.backoff import Backoff
from syncserver import protocol
from syncserver.hub import Hub, Prepared, Subscription

log = logging.getLogger(__name__)

CHANNEL = "sync_presence"
HEARTBEAT = 1.0
EXPIRE_AFTER = 4.0     # a server whose heartbeat is older is gone, its presence with it
SILENT_AFTER = 6.0     # a presence connection silent this long is closed (clients ping every 2 s)
REFRESH_DELAY = 0.05   # notifications of one topic within this window share one read


def summarize(rows: Iterable[tuple[int, str, datetime]]) -> list[dict[str, Any]]:
    """One entry per user from (user_id, username, since) rows, one row per tab: since the
    earliest, tabs counted; ordered by since, then name.

    >>> from datetime import datetime, timezone
    >>> t = lambda s: datetime(2026, 1, 1, 12, 0, s, tzinfo=timezone.utc)
    >>> summarize([(2, "bob", t(5)), (1, "alice", t(3)), (2, "bob", t(1))])
    [{'user_id': 2, 'name': 'bob', 'since': '2026-01-01T12:00:01+00:00', 'tabs': 2}, \
{'user_id': 1, 'name': 'alice', 'since': '2026-01-01T12:00:03+00:00', 'tabs': 1}]
    """
    users: dict[int, dict[str, Any]] = {}
    for user_id, username, since in rows:
        entry = users.get(user_id)
        if entry is None:
            users[user_id] = {"user_id": user_id, "name": username, "since": since, "tabs": 1}
        else:
            entry["tabs"] += 1
            entry["since"] = min(entry["since"], since)
    ordered = sorted(users.values(), key=lambda u: (u["since"], u["name"]))
    return [{**u, "since": u["since"].isoformat()} for u in ordered]


class Presence:
    """The hub's presence observer (Hub.presence): joined()/left() from the hub, the
    database behind it."""

    def __init__(self, dsn: str, hub: Hub, *, pool: Any = None, server_id: str | None = None,
                 heartbeat: float = HEARTBEAT, expire_after: float = EXPIRE_AFTER, silent_after: float = SILENT_AFTER):
        self.dsn = dsn
        self.pool = pool  # a psycopg_pool.AsyncConnectionPool for the reads (the catch-up's), or None
        self.hub = hub
        self.server = server_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.heartbeat = heartbeat
        self.expire_after = expire_after
        self.silent_after = silent_after
        # What this server holds: (session, topic) -> (user_id, username); the database's
        # rows of this server are rebuilt from it after a failure.
        self.joined: dict[tuple[str, str], tuple[int, str]] = {}
        self._sessions: dict[Any, tuple[str, set[str]]] = {}  # sink -> (session key, its topics)
        self._counter = itertools.count(1)
        self._ops: asyncio.Queue | None = None
        self._refresh: dict[str, asyncio.TimerHandle] = {}
        self.tasks: list[asyncio.Task] = []  # the server stops if one dies (SyncServer.task_failure)
        self._rebuild = True                        # (re)write every row of ours on the next batch

    # -- from the hub (synchronous, on the event loop) ----------------------------------

    def joined_sub(self, sub: Subscription) -> None:
        entry = self._sessions.get(sub.sink)
        if entry is None:
            entry = self._sessions[sub.sink] = (str(next(self._counter)), set())
        key, topics = entry
        topics.add(sub.topic)
        user = (sub.sink.user_id, getattr(sub.sink, "username", None) or str(sub.sink.user_id))
        self.joined[(key, sub.topic)] = user
        self._queue(("join", key, sub.topic, *user))

    def left_sub(self, sub: Subscription) -> None:
        entry = self._sessions.get(sub.sink)
        if entry is None:
            return
        key, topics = entry
        topics.discard(sub.topic)
        if not topics:
            del self._sessions[sub.sink]
        self.joined.pop((key, sub.topic), None)
        self._queue(("leave", key, sub.topic))

    def _queue(self, op: tuple) -> None:
        if self._ops is not None:
            self._ops.put_nowait(op)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._ops = asyncio.Queue()
        self.tasks = [asyncio.create_task(self._write_loop(), name="presence-writer"),
                       asyncio.create_task(self._listen_loop(), name="presence-listener"),
                       asyncio.create_task(self._heartbeat_loop(), name="presence-heartbeat")]

    async def stop(self) -> None:
        """Leave cleanly: this server's rows go at once, and the other servers are told."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for handle in self._refresh.values():
            handle.cancel()
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=3) as conn:
                async with conn.transaction():
                    topics = [r[0] for r in await (await conn.execute(
                        "DELETE FROM sync_presence WHERE server = %s RETURNING topic", (self.server,))).fetchall()]
                    await conn.execute("DELETE FROM sync_presence_server WHERE server = %s", (self.server,))
                    await self._notify(conn, topics)
        except psycopg.Error as exc:
            log.warning("presence: could not remove this server's rows (they expire): %s", exc)

    # -- writer ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self._ops is not None
        backoff = Backoff(0.2, 5.0)
        conn: psycopg.AsyncConnection | None = None
        batch: list[tuple] = []
        try:
            while True:
                if not batch:
                    batch.append(await self._ops.get())
                while not self._ops.empty():
                    batch.append(self._ops.get_nowait())
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
                    await self._apply(conn, batch)
                    batch = []
                    backoff.reset()
                except psycopg.Error as exc:
                    log.warning("presence: database write failed (%s); retrying", exc)
                    self._rebuild = True  # what is in the database is unknown now
                    batch = [("sync",)]
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await asyncio.sleep(backoff.next())
        finally:  # stop() cancels this task: the connection goes with it
            if conn is not None:
                await conn.close()

    async def _apply(self, conn: psycopg.AsyncConnection, batch: list[tuple]) -> None:
        topics: set[str] = set()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO sync_presence_server (server) VALUES (%s)"
                " ON CONFLICT (server) DO UPDATE SET heartbeat_at = now()", (self.server,))
            if self._rebuild:
                # The rows of this server are exactly what it holds (after a failure, or
                # after other servers expired it while it was cut off).
                self._rebuild = False
                gone = await (await conn.execute(
                    "DELETE FROM sync_presence WHERE server = %s RETURNING topic", (self.server,))).fetchall()
                topics.update(r[0] for r in gone)
                for (session, topic), (user_id, username) in self.joined.items():
                    await conn.execute(
                        "INSERT INTO sync_presence (server, session, topic, user_id, username)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (self.server, session, topic, user_id, username))
                    topics.add(topic)
            else:
                for op in batch:
                    if op[0] == "join":
                        _, session, topic, user_id, username = op
                        await conn.execute(
                            "INSERT INTO sync_presence (server, session, topic, user_id, username)"
                            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (self.server, session, topic, user_id, username))
                        topics.add(topic)
                    elif op[0] == "leave":
                        _, session, topic = op
                        await conn.execute("DELETE FROM sync_presence WHERE server = %s AND session = %s"
                                           " AND topic = %s", (self.server, session, topic))
                        topics.add(topic)
            await self._notify(conn, topics)

    @staticmethod
    async def _notify(conn: psycopg.AsyncConnection, topics: Iterable[str]) -> None:
        topics = sorted(set(topics))
        if topics:
            await conn.execute("SELECT pg_notify(%s, t) FROM unnest(%s::text[]) AS t", (CHANNEL, topics))

    # -- liveness -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff(0.5, 5.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                                 connect_timeout=5) as conn:
                    backoff.reset()
                    while True:
                        await self._beat(conn)
                        self._close_silent()
                        await asyncio.sleep(self.heartbeat)
            except psycopg.Error as exc:
                log.warning("presence: heartbeat failed (%s); retrying", exc)
                await asyncio.sleep(backoff.next())

    async def _beat(self, conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction():
            row = await (await conn.execute(
                "UPDATE sync_presence_server SET heartbeat_at = now() WHERE server = %s RETURNING 1",
                (self.server,))).fetchone()
            expired = await (await conn.execute(
                "DELETE FROM sync_presence p USING sync_presence_server s WHERE p.server = s.server"
                " AND s.server <> %s AND s.heartbeat_at < now() - make_interval(secs => %s) RETURNING p.topic",
                (self.server, self.expire_after))).fetchall()
            servers = await (await conn.execute(
                "DELETE FROM sync_presence_server WHERE server <> %s"
                " AND heartbeat_at < now() - make_interval(secs => %s) RETURNING server",
                (self.server, self.expire_after))).fetchall()
            await self._notify(conn, [r[0] for r in expired])
        if servers:
            log.info("presence: expired silent sync server(s) %s", ", ".join(r[0] for r in servers))
        if row is None:
            # Our row is gone: another server expired us (we were cut off or paused), or
            # the tables were emptied. Write everything we hold again.
            self._rebuild = True
            self._queue(("sync",))

    def _close_silent(self) -> None:
        """Close connections with presence that went silent: a dropped network is noticed
        in seconds, not when TCP gives up."""
        now = time.monotonic()
        for sink in list(self._sessions):
            heard = getattr(sink, "last_heard", None)
            if heard is not None and now - heard > self.silent_after:
                log.info("presence: closing a connection silent for %.0f s", now - heard)
                session = getattr(sink, "session", None)
                if session is not None:
                    session.close(3001, "No message from the client")

    # -- listener -----------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = Backoff(0.5, 5.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                                 connect_timeout=5) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    backoff.reset()
                    # Anything may have changed while we were not listening.
                    for topic in {topic for _session, topic in self.joined}:
                        self._schedule(topic)
                    async for note in conn.notifies():
                        self._schedule(note.payload)
            except psycopg.Error as exc:
                log.warning("presence: listener failed (%s); reconnecting", exc)
                await asyncio.sleep(backoff.next())

    def _schedule(self, topic: str) -> None:
        if topic in self._refresh or not self._watchers(topic):
            return
        loop = asyncio.get_running_loop()
        self._refresh[topic] = loop.call_later(REFRESH_DELAY, lambda: asyncio.ensure_future(self._push(topic)))

    def _watchers(self, topic: str) -> list[Subscription]:
        ts = self.hub.topics.get(topic)
        if ts is None:
            return []
        return [sub for sub in ts.subs.values() if sub.present and not sub.ended]

    async def _read(self, topic: str) -> list[tuple[int, str, datetime]]:
        # Rows of servers that stopped beating are left out even before anyone expires them.
        query = ("SELECT p.user_id, p.username, p.since FROM sync_presence p"
                 " JOIN sync_presence_server s ON s.server = p.server"
                 " WHERE p.topic = %s AND s.heartbeat_at >= now() - make_interval(secs => %s)")
        if self.pool is not None:
            async with self.pool.connection(timeout=5) as conn:
                return await (await conn.execute(query, (topic, self.expire_after))).fetchall()
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return await (await conn.execute(query, (topic, self.expire_after))).fetchall()

    async def _push(self, topic: str) -> None:
        self._refresh.pop(topic, None)
        if not self._watchers(topic):
            return
        try:
            rows = await self._read(topic)
        except psycopg.Error as exc:
            log.warning("presence: read of %s failed (%s); retrying", topic, exc)
            await asyncio.sleep(1)
            self._schedule(topic)
            return
        message = Prepared(protocol.presence(topic, summarize(rows)))
        for sub in self._watchers(topic):  # again: who is still there after the read
            sub.sink.send_prepared(message)
