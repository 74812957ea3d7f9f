"""The load generator: writers committing changes to the tracked tables while faults happen.

Writers are asyncio tasks over psycopg, each with a provenance style: "shell" sets the
outbox.* settings the way Django's set_provenance does, "sql" sets nothing (raw SQL).
Every transaction is one random operation: add 1-3 items, edit, toggle, delete, move an
item to another list, rename a list. Writers survive a database restart (reconnect with
backoff); a commit whose outcome is unknown is counted as in doubt, never as committed.
"""
from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, field

import psycopg

from runtime.backoff import Backoff

from .db import topic_id

log = logging.getLogger(__name__)

OPS = ("add", "add", "edit", "toggle", "delete", "move", "rename")


@dataclass
class LoadStats:
    transactions: int = 0
    events: int = 0       # outbox rows of committed transactions
    in_doubt: int = 0     # commits whose outcome is unknown (connection lost during COMMIT)
    failed: int = 0       # rolled back (conflict, connection lost before commit)
    by_source: dict[str, int] = field(default_factory=dict)


class Load:
    def __init__(self, dsn: str, topics: list[str], *, writers: int = 2, rate: float = 20.0,
                 seed: int = 1, sources: tuple[str, ...] = ("shell", "sql")):
        self.dsn = dsn
        self.checklists = [topic_id(t) for t in topics]
        self.writers = writers
        self.rate = rate          # transactions per second per writer
        self.rng = random.Random(seed)
        self.sources = sources
        self.stats = LoadStats()
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()

    def start(self) -> "Load":
        self._stop.clear()
        self._tasks = [asyncio.ensure_future(self._writer(i)) for i in range(self.writers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _writer(self, n: int) -> None:
        source = self.sources[n % len(self.sources)]
        conn: psycopg.AsyncConnection | None = None
        backoff = Backoff(first=0.1, cap=2.0)
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=3)
                    backoff.reset()
                await self._one_transaction(conn, source, n)
                try:
                    await asyncio.wait_for(self._stop.wait(), 1.0 / self.rate)
                except asyncio.TimeoutError:
                    pass
            except psycopg.OperationalError as exc:
                log.info("writer %d: %s", n, str(exc).splitlines()[0] if str(exc) else exc)
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(backoff.next())
        if conn is not None:
            await conn.close()

    async def _one_transaction(self, conn: psycopg.AsyncConnection, source: str, n: int) -> None:
        op = self.rng.choice(OPS)
        checklist = self.rng.choice(self.checklists)
        committing = False
        try:
            async with conn.transaction():
                if source != "sql":
                    await conn.execute(
                        "SELECT set_config('outbox.actor', %s, true), set_config('outbox.source', %s, true),"
                        " set_config('outbox.request_id', %s, true)", (f"writer-{n}", source, uuid.uuid4().hex))
                await self._apply(conn, op, checklist)
                cur = await conn.execute("SELECT count(*) FROM outbox WHERE txid = pg_current_xact_id()")
                rows = (await cur.fetchone())[0]
                committing = True
            self.stats.transactions += 1
            self.stats.events += rows
            self.stats.by_source[source] = self.stats.by_source.get(source, 0) + rows
        except psycopg.OperationalError:
            if committing:
                self.stats.in_doubt += 1
            else:
                self.stats.failed += 1
            raise
        except psycopg.errors.DatabaseError as exc:
            # e.g. a deadlock between two writers moving items: rolled back, nothing committed.
            self.stats.failed += 1
            log.debug("writer %d: rolled back: %s", n, exc)

    async def _apply(self, conn: psycopg.AsyncConnection, op: str, checklist: int) -> None:
        rng = self.rng
        item = None
        if op in ("edit", "toggle", "delete", "move"):
            cur = await conn.execute(
                "SELECT id FROM checklists_item WHERE checklist_id = %s ORDER BY random() LIMIT 1 FOR UPDATE",
                (checklist,))
            row = await cur.fetchone()
            if row is None:
                op = "add"
            else:
                item = row[0]
        if op == "add":
            for _ in range(rng.randint(1, 3)):
                await conn.execute(
                    "INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                    " VALUES (%s, %s, false, %s, 1)", (checklist, f"item {uuid.uuid4().hex[:8]}", rng.randint(0, 99)))
        elif op == "edit":
            await conn.execute("UPDATE checklists_item SET text = %s WHERE id = %s",
                               (f"edited {uuid.uuid4().hex[:8]}", item))
        elif op == "toggle":
            await conn.execute("UPDATE checklists_item SET done = NOT done WHERE id = %s", (item,))
        elif op == "delete":
            await conn.execute("DELETE FROM checklists_item WHERE id = %s", (item,))
        elif op == "move":
            target = rng.choice(self.checklists)
            await conn.execute("UPDATE checklists_item SET checklist_id = %s WHERE id = %s", (target, item))
        elif op == "rename":
            await conn.execute("UPDATE checklists_checklist SET title = %s WHERE id = %s",
                               (f"renamed {uuid.uuid4().hex[:8]}", checklist))


async def open_transaction(dsn: str, topic: str, hold: float) -> int:
    """A writer that keeps its transaction open for `hold` seconds, then commits. Returns rows."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                " VALUES (%s, 'held open', false, 0, 1)", (topic_id(topic),))
            await asyncio.sleep(hold)
        return 1


async def hot_row_races(dsn: str, topic: str, *, rounds: int, filler: int) -> int:
    """The race behind issue 13, `rounds` times on one hot item of `topic`: a transaction
    writes an early row and stays open; `filler` one-row transactions commit (on a topic no
    client watches, so the backlog spans claim batches); another transaction updates the hot
    item and commits; the open one then updates it too and commits. Returns rows written."""
    checklist = topic_id(topic)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as setup:
        cur = await setup.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                                  " VALUES (%s, 'hot', false, 0, 1) RETURNING id", (checklist,))
        hot = (await cur.fetchone())[0]
        # Filler commits need not wait for the disk: they only make the backlog long.
        await setup.execute("SET synchronous_commit = off")
        rows = 1
        for r in range(rounds):
            async with await psycopg.AsyncConnection.connect(dsn) as late, \
                    await psycopg.AsyncConnection.connect(dsn) as quick:
                await late.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                                   " VALUES (%s, %s, false, 1, 1)", (checklist, f"early {r}"))
                for _ in range(filler):
                    await setup.execute("SELECT outbox_emit('chaos:filler', 'filler', '{}')")
                await quick.execute("UPDATE checklists_item SET text = %s WHERE id = %s", (f"quick {r}", hot))
                await quick.commit()
                await late.execute("UPDATE checklists_item SET text = %s WHERE id = %s", (f"late {r}", hot))
                await late.commit()
            rows += filler + 3
    return rows
