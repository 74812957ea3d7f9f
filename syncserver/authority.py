"""Authority at subscribe time: may this user watch this topic now, and from which tpos?

The token proves who the user is and bounds the topics; the database decides, at every
subscribe and resume, through the portal's SQL function sync_grants() (domain rules stay
with the portal: portal/checklists/sql/schema.sql). This module only asks.

Thousands of clients re-subscribe at once after a restart, so checks are batched: every
check asked for while the loop runs one iteration goes into one query (unnest + LATERAL
sync_grants), identical (user, topic) pairs share one answer, and while a query runs the
next batch gathers. Async psycopg, so the event loop never waits for the database.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from syncserver import dbreads, metrics

log = logging.getLogger(__name__)

# One row per granted (user, topic) pair of the batch; a pair with no row has no access.
_GRANTS = """
SELECT r.i, g.floor
  FROM unnest(%s::bigint[], %s::text[]) WITH ORDINALITY AS r(u, t, i)
  CROSS JOIN LATERAL sync_grants(r.u, ARRAY[r.t]) AS g
"""
MAX_BATCH = 10_000  # pairs per query; a larger storm takes several


@dataclass(frozen=True, slots=True)
class Grant:
    """Access now. floor: the lowest `since` the user may resume from (where the current
    membership began); None while the event that began it is not sequenced yet."""
    floor: int | None


class DatabaseAuthority:
    def __init__(self, pool: AsyncConnectionPool, *, max_batch: int = MAX_BATCH):
        self.pool = pool
        self.max_batch = max_batch
        self.queries = 0  # how many queries answered checks (tests, metrics)
        self._pending: dict[tuple[int, str], asyncio.Future] = {}
        self._worker: asyncio.Task | None = None

    def check(self, user_id: int, topic: str) -> "asyncio.Future[Grant | None]":
        """The grant of user_id on topic (None: no access), answered with the checks of this
        loop iteration. The future is shared: await it through asyncio.shield()."""
        metrics.GRANT_CHECKS.inc()
        if not _storable(topic):
            # Cannot be a topic of the database's (the protocol refuses these already): no
            # access, and no query that one odd topic would fail for the whole batch.
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        key = (user_id, topic)
        fut = self._pending.get(key)
        if fut is None:
            fut = self._pending[key] = asyncio.get_running_loop().create_future()
            if self._worker is None or self._worker.done():
                # Starts on the next iteration: every check this iteration asks joins it.
                self._worker = asyncio.ensure_future(self._answer())
        return fut

    async def _answer(self) -> None:
        while self._pending:
            keys = list(self._pending)[:self.max_batch]
            batch = {k: self._pending.pop(k) for k in keys}
            try:
                grants = await self._query(keys)
            except Exception as exc:  # the waiters decide (resync); nothing is left hanging
                log.warning("grant check of %d pair(s) failed: %s", len(keys), exc)
                for fut in batch.values():
                    if not fut.done():
                        fut.set_exception(exc)
                        fut.exception()  # retrieved: a waiter that went away must not warn
                continue
            for i, (key, fut) in enumerate(batch.items()):
                if not fut.done():
                    fut.set_result(grants.get(i))

    async def _query(self, keys: list[tuple[int, str]]) -> dict[int, Grant]:
        self.queries += 1
        metrics.GRANT_QUERIES.inc()
        async def work(conn):
            cur = await conn.execute(_GRANTS, ([u for u, _ in keys], [t for _, t in keys]))
            found = await cur.fetchall()
            await conn.rollback()
            return found

        rows = await dbreads.read(self.pool, work)
        return {int(i) - 1: Grant(None if floor is None else int(floor)) for i, floor in rows}


def _storable(topic: str) -> bool:
    """Text PostgreSQL accepts: no NUL, no lone surrogate."""
    if "\x00" in topic:
        return False
    try:
        topic.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
