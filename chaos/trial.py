"""One chaos trial: fresh topics, recording clients, load, one fault, recovery, verdict."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import psycopg

from runtime.tokens import mint
from stack.cluster import ORIGIN, TOKEN_SECRET, Cluster

from . import db
from .checker import Totals, check_all, misordered_rows, unsequenced_gaps
from .faults import Context, Fault
from .load import Load
from .postgres import PrivatePostgres
from .recorder import RecordingClient, start_clients

log = logging.getLogger(__name__)

# The chaos relays: quick polling and lock retries, so a standby takes over within the
# trial; everything else at its default (chaos.faults.Context.batch_rows relies on it).
RELAY_ENV = {"OUTBOX_RELAY_POLL_INTERVAL": "0.5", "OUTBOX_RELAY_LOCK_RETRY": "0.3"}


def make_cluster(dsn: str, relays: int = 2) -> Cluster:
    """The processes under test (not started): broker, `relays` relays, one sync server."""
    return Cluster(dsn, relays=relays, relay_env=RELAY_ENV)


@dataclass
class Options:
    clients: int = 3
    transports: tuple[str, ...] = ("websocket", "xhr_streaming", "xhr")
    checklists: int = 2
    writers: int = 2
    rate: float = 15.0            # transactions per second per writer
    warm: float = 1.5             # load before the fault
    after: float = 2.0            # load after the repair
    settle_timeout: float = 60.0  # bound on the final catch-up
    slow_seconds: float = 30.0
    open_tx_seconds: float = 60.0
    pause_seconds: float = 10.0


@dataclass
class TrialResult:
    fault: str
    committed: int
    totals: Totals
    # seconds from the fault until every client applied everything committed before the repair
    recovery: float | None
    db_holes: int
    # objects whose versions do not rise with pos in the outbox (chaos.checker.misordered_rows)
    db_misordered: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.totals.ok and self.recovery is not None and self.db_holes == 0 and self.db_misordered == 0


def _snapshot_fn(dsn: str):
    async def snap(topic: str):
        def read():
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                return db.snapshot(conn, topic)
        return await asyncio.to_thread(read)
    return snap


def _progress(dsn: str, topics: list[str], max_id: int | None) -> tuple[int, dict[str, int], int]:
    """(unsequenced rows up to max_id, latest tpos per topic among rows up to max_id, max outbox id)."""
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        top = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        bound = top if max_id is None else max_id
        pending = conn.execute("SELECT count(*) FROM outbox WHERE pos IS NULL AND id <= %s", (bound,)).fetchone()[0]
        rows = conn.execute("SELECT topic, max(tpos) FROM outbox WHERE topic = ANY(%s) AND id <= %s"
                            " AND tpos IS NOT NULL GROUP BY topic", (topics, bound)).fetchall()
    return pending, {t: 0 for t in topics} | dict(rows), top


async def _wait_caught_up(dsn: str, topics: list[str], clients: list[RecordingClient], max_id: int | None,
                          timeout: float) -> float | None:
    """The monotonic time at which every client applied everything committed up to max_id."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            pending, latest, _ = await asyncio.to_thread(_progress, dsn, topics, max_id)
        except psycopg.OperationalError:
            pending, latest = 1, {}
        if pending == 0 and all(c.caught_up(latest) for c in clients):
            return time.monotonic()
        await asyncio.sleep(0.1)
    return None


async def run_trial(cluster: Cluster, name: str, fault: Fault, opts: Options,
                    pg: PrivatePostgres | None = None) -> TrialResult:
    dsn = cluster.database_url
    user_id, username, topics = await asyncio.to_thread(
        db.create_fixtures, dsn, checklists=opts.checklists, tag=uuid.uuid4().hex[:8])

    def start_state():
        with psycopg.connect(dsn) as conn:
            return {t: db.snapshot(conn, t) for t in topics}
    snaps = await asyncio.to_thread(start_state)
    clients = start_clients(
        opts.clients, transports=list(opts.transports), topics=topics,
        start_tpos={t: s[0] for t, s in snaps.items()}, start_state={t: s[1] for t, s in snaps.items()},
        sockjs_url=cluster.sockjs_url, origin=ORIGIN, snapshot_fn=_snapshot_fn(dsn),
        token_fn=lambda ts: mint(TOKEN_SECRET, user_id=user_id, username=username, topics=ts))
    ctx = Context(cluster=cluster, clients=clients, topics=topics, pg=pg, slow_seconds=opts.slow_seconds,
                  open_tx_seconds=opts.open_tx_seconds, pause_seconds=opts.pause_seconds)
    load = Load(dsn, topics, writers=opts.writers, rate=opts.rate, seed=hash(name) & 0xFFFF)
    try:
        deadline = time.monotonic() + 20
        while not all(set(c.records) <= c.live for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError(f"clients did not subscribe: {[c.stats for c in clients]}")
            await asyncio.sleep(0.05)
        load.start()
        await asyncio.sleep(opts.warm)
        ctx.broken_at = time.monotonic()
        await fault(ctx)
        _, _, max_id = await asyncio.to_thread(_progress, dsn, topics, None)
        recovery_task = asyncio.ensure_future(
            _wait_caught_up(dsn, topics, ctx.clients, max_id, opts.settle_timeout))
        await asyncio.sleep(opts.after)
        await load.stop()
        caught_up = await recovery_task
        recovery = None if caught_up is None else caught_up - ctx.broken_at
        settled = await _wait_caught_up(dsn, topics, ctx.clients, None, opts.settle_timeout)
        if settled is None:
            ctx.notes.append("did not settle: " + ", ".join(
                f"{c.name}: {{{', '.join(f'{t}: {r.last_tpos}' for t, r in c.records.items())}}}"
                f" live={sorted(c.live)} connects={c.stats.connects}" for c in ctx.clients))
    finally:
        await load.stop()
        for c in ctx.clients:
            await c.stop()

    def verdict():
        with psycopg.connect(dsn) as conn:
            floor = {t: s[0] for t, s in snaps.items()}
            return db.truth(conn, topics, floor), db.db_state(conn, topics)
    truth, state = await asyncio.to_thread(verdict)
    records = [(c.name, rec) for c in ctx.clients for rec in c.records.values()]
    totals = check_all(records, truth, state)
    totals.committed = load.stats.events
    errors = [e for c in ctx.clients for e in c.stats.errors]
    if errors:
        ctx.notes.append(f"protocol errors: {errors[:3]}")
    misordered = misordered_rows(truth)
    ctx.notes.extend(misordered[:3])
    return TrialResult(fault=name, committed=load.stats.events, totals=totals, recovery=recovery,
                       db_holes=unsequenced_gaps(truth), db_misordered=len(misordered), notes=ctx.notes)
