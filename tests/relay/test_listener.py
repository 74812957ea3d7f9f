"""The doorbell's listener against a real PostgreSQL: every ring counted once, each wait()
says truly what woke it, and a connection the server ends is reported, then replaced."""
from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest

from outbox_relay.listener import Listener


def _ring(url: str, *payloads: str) -> None:
    """One transaction NOTIFYing once per payload (PostgreSQL folds identical ones)."""
    with psycopg.connect(url) as conn:
        for p in payloads:
            conn.execute("SELECT pg_notify('outbox', %s)", (p,))


def _terminate_listener(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name = 'outbox-relay-listener' AND datname = current_database()"
                            ).fetchone()[0]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@contextlib.asynccontextmanager
async def _listening(url: str):
    listener = Listener(url, {})
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


def test_rings_are_counted_once_each_and_reported_once(scratch_db):
    async def scenario():
        stop = asyncio.Event()
        async with _listening(scratch_db) as listener:
            assert await listener.wait(0.05, stop) == "poll"
            # Three notifications delivered together: three rings, one wake-up.
            await asyncio.to_thread(_ring, scratch_db, "a", "b", "c")
            assert await listener.wait(5, stop) == "rung"
            assert listener.rings == 3
            assert await listener.wait(0.05, stop) == "poll"
            # A ring that came while nobody waited is reported by the next wait, at once.
            await asyncio.to_thread(_ring, scratch_db, "d")
            await asyncio.sleep(0.2)
            assert await listener.wait(60, stop) == "rung"
            assert listener.rings == 4
            # Starting again replaces the connection and its reader: rings still count once.
            await listener.start()
            await asyncio.to_thread(_ring, scratch_db, "e")
            assert await listener.wait(5, stop) == "rung"
            await asyncio.sleep(0.2)
            assert listener.rings == 5
            assert listener.error() is None and listener.healthy
        assert not listener.healthy

    _run(scenario())


def test_stop_ends_a_long_wait_at_once(scratch_db):
    async def scenario():
        stop = asyncio.Event()
        async with _listening(scratch_db) as listener:
            asyncio.get_running_loop().call_later(0.1, stop.set)
            started = asyncio.get_running_loop().time()
            assert await listener.wait(60, stop) == "stop"
            assert asyncio.get_running_loop().time() - started < 30  # not the 60 s timeout
            assert await listener.wait(60, stop) == "stop"  # and at once while it stays set

    _run(scenario())


def test_a_connection_the_server_ends_is_reported_then_replaced(scratch_db):
    async def scenario():
        stop = asyncio.Event()
        async with _listening(scratch_db) as listener:
            assert await asyncio.to_thread(_terminate_listener, scratch_db) == 1
            assert await listener.wait(60, stop) == "listener-lost"
            assert isinstance(listener.error(), psycopg.OperationalError)
            assert not listener.healthy
            assert await listener.wait(60, stop) == "listener-lost"  # at once, every time
            await listener.start()
            assert listener.healthy and listener.error() is None
            await asyncio.to_thread(_ring, scratch_db, "after")
            assert await listener.wait(5, stop) == "rung"

    _run(scenario())


@pytest.mark.parametrize("timeout", [0.0, 0.01])
def test_a_wait_that_times_out_says_poll(scratch_db, timeout):
    async def scenario():
        async with _listening(scratch_db) as listener:
            assert await listener.wait(timeout, asyncio.Event()) == "poll"

    _run(scenario())
