"""The subscriber library: every committed event exactly once, in pos order.

ZeroMQ is lossy, so the broker stream is only the fast path. The subscriber subscribes
first, then decides where it stands, and repairs from the outbox table whatever the
stream missed: a gap in positions, a heartbeat ahead of what was delivered, or a silent
stream (no heartbeat within heartbeat_timeout). Anything at or below the last delivered
position is dropped (ZeroMQ guide, Clone pattern).

What the stream claims is never taken on trust (gaps.py): a catch-up reads no further
than the outbox's last_pos, and a position is skipped only when the outbox's retention
watermark proves it pruned. A claim beyond the outbox is logged and counted
(`outbox_subscriber_unfounded_claims_total`), not acted on.

The connection to the broker is a CURVE client (runtime/curve.py): the broker admits
only subscriber keys on its backend.

    sub = Subscriber(broker_url="tcp://127.0.0.1:5558", dsn=database_url(),
                     curve=ClientKeys(secret=my_secret_key, server=broker_public_key))
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
from prometheus_client import Counter

from outbox_relay.envelope import EnvelopeError, Event, Heartbeat, decode, decode_message
from outbox_relay.gaps import Action, Continuity, OutboxView, Skip
from outbox_relay.handshakes import HandshakeWatch
from runtime.backoff import Backoff
from runtime.curve import ClientKeys

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 5000
# Deep enough that a burst arriving during a catch-up is not dropped by ZeroMQ; a drop
# would still be repaired, just more slowly.
RCV_HWM = 200_000
HANDSHAKE_WATCH_EVERY = 0.5  # seconds between looks at the socket's handshake events
# After one awaited receive, up to this many more messages already queued are read without
# awaiting: an awaited receive costs a future and a timeout timer each, which at ~10k
# events/s was the subscriber's largest cost. The bound keeps the event loop fair.
DRAIN_AT_MOST = 512

UNFOUNDED = Counter(
    "outbox_subscriber_unfounded_claims_total",
    "Positions claimed by the broker stream beyond what the outbox has sequenced (not acted on)",
    ["kind"],
)

# One snapshot for the watermarks and the rows, so they agree: a claim or a prune that
# commits in between cannot make a sequenced row look missing.
_VIEW = "SELECT last_pos, pruned_pos FROM outbox_relay_state WHERE id = 1"
_ROWS = "SELECT o.pos, outbox_envelope(o) FROM outbox o WHERE o.pos > %s AND o.pos <= %s ORDER BY o.pos"


class Subscriber:
    def __init__(self, *, broker_url: str, dsn: str, curve: ClientKeys, after_pos: int | None = None,
                 heartbeat_timeout: float = 3.0) -> None:
        # after_pos None: live from the published_pos the relay has recorded (with each
        # claim and heartbeat, so it may trail what went out by a heartbeat).
        self.broker_url = broker_url
        self.dsn = dsn
        self.curve = curve
        self.after_pos = after_pos
        self.heartbeat_timeout = heartbeat_timeout
        self.delivered_pos: int = after_pos if after_pos is not None else 0
        self.catch_ups = 0  # how many times the outbox repaired the stream (for tests/metrics)
        self.unfounded_claims = 0  # claims beyond the outbox (this instance; UNFOUNDED counts all)
        # The last heartbeat the outbox did not contradict: /healthz reports these.
        self.heartbeat_at: float | None = None  # time.monotonic()
        self.heartbeat_pos: int | None = None
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
        self.curve.apply(sock)
        handshakes = HandshakeWatch(sock, self.broker_url, "subscriber")
        sock.connect(self.broker_url)
        try:
            # Subscribe first, then learn where the outbox stands: nothing published in
            # between can be missed.
            if self.after_pos is None:
                self.delivered_pos = await self._db_call(self._published_pos)
            cont = Continuity(self.delivered_pos, self.heartbeat_timeout)
            cont.heard(time.monotonic())
            # A restart may have missed anything the relay sequenced meanwhile.
            async for ev in self._catch_up(cont, None, "start"):
                yield ev
            watch_at = 0.0
            queued = zmq.Socket.shadow(sock.underlying)  # the same socket, read without awaiting
            pending: list[list[bytes]] = []
            while True:
                if pending:
                    frames = pending.pop()
                else:
                    try:
                        frames = await asyncio.wait_for(sock.recv_multipart(), timeout=self.heartbeat_timeout / 3)
                    except asyncio.TimeoutError:
                        frames = None
                    else:
                        pending = _queued(queued)
                now = time.monotonic()
                if now >= watch_at:  # not per message: this loop is every event's path
                    handshakes.poll()
                    watch_at = now + HANDSHAKE_WATCH_EVERY
                if frames is None:
                    if cont.is_stale(now):
                        log.warning("stream silent for %.1fs; reading the outbox", self.heartbeat_timeout)
                        async for ev in self._catch_up(cont, None, "silence"):
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
                    if decision.action is Action.DROP and msg.pos <= cont.delivered:
                        self._heard_heartbeat(msg.pos, now)
                else:
                    decision = cont.on_event(msg.pos, now)
                if decision.action is Action.DELIVER:
                    cont.advance(msg.pos)
                    self.delivered_pos = cont.delivered
                    yield msg
                elif decision.action is Action.CATCH_UP:
                    kind = "heartbeat" if isinstance(msg, Heartbeat) else "event"
                    async for ev in self._catch_up(cont, decision.target, kind):
                        yield ev
                    if kind == "heartbeat" and msg.pos <= cont.known_last:
                        self._heard_heartbeat(msg.pos, time.monotonic())
        finally:
            handshakes.close()
            sock.close(0)
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    def _heard_heartbeat(self, pos: int, now: float) -> None:
        self.heartbeat_at, self.heartbeat_pos = now, pos

    async def _catch_up(self, cont: Continuity, claimed: int | None, why: str) -> AsyncIterator[Event]:
        """Deliver (delivered, min(claimed, last_pos)] from the outbox, in chunks; claimed
        None: everything the outbox has sequenced."""
        first = True
        while True:
            view, rows = await self._db_call(lambda conn: self._read(conn, cont.delivered, claimed))
            target, founded = cont.bound(view.last_pos if claimed is None else claimed, view, time.monotonic())
            if first:
                first = False
                if not founded:
                    self.unfounded_claims += 1
                    UNFOUNDED.labels(why).inc()
                    log.warning("a %s claimed pos %d, beyond what the outbox has sequenced (%d): not acted on",
                                why, claimed, view.last_pos)
                if target > cont.delivered:
                    self.catch_ups += 1
                    log.info("catching up from the outbox: pos %d..%d", cont.delivered + 1, target)
            if target <= cont.delivered:
                return
            upto = min(target, cont.delivered + CATCH_UP_CHUNK)
            steps, hole = cont.plan(upto, [p for p, _ in rows], view.pruned_pos)
            envelopes = dict(rows)
            for step in steps:
                if isinstance(step, Skip):
                    cont.skip_to(step.last, view.pruned_pos)
                    log.warning("positions %d..%d were pruned from the outbox (retention watermark %d); skipping",
                                step.first, step.last, view.pruned_pos)
                else:
                    cont.advance(step)
                    self.delivered_pos = cont.delivered
                    yield decode(envelopes[step])
                self.delivered_pos = cont.delivered
            if hole is not None:
                # Sequenced, not pruned, yet absent: something deleted outbox rows behind
                # the watermark's back. Never skip them; a later catch-up looks again.
                cont.hold_off(time.monotonic())
                log.error("positions %d..%d are missing from the outbox but not pruned (watermark %d):"
                          " not skipping them, delivery waits", hole.first, hole.last, view.pruned_pos)
                return

    async def _read(self, conn: psycopg.AsyncConnection, after: int,
                    claimed: int | None) -> tuple[OutboxView, list[tuple[int, bytes]]]:
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = await conn.execute(_VIEW)
            row = await cur.fetchone()
            view = OutboxView(int(row[0]), int(row[1])) if row else OutboxView(0, 0)
            upto = view.last_pos if claimed is None else min(claimed, view.last_pos)
            upto = min(upto, after + CATCH_UP_CHUNK)
            if upto <= after:
                return view, []
            cur = await conn.execute(_ROWS, (after, upto))
            return view, [(int(p), env.encode()) for p, env in await cur.fetchall()]

    async def _db_call(self, fn):
        """Run fn(conn) on the catch-up connection, reconnecting with backoff until it works."""
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                return await fn(self._conn)
            except psycopg.OperationalError as exc:
                delay = backoff.next()
                log.warning("outbox read failed (%s); retrying in %.1fs", exc, delay)
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                await asyncio.sleep(delay)

    @staticmethod
    async def _published_pos(conn: psycopg.AsyncConnection) -> int:
        cur = await conn.execute("SELECT published_pos FROM outbox_relay_state WHERE id = 1")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


def _queued(sock: zmq.Socket) -> list[list[bytes]]:
    """The messages already queued on `sock` (at most DRAIN_AT_MOST), newest first: the
    caller pops from the end, so they are handled in arrival order."""
    got: list[list[bytes]] = []
    try:
        while len(got) < DRAIN_AT_MOST:
            got.append(sock.recv_multipart(zmq.NOBLOCK))
    except zmq.Again:
        pass
    got.reverse()
    return got
