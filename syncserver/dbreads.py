"""Read-only work on the sync server's connection pool, retried on a fresh connection when
the one the pool handed out was dead.

A pool keeps idle connections across a PostgreSQL restart, or an operator terminating the
server's sessions, and finds out only when one is used: the first grant check or catch-up
read afterwards would fail and its subscribers be told to resync (reload everything) though
the database is back. The pool discards a connection that failed; the work runs again on
another. Only reads come here, so running one twice is harmless. A pool timeout is not
retried: the pool already waited its timeout for a connection.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runtime.backoff import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3  # a dead idle connection or two, then a real outage: the caller decides (resync)


async def read(pool: AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection], Awaitable[T]], *,
               timeout: float = 10.0) -> T:
    """work(conn) on a pooled connection; on a connection failure, again on another (up to
    ATTEMPTS in all, a short backoff between), then the failure is raised."""
    backoff = Backoff(first=0.05, cap=0.4)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with pool.connection(timeout=timeout) as conn:
                return await work(conn)
        except PoolTimeout:
            raise
        except psycopg.OperationalError as exc:
            if attempt == ATTEMPTS:
                raise
            log.info("database read failed on a pooled connection (%s); retrying on another", exc)
            await asyncio.sleep(backoff.next())
    raise AssertionError("unreachable")
