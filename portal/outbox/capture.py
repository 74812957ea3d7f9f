"""The Python side of capture: provenance for the triggers, and explicit domain events."""
from __future__ import annotations

import json
from typing import Any

from django.db import connection

SOURCES = ("api", "ui", "admin", "shell", "sql")


def set_provenance(*, actor: str | None, source: str, request_id: str | None, local: bool = False) -> None:
    """Tell the capture triggers who is writing.

    local=True scopes the settings to the current transaction (set_config(..., true));
    local=False scopes them to the connection until clear_provenance(), which is what
    request middleware uses, since it runs outside the view's transaction.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown provenance source {source!r}; expected one of {SOURCES}")
    with connection.cursor() as cur:
        cur.execute(
            "SELECT set_config('outbox.actor', %s, %s), set_config('outbox.source', %s, %s),"
            " set_config('outbox.request_id', %s, %s)",
            [actor or "", local, source, local, request_id or "", local],
        )


def clear_provenance() -> None:
    """Forget connection-level provenance, so a later writer on this connection records 'sql'
    (the triggers read an empty source as 'sql'). One statement: it runs after every request."""
    with connection.cursor() as cur:
        cur.execute("SELECT set_config('outbox.actor', '', false), set_config('outbox.source', '', false),"
                    " set_config('outbox.request_id', '', false)")


def emit(topic: str, type: str, payload: dict[str, Any], *, entity_id: str = "") -> int:
    """Insert an explicit domain event into the outbox, in the caller's transaction. Returns its id."""
    with connection.cursor() as cur:
        cur.execute("SELECT outbox_emit(%s, %s, %s::jsonb, %s)", [topic, type, json.dumps(payload), entity_id])
        return cur.fetchone()[0]
