"""Catch-up reads: the events of one topic after a tpos, straight from the outbox.

Async psycopg pool, so a slow query never blocks the event loop. Envelopes are built
by the relay's own SQL function outbox_envelope() (migrations/schema.sql), then
redacted for browsers as live events are (syncserver/redaction.py), so a recovered
event is byte-for-byte the one a live subscriber got.
"""
from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from outbox_relay import envelope
from syncserver import dbreads
from syncserver.hub import CatchUpResult
from syncserver.redaction import for_browsers

log = logging.getLogger(__name__)

# Both reads in one transaction (REPEATABLE READ): the latest tpos and the rows agree.
_EVENTS = """
SELECT outbox_envelope(o) FROM outbox o
 WHERE o.topic = %s AND o.tpos > %s
 ORDER BY o.tpos
 LIMIT %s
"""
_LATEST = "SELECT tpos FROM outbox_topic WHERE topic = %s"


class OutboxCatchUp:
    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4):
        self.pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False,
                                        kwargs={"autocommit": False, "application_name": "syncserver"},
                                        name="syncserver-catchup")

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def read(self, topic: str, since: int, limit: int) -> CatchUpResult:
        async def work(conn):
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute(_LATEST, (topic,))
                row = await cur.fetchone()
                latest = int(row[0]) if row else 0
                cur = await conn.execute(_EVENTS, (topic, since, limit))
                return latest, await cur.fetchall()

        latest, rows = await dbreads.read(self.pool, work)
        return CatchUpResult(events=[for_browsers(envelope.decode(r[0].encode())) for r in rows], latest=latest)

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
                await conn.rollback()
            return True
        except Exception:  # any failure means "database unavailable" for /healthz
            log.debug("database ping failed", exc_info=True)
            return False
