"""The doorbell: LISTEN outbox on a dedicated autocommit connection, and arm/disarm.

Writers NOTIFY only while the doorbell is armed (once per transaction, at its first outbox
row: migrations/schema.sql), because NOTIFY serializes commits. While events come slowly
the relay keeps it armed and claims each ring (relay.Relay._armed); when they come fast its
claims disarm it (inside the claim) and it drains on a timer, then arms and claims once
more. A writer that read "disarmed" was in progress when the relay armed: the relay notes
those transactions and, while it sleeps, claims again each time some of them have ended
(relay.Relay._sleep), so one left open delays nobody else.
"""
from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg import pq

log = logging.getLogger(__name__)

# Asynchronous commits (migrations/schema.sql): the flag is only a hint, polling
# is the safety net, so arming must not cost an fsync. The relay disarms only inside its
# claim (outbox_claim(..., p_disarm => true)), which commits durably anyway.
ARM_SQL = "SELECT outbox_set_doorbell(true)"
ARMED_SQL = "SELECT armed FROM outbox_doorbell"
# Run right after arming: the transactions in progress now are the only ones that may have
# read "disarmed" at commit and not rung; the relay claims again once they have ended.
IN_PROGRESS_SQL = "SELECT coalesce(array_agg(x), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) AS x"
# Which of them are still running (pg_xact_status is NULL for an xid too old to know: ended).
STILL_RUNNING_SQL = ("SELECT coalesce(array_agg(x), '{}') FROM unnest(%s::xid8[]) AS x"
                     " WHERE pg_xact_status(x) = 'in progress'")


class Listener:
    """Owns the LISTEN connection and tells the relay when a writer rang.

    The connection is read by a callback registered once on its socket for as long as it
    listens; each readable turn takes in what arrived and counts the notifications. A
    relay that claims each ring (200-300 events/s) wakes once per ring, so a wake-up must
    cost little: psycopg's notifies() registered and removed a reader and ran a wait with
    a timeout for every notification, and waiting here took two tasks and asyncio.wait;
    together about a third of the relay's busy samples at 250 events/s (py-spy), 120 us of
    CPU per ring against 50 now (bench.listener_cost). Now a ring resolves the one
    future the relay waits on, and a timer handle bounds the wait. Nothing else runs on
    this connection after its LISTEN, so reading it directly cannot take an answer meant
    for a query.
    """

    def __init__(self, dsn: str, connect_kwargs: dict) -> None:
        self.dsn = dsn
        self.connect_kwargs = connect_kwargs
        self.rings = 0  # notifications received: one per ringing transaction (relay.pacing)
        self._rung = False  # a ring came since the last wait() that reported one
        self._conn: psycopg.AsyncConnection | None = None
        self._fd: int | None = None
        self._error: BaseException | None = None  # what ended the connection
        self._waiter: asyncio.Future | None = None  # the wait() in progress
        self._stop_watch: tuple[asyncio.Event, asyncio.Task] | None = None

    @property
    def healthy(self) -> bool:
        return self._fd is not None

    async def start(self) -> None:
        """(Re)connect and LISTEN; the caller drains afterwards, so nothing is missed."""
        await self.close()
        self._conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name="outbox-relay-listener", **self.connect_kwargs)
        await self._conn.execute("LISTEN outbox")
        self._error = None
        self._fd = self._conn.pgconn.socket
        asyncio.get_running_loop().add_reader(self._fd, self._read)
        self._read()  # what came in with the answer to LISTEN is in libpq's buffer already

    def _read(self) -> None:
        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()  # never blocks: libpq's socket is non-blocking
        except psycopg.OperationalError as exc:  # the server or the network closed it
            self._stop_reading(exc)
            return
        got = 0
        while pgconn.notifies() is not None:
            got += 1
        if got:
            self.rings += got
            self._rung = True
            self._wake()
        if pgconn.status != pq.ConnStatus.OK:
            self._stop_reading(psycopg.OperationalError("the listener's connection is no longer usable"))

    def _stop_reading(self, exc: BaseException | None) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
            self._error = exc
            self._wake()

    def _wake(self, *_: object) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _watch(self, stop: asyncio.Event) -> None:
        """Wake the waiter when `stop` is set: one task for the listener's life, not one per wait."""
        if self._stop_watch is None or self._stop_watch[0] is not stop:
            self._unwatch()
            task = asyncio.ensure_future(stop.wait())
            task.add_done_callback(self._wake)
            self._stop_watch = (stop, task)

    def _unwatch(self) -> None:
        if self._stop_watch is not None:
            self._stop_watch[1].cancel()
            self._stop_watch = None

    async def wait(self, timeout: float, stop: asyncio.Event) -> str:
        """Until a ring, the poll timeout, stop, or the listener's death; says which
        ("rung", "poll", "stop", "listener-lost"). A ring that came before the call is
        reported at once; so is stop, and a listener that is not listening."""
        if not self._rung and not stop.is_set() and self.healthy:
            loop = asyncio.get_running_loop()
            self._watch(stop)
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self._wake)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._rung:
            self._rung = False
            return "rung"
        if stop.is_set():
            return "stop"
        if not self.healthy:
            return "listener-lost"
        return "poll"

    def error(self) -> BaseException | None:
        return self._error

    async def close(self) -> None:
        self._stop_reading(None)
        self._unwatch()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
