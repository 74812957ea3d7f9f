"""The claim: one round trip sequences, encodes and returns a batch (migrations/0002_relay.sql)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

CLAIM_SQL = "SELECT r_pos, r_topic, r_envelope, r_created_at, r_error FROM outbox_claim(%s, %s, %s)"
UNPUBLISHED_SQL = (
    "SELECT o.pos, o.topic, outbox_envelope(o), o.created_at, o.error FROM outbox o"
    " WHERE o.pos > %s AND o.pos <= %s ORDER BY o.pos LIMIT %s"
)


@dataclass(frozen=True)
class Claimed:
    pos: int
    topic: str
    envelope: bytes
    created_at: datetime
    error: str | None


def _rows(rows) -> list[Claimed]:
    return [Claimed(p, t, e.encode() if isinstance(e, str) else e, c, err) for p, t, e, c, err in rows]


async def claim(conn: psycopg.AsyncConnection, batch_size: int, published_pos: int, max_bytes: int) -> list[Claimed]:
    """Sequence the next batch (committing at once: autocommit) and record published_pos."""
    cur = await conn.execute(CLAIM_SQL, (batch_size, published_pos, max_bytes), prepare=True)
    return _rows(await cur.fetchall())


async def positions(conn: psycopg.AsyncConnection) -> tuple[int, int]:
    cur = await conn.execute("SELECT last_pos, published_pos FROM outbox_relay_state WHERE id = 1")
    last, published = await cur.fetchone()
    return int(last), int(published)


async def unpublished(conn: psycopg.AsyncConnection, after: int, upto: int, limit: int) -> list[Claimed]:
    """Sequenced rows in (after, upto]: what a crashed leader may not have published."""
    cur = await conn.execute(UNPUBLISHED_SQL, (after, upto, limit))
    return _rows(await cur.fetchall())


async def record_published(conn: psycopg.AsyncConnection, pos: int) -> int:
    """Record pos as published; returns the recorded published_pos (it may be higher)."""
    cur = await conn.execute(
        "UPDATE outbox_relay_state SET published_pos = greatest(published_pos, %s), heartbeat_at = now()"
        " WHERE id = 1 RETURNING published_pos",
        (pos,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else pos
