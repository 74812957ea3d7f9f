"""The subscriber library: every committed event exactly once, in pos order.

ZeroMQ is lossy, so the broker stream is only the fast path. The subscriber subscribes
first, then decides where it stands, and repairs from the outbox table whatever the
stream missed: a gap in positions, a heartbeat ahead of what was delivered, or a silent
stream (no heartbeat within heartbeat_timeout). Anything at or below the last delivered
position is dropped (ZeroMQ guide, Clone pattern). The decisions live in gaps.py.

    sub = Subscriber(broker_url="tcp://127.0.0.1:5558", dsn=database_url())
    async for event in sub: ...          # or: await sub.run(on_event)
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import AsyncIterator, Awaitable, Callable

import psycopg
import zmq
import zmq.asyncio

from outbox_relay.envelope import EnvelopeError, Event, Heartbeat, decode, decode_message
from outbox_relay.gaps import Action, Continuity, missing_ranges

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 5000
# Deep enough that a burst arriving during a catch-up is not dropped by ZeroMQ; a drop
# would still be repaired, just more slowly.
RCV_HWM = 200_000


class Subscriber:
    def __init__(self, *, broker_url: str, dsn: str, after_pos: int | None = None,
                 heartbeat_timeout: float = 3.0) -> None:
        self.broker_url = broker_url
        self.dsn = dsn
        self.after_pos = after_pos
        self.heartbeat_timeout = heartbeat_timeout
        self.delivered_pos: int = after_pos if after_pos is not None else 0
        self.catch_ups = 0  # how many times the outbox repaired the stream (for tests/metrics)
        self._conn: psycopg.AsyncConnection | None = None

    async def run(self, on_event: Callable[[Event], Awaitable[None] | None]) -> None:
        """Deliver events to on_event until cancelled."""
        async for event in self._events():
            result = on_event(event)
            if inspect.isawaitable(result):
                await result

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        ctx = zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCV_HWM)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.broker_url)
        try:
            # Subscribe first, then learn where the outbox stands: nothing published in
            # between can be missed.
            if self.after_pos is None:
                self.delivered_pos = await self._db_call(self._published_pos)
            cont = Continuity(self.delivered_pos, self.heartbeat_timeout)
            cont.heard(time.monotonic())
            # A restart may have missed anything the relay sequenced meanwhile.
            async for ev in self._catch_up(cont, await self._db_call(self._last_pos)):
                yield ev
            while True:
                try:
                    frames = await asyncio.wait_for(sock.recv_multipart(), timeout=self.heartbeat_timeout / 3)
                except asyncio.TimeoutError:
                    frames = None
                now = time.monotonic()
                if frames is None:
                    if cont.is_stale(now):
                        log.warning("stream silent for %.1fs; reading the outbox", self.heartbeat_timeout)
                        async for ev in self._catch_up(cont, await self._db_call(self._last_pos)):
                            yield ev
                        cont.heard(time.monotonic())
                    continue
                if len(frames) != 2:
                    log.warning("dropping a %d-frame message", len(frames))
                    continue
                try:
                    msg = decode_message(frames[0], frames[1])
                except EnvelopeError as exc:
                    log.warning("dropping an undecodable message on %r: %s", frames[0][:80], exc)
                    continue
                if isinstance(msg, Heartbeat):
                    decision = cont.on_heartbeat(msg.pos, now)
                else:
                    decision = cont.on_event(msg.pos, now)
                if decision.action is Action.DELIVER:
                    cont.advance(msg.pos)
                    self.delivered_pos = cont.delivered
                    yield msg
                elif decision.action is Action.CATCH_UP:
                    async for ev in self._catch_up(cont, decision.target):
                        yield ev
        finally:
            sock.close(0)
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _catch_up(self, cont: Continuity, target: int) -> AsyncIterator[Event]:
        """Deliver (delivered, target] from the outbox, in chunks."""
        if target <= cont.delivered:
            return
        self.catch_ups += 1
        log.info("catching up from the outbox: pos %d..%d", cont.delivered + 1, target)
        while cont.delivered < target:
            upto = min(target, cont.delivered + CATCH_UP_CHUNK)
            rows = await self._db_call(lambda conn: self._read_range(conn, cont.delivered, upto))
            for gap in missing_ranges(cont.delivered + 1, upto, [p for p, _ in rows]):
                # Only pruned rows are missing below a known position: they are gone for good.
                log.error("positions %d..%d are no longer in the outbox (pruned); skipping", *gap)
            for pos, raw in rows:
                if pos > cont.delivered + 1:
                    cont.skip_to(pos - 1)
                cont.advance(pos)
                self.delivered_pos = cont.delivered
                yield decode(raw)
            if cont.delivered < upto:
                cont.skip_to(upto)
                self.delivered_pos = cont.delivered

    async def _db_call(self, fn):
        """Run fn(conn) on the catch-up connection, reconnecting with backoff until it works."""
        delay = 0.1
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                return await fn(self._conn)
            except psycopg.OperationalError as exc:
                log.warning("outbox read failed (%s); retrying in %.1fs", exc, delay)
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    async def _published_pos(conn: psycopg.AsyncConnection) -> int:
        cur = await conn.execute("SELECT published_pos FROM outbox_relay_state WHERE id = 1")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    async def _last_pos(conn: psycopg.AsyncConnection) -> int:
        # Every pos up to last_pos is committed (the claim commits both together).
        cur = await conn.execute("SELECT last_pos FROM outbox_relay_state WHERE id = 1")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    async def _read_range(conn: psycopg.AsyncConnection, after: int, upto: int) -> list[tuple[int, bytes]]:
        cur = await conn.execute(
            "SELECT o.pos, outbox_envelope(o) FROM outbox o WHERE o.pos > %s AND o.pos <= %s ORDER BY o.pos",
            (after, upto),
        )
        return [(int(p), env.encode()) for p, env in await cur.fetchall()]
