"""Helpers for the relay suite: broker and relay processes on free ports (a
stack.cluster.Cluster with a throwaway CURVE key set and quick timers), writers, and a
subscriber running in its own thread that records what it delivers."""
from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from stack.cluster import Cluster

FAST = {  # quick timers keep the suite short; the defaults are tested in test_units
    "OUTBOX_RELAY_POLL_INTERVAL": "0.5",
    "OUTBOX_RELAY_HEARTBEAT_INTERVAL": "0.3",
    "OUTBOX_RELAY_LOCK_RETRY": "0.2",
    "OUTBOX_RELAY_METRICS_PORT": "0",
    "OUTBOX_RELAY_CONNECT_DELAY": "0.2",
}


class RelayCluster(Cluster):
    """No sync server; a relay is named "relay" and awaited until it leads, unless told."""

    def start_relay(self, name: str = "relay", wait: str | None = "relay leader", **env: str):
        return super().start_relay(name, wait, **env)


@pytest.fixture
def stack(db_url):
    """Broker and relays are started by each test (stack.start_broker(), .start_relay());
    all stopped at teardown."""
    cluster = RelayCluster(db_url, relays=0, sync_servers=0, relay_env=FAST)
    try:
        yield cluster
    finally:
        cluster.stop()


def emit(db_url: str, n: int, topic: str = "t:1", per_tx: int = 1) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(0, n, per_tx):
            with conn.transaction():
                for j in range(min(per_tx, n - i)):
                    conn.execute("SELECT outbox_emit(%s, 'test', %s::jsonb)", (topic, f'{{"i": {i + j}}}'))


def armed(db_url: str) -> bool:
    """Whether the doorbell is armed (the view over its flag)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT armed FROM outbox_doorbell").fetchone()[0]


def drain(conn: psycopg.Connection, batch: int = 100_000) -> int:
    """Claim (as a relay would, without publishing) until nothing is left; returns how many
    claims found rows."""
    claims = 0
    while conn.execute("SELECT count(*) FROM outbox_claim(%s, 0, 1000000)", (batch,)).fetchone()[0]:
        claims += 1
    return claims


def relay_state(db_url: str) -> tuple[int, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT last_pos, published_pos FROM outbox_relay_state").fetchone()


def wait_until(pred, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Collector:
    """A Subscriber in a background thread; `events` is what it delivered, in order."""

    def __init__(self, **kwargs) -> None:
        from outbox_relay.subscriber import Subscriber

        self.sub = Subscriber(**kwargs)
        self.events: list = []
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._task = asyncio.current_task()
            self._started.set()
            await self.sub.run(self.events.append)

        try:
            self._loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc

    def positions(self) -> list[int]:
        return [e.pos for e in self.events]

    def wait_for_pos(self, pos: int, timeout: float = 15.0) -> None:
        def reached() -> bool:
            if self.error:
                raise self.error
            return self.sub.delivered_pos >= pos
        wait_until(reached, timeout, f"subscriber to reach pos {pos} (at {self.sub.delivered_pos})")

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)


@pytest.fixture
def collectors(stack):
    """make(**Subscriber kwargs): a Collector, with the stack's subscriber key unless given."""
    made: list[Collector] = []

    def make(**kwargs) -> Collector:
        kwargs.setdefault("curve", stack.keys.subscriber())
        c = Collector(**kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
