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
    """Owns the LISTEN connection; `rung` is set by every notification."""

    def __init__(self, dsn: str, connect_kwargs: dict) -> None:
        self.dsn = dsn
        self.connect_kwargs = connect_kwargs
        self.rung = asyncio.Event()
        self.rings = 0  # notifications received: one per ringing transaction (relay.pacing)
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task | None = None

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """(Re)connect and LISTEN; the caller drains afterwards, so nothing is missed."""
        await self.close()
        self._conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name="outbox-relay-listener", **self.connect_kwargs)
        await self._conn.execute("LISTEN outbox")
        self._task = asyncio.create_task(self._pump(self._conn), name="relay-listener")

    async def _pump(self, conn: psycopg.AsyncConnection) -> None:
        async for _ in conn.notifies():
            self.rings += 1
            self.rung.set()

    async def wait(self, timeout: float, stop: asyncio.Event) -> str:
        """Until a ring, the poll timeout, stop, or the listener's death; says which."""
        if self.rung.is_set():
            self.rung.clear()
            return "rung"
        waiters = {asyncio.ensure_future(self.rung.wait()): "rung", asyncio.ensure_future(stop.wait()): "stop"}
        if self._task is not None:
            waiters[self._task] = "listener-lost"  # type: ignore[index]
        done, _ = await asyncio.wait(list(waiters), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for fut, what in waiters.items():
            if fut is not self._task and not fut.done():
                fut.cancel()
        self.rung.clear()
        if not done:
            return "poll"
        if stop.is_set():
            return "stop"
        if self._task in done:
            return "listener-lost"
        return "rung"

    def error(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, psycopg.Error):
                pass
            self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
