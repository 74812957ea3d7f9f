"""Each fault as one async function: break something, then repair it the way operations
would (or let the system heal itself), returning when the repair is done. The recovery
clock starts then."""
from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import psycopg

from outbox_relay.config import RelayConfig
from stack.cluster import Cluster

from .postgres import PrivatePostgres
from .load import hot_row_races, open_transaction
from .recorder import RecordingClient, successor

log = logging.getLogger(__name__)


@dataclass
class Context:
    cluster: Cluster
    clients: list[RecordingClient]
    topics: list[str]
    pg: PrivatePostgres | None = None
    slow_seconds: float = 30.0
    open_tx_seconds: float = 60.0
    pause_seconds: float = 10.0
    batch_rows: int = RelayConfig().batch_size  # the chaos relays run with the default
    notes: list[str] = field(default_factory=list)
    broken_at: float = 0.0   # monotonic time of the break; recovery is measured from it


Fault = Callable[[Context], Awaitable[None]]


async def _thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def kill_leader(ctx: Context) -> None:
    """kill -9 the relay leader; the standby must take over. The dead one comes back as standby."""
    c = ctx.cluster
    name = await _thread(c.leader)
    c.relays[name].kill(signal.SIGKILL)
    new = await _thread(c.leader, 20.0)
    ctx.notes.append(f"{name} killed, {new} took over")
    await _thread(c.start_relay, name)


async def kill_all_relays(ctx: Context) -> None:
    c = ctx.cluster
    names = list(c.relays)
    for name in names:
        c.relays[name].kill(signal.SIGKILL)
    await asyncio.sleep(1.0)
    for name in names:
        await _thread(c.start_relay, name)


async def kill_broker(ctx: Context) -> None:
    c = ctx.cluster
    assert c.broker is not None
    c.broker.kill(signal.SIGKILL)
    await asyncio.sleep(1.0)
    await _thread(c.start_broker)


async def pause_broker(ctx: Context) -> None:
    """SIGSTOP the broker: publishers and subscribers see a silent, connected peer."""
    c = ctx.cluster
    assert c.broker is not None
    c.broker.kill(signal.SIGSTOP)
    try:
        await asyncio.sleep(ctx.pause_seconds)
    finally:
        c.broker.kill(signal.SIGCONT)


async def kill_sync_server(ctx: Context) -> None:
    """kill -9 the sync server; it comes back on the same port and clients reconnect."""
    c = ctx.cluster
    assert c.sync is not None
    c.sync.kill(signal.SIGKILL)
    await asyncio.sleep(1.0)
    await _thread(c.start_sync)


async def kill_client(ctx: Context) -> None:
    """A client dies mid-stream; a new one resumes from its last tpos (same records)."""
    victim = ctx.clients[0]
    victim.kill()
    await asyncio.sleep(0.5)
    ctx.clients[0] = successor(victim)


async def restart_postgres(ctx: Context) -> None:
    if ctx.pg is None:
        raise RuntimeError("restart_postgres needs a private PostgreSQL cluster")
    await _thread(ctx.pg.restart, "fast")


