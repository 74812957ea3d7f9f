"""The topic position a read of a checklist reflects.

A page or API response carries, with the state it shows, the latest sequenced tpos of
the checklist's topic; the browser subscribes `since` it and misses nothing in between.
"""
from __future__ import annotations

from django.db import connection

from .models import checklist_topic


def latest_tpos(topic: str) -> int:
    """Latest sequenced tpos of `topic` (0 if nothing was ever sequenced on it)."""
    with connection.cursor() as cur:
        cur.execute("SELECT tpos FROM outbox_topic WHERE topic = %s", [topic])
        row = cur.fetchone()
    return int(row[0]) if row else 0


def checklist_tpos(checklist_id: int) -> int:
    return latest_tpos(checklist_topic(checklist_id))
