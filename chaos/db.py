"""The database side of a chaos run: fixtures (users, checklists), the truth the checker
compares with (sequenced outbox events, final object state) and resync snapshots."""
from __future__ import annotations

import json
from typing import Any

import psycopg

from .record import Change, Key

# Object state per topic, as to_jsonb of the tracked rows (the same documents the capture
# trigger puts in outbox.data).
_STATE_SQL = """
SELECT 'checklist', id::text, version, to_jsonb(c) FROM checklists_checklist c WHERE id = %(id)s
UNION ALL
SELECT 'membership', id::text, version, to_jsonb(m) FROM checklists_membership m WHERE checklist_id = %(id)s
UNION ALL
SELECT 'item', id::text, version, to_jsonb(i) FROM checklists_item i WHERE checklist_id = %(id)s
"""


def topic_id(topic: str) -> int:
    return int(topic.split(":", 1)[1])


def create_fixtures(dsn: str, *, checklists: int, tag: str) -> tuple[int, str, list[str]]:
    """A user owning `checklists` fresh checklists; returns (user id, username, topics)."""
    username = f"chaos-{tag}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM auth_user WHERE username = %s", (username,)).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
                " is_staff, is_active, date_joined) VALUES ('!', false, %s, '', '', '', false, true, now())"
                " RETURNING id", (username,)).fetchone()
        user_id = row[0]
        topics = []
        for n in range(checklists):
            # One transaction, as the portal creates a list with its owner: the owner's
            # membership then covers the list's whole history (the sync server's floor).
            with conn.transaction():
                cid = conn.execute(
                    "INSERT INTO checklists_checklist (title, owner_id, created_at, version)"
                    " VALUES (%s, %s, now(), 1) RETURNING id", (f"{tag} list {n}", user_id)).fetchone()[0]
                conn.execute("INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                             " VALUES (%s, %s, 'owner', 1)", (cid, user_id))
            topics.append(f"checklist:{cid}")
    return user_id, username, topics


def latest_tpos(conn: psycopg.Connection, topics: list[str]) -> dict[str, int]:
    rows = conn.execute("SELECT topic, tpos FROM outbox_topic WHERE topic = ANY(%s)", (topics,)).fetchall()
    return {t: 0 for t in topics} | dict(rows)


def backlog(conn: psycopg.Connection) -> int:
    """Committed rows the relay has not sequenced yet."""
    return conn.execute("SELECT count(*) FROM outbox WHERE pos IS NULL").fetchone()[0]


def state_of(conn: psycopg.Connection, topic: str) -> dict[Key, tuple[int | None, Any]]:
    rows = conn.execute(_STATE_SQL, {"id": topic_id(topic)}).fetchall()
    return {(entity, oid): (version, _json(doc)) for entity, oid, version, doc in rows}


def snapshot(conn: psycopg.Connection, topic: str) -> tuple[int, dict[Key, tuple[int | None, Any]]]:
    """State and the tpos it reflects, read in one transaction (the REST API's contract)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        state = state_of(conn, topic)
        tpos = latest_tpos(conn, [topic])[topic]
    return tpos, state


def truth(conn: psycopg.Connection, topics: list[str], above: dict[str, int]) -> dict[str, dict[int, Change]]:
    """Every sequenced event of the topics with tpos above the given floor."""
    out: dict[str, dict[int, Change]] = {t: {} for t in topics}
    rows = conn.execute(
        "SELECT topic, pos, tpos, entity, entity_id, op, version, data, error FROM outbox"
        " WHERE topic = ANY(%s) AND tpos IS NOT NULL", (topics,)).fetchall()
    for topic, pos, tpos, entity, eid, op, version, data, error in rows:
        if tpos > above.get(topic, 0):
            out[topic][tpos] = Change(pos=pos, tpos=tpos, entity=entity, id=eid, op=op, version=version,
                                      data=_json(data), poisoned=bool(error))
    return out


def db_state(conn: psycopg.Connection, topics: list[str]) -> dict[str, dict[Key, Any]]:
    return {t: {k: doc for k, (_, doc) in state_of(conn, t).items()} for t in topics}


def _json(doc: Any) -> Any:
    # jsonb comes back as Python objects already; a text column would not.
    return json.loads(doc) if isinstance(doc, str) else doc
