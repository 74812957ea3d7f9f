"""Leader election: a session-level advisory lock on the relay's sequencing connection.

The lock lives on the same connection that runs the claims, so a claim can only commit
while its session holds the lock: if that connection dies, the lock is released and the
claim fails at once (no separate lock connection that could die while work goes on).
PostgreSQL releases the lock when the session ends, kill -9 of the process included.
"""
from __future__ import annotations

import psycopg

# One fixed key below 2**32, so pg_locks shows it as classid 0, objid LOCK_KEY.
LOCK_KEY = 0x6F757462  # "outb"


async def try_lead(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def record_leader(conn: psycopg.AsyncConnection, name: str) -> None:
    await conn.execute(
        "UPDATE outbox_relay_state SET leader = %s, leader_since = now(), heartbeat_at = now() WHERE id = 1",
        (name,),
    )


LEADER_ALIVE_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0"
    f" AND objid = {LOCK_KEY} AND objsubid = 1 AND granted AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()))"
)