async def terminate_listener(ctx: Context) -> None:
    """pg_terminate_backend on the relay's LISTEN connection."""
    def kill() -> int:
        with psycopg.connect(ctx.cluster.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query ILIKE 'LISTEN outbox%'").fetchall()
            return len(rows)
    n = await _thread(kill)
    ctx.notes.append(f"terminated {n} LISTEN connection(s)")
    if n == 0:
        raise RuntimeError("no LISTEN connection found to terminate")


async def slow_client(ctx: Context) -> None:
    """One websocket client reads nothing from its socket for slow_seconds, then carries on
    (websocket, because tornado's client reads no further frames while one is unconsumed, so
    the server really sees a stalled reader)."""
    client = next((c for c in ctx.clients if c.transport_kind == "websocket"), ctx.clients[-1])
    client.pause()
    try:
        await asyncio.sleep(ctx.slow_seconds)
    finally:
        client.resume()


async def open_transaction_fault(ctx: Context) -> None:
    """A transaction stays open open_tx_seconds while the load goes on around it."""
    await open_transaction(ctx.cluster.database_url, ctx.topics[0], ctx.open_tx_seconds)


async def forge_broker(ctx: Context) -> None:
    """Broker forgery with keys on (chaos/forgery.py): anonymous, unknown and wrong-role
    peers publish forged events and heartbeats and try to read. Nothing may be accepted,
    nothing skipped (the checker), nothing read (here)."""
    from .forgery import forge

    c = ctx.cluster
    result = await forge(c.database_url, c.frontend, c.backend, c.keys, ctx.topics, seconds=3.0)
    ctx.notes.append(f"forgery: {result.sent} forged messages sent, {result.read} read by spies")
    if result.sent == 0:
        raise RuntimeError("the forgers sent nothing")
    if result.read:
        raise AssertionError(f"spies without a subscriber key read {result.read} messages from the broker")


async def relays_race_cold(ctx: Context) -> None:
    """Every relay stopped, a backlog builds, then two relays start at the same instant."""
    c = ctx.cluster
    names = list(c.relays)
    for name in names:
        c.relays[name].kill(signal.SIGKILL)
    await asyncio.sleep(2.0)
    started = [c.start_relay(name, wait=None) for name in names]
    for d in started:
        await _thread(d.wait_for_line, "relay started", 20.0)


async def outage_longer_than_a_batch(ctx: Context) -> None:
    """Every relay down while writers conflict on hot rows (chaos.load.hot_row_races), the
    backlog several claim batches long; then the relays come back and drain it. Positions
    must still follow commit order on every row."""
    c = ctx.cluster
    names = list(c.relays)
    for name in names:
        c.relays[name].kill(signal.SIGKILL)
    rows = await hot_row_races(c.database_url, ctx.topics[0], rounds=3, filler=ctx.batch_rows + ctx.batch_rows // 4)
    ctx.notes.append(f"backlog of {rows} rows from the races, plus the load's")
    for name in names:
        await _thread(c.start_relay, name)


PRESENCE_BOUND = 10.0  # seconds for every server's presence to converge after a join, a leave, a kill -9


async def presence_across_servers(ctx: Context) -> None:
    """A second sync server joins the cluster; a watcher tab on the first one and a second tab
    of the same user on the other, both showing presence, while the load runs. The watcher
    must see the join, the tab's close and then the kill -9 of the second server (its rows
    expire), each within PRESENCE_BOUND; the clients under test are unaffected."""
    import time

    from stack.cluster import ORIGIN
    from stack.sockjs_client import connect

    c = ctx.cluster
    second = "syncserver-presence"
    await _thread(lambda: c.start_sync(second))
    token = ctx.clients[0].token_fn([ctx.topics[0]])
    subscribe = {"type": "subscribe", "topic": ctx.topics[0], "since": 0, "presence": True}

    async def tab(url: str):
        client = await connect("websocket", url, ORIGIN)
        await client.auth(token)
        await client.send(subscribe)

        async def ping():
            while True:  # the browser client's presence ping
                await client.send({"type": "ping", "id": 0})
                await asyncio.sleep(1)
        return client, asyncio.ensure_future(ping())

    async def converge(client, tabs: int, what: str) -> None:
        started = time.monotonic()
        while True:
            left = PRESENCE_BOUND - (time.monotonic() - started)
            if left <= 0:
                raise AssertionError(f"presence did not converge after {what} within {PRESENCE_BOUND}s")
            msg = await client.recv(left)
            if msg["type"] == "presence" and [u["tabs"] for u in msg["users"]] == [tabs]:
                ctx.notes.append(f"presence after {what}: {time.monotonic() - started:.2f}s")
                return

    watcher, watcher_ping = await tab(c.sockjs_url)
    other = other_ping = None
    try:
        await converge(watcher, 1, "the watcher's own join")
        other, other_ping = await tab(c.sync_url_of(second))
        await converge(watcher, 2, "a join on another server")
        other_ping.cancel()
        await other.close()
        await converge(watcher, 1, "a tab closed on another server")
        other, other_ping = await tab(c.sync_url_of(second))
        await converge(watcher, 2, "a join on another server")
        c.kill(second, signal.SIGKILL)
        await converge(watcher, 1, "kill -9 of the other server")
    finally:
        for task in (watcher_ping, other_ping):
            if task is not None:
                task.cancel()
        await watcher.close()
        if other is not None:
            other.abort()
        await _thread(lambda: c.stop(second))


FAULTS: dict[str, Fault] = {
    "kill -9 relay leader": kill_leader,
    "kill -9 all relays": kill_all_relays,
    "kill -9 broker": kill_broker,
    "SIGSTOP broker": pause_broker,
    "kill -9 sync server": kill_sync_server,
    "kill client": kill_client,
    "restart PostgreSQL": restart_postgres,
    "terminate LISTEN conn": terminate_listener,
    "slow client": slow_client,
    "open transaction": open_transaction_fault,
    "relays race cold": relays_race_cold,
    "outage longer than a batch": outage_longer_than_a_batch,
    "forge broker messages": forge_broker,
    "presence across servers": presence_across_servers,
}
