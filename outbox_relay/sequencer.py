"""The claim: one round trip sequences, encodes and returns a batch.

outbox_claim() is in migrations/schema.sql: it sequences a batch in commit order, an
empty claim costs no fsync, and a claim with work disarms the doorbell in its own
transaction. Rows come back as plain tuples (pos, topic, envelope,
created_at, error): building an object per row cost more than publishing it.
"""
from __future__ import annotations

from datetime import datetime

import psycopg

CLAIM_SQL = "SELECT r_pos, r_topic, r_envelope, r_created_at, r_error FROM outbox_claim(%s, %s, %s, %s)"
RECORD_SQL = "SELECT outbox_record_published(%s)"
UNPUBLISHED_SQL = (
    "SELECT o.pos, o.topic, outbox_envelope(o), o.created_at, o.error FROM outbox o"
    " WHERE o.pos > %s AND o.pos <= %s ORDER BY o.pos LIMIT %s"
)


# (pos, topic, envelope JSON text, created_at, error): the relay's hot path works on these.
Row = tuple[int, str, str, datetime, "str | None"]


async def claim(conn: psycopg.AsyncConnection, batch_size: int, published_pos: int, max_bytes: int,
                disarm: bool = True) -> list[Row]:
    """Sequence the next batch (committing at once, durably: autocommit) and record
    published_pos; with disarm, the doorbell is disarmed in the same transaction when
    there was work. Returns rows in pos order."""
    cur = await conn.execute(CLAIM_SQL, (batch_size, published_pos, max_bytes, disarm), prepare=True)
    return await cur.fetchall()


async def positions(conn: psycopg.AsyncConnection) -> tuple[int, int]:
    cur = await conn.execute("SELECT last_pos, published_pos FROM outbox_relay_state WHERE id = 1")
    last, published = await cur.fetchone()
    return int(last), int(published)


async def unpublished(conn: psycopg.AsyncConnection, after: int, upto: int, limit: int) -> list[Row]:
    """Sequenced rows in (after, upto]: what a crashed leader may not have published."""
    cur = await conn.execute(UNPUBLISHED_SQL, (after, upto, limit))
    return await cur.fetchall()


async def record_published(conn: psycopg.AsyncConnection, pos: int) -> int:
    """Record pos as published; returns the recorded published_pos (it may be higher)."""
    # Asynchronous commit (outbox_record_published): a hint, it must not cost an fsync
    # on the connection that claims.
    cur = await conn.execute(RECORD_SQL, (pos,), prepare=True)
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else pos
