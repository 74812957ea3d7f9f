"""What browsers learn about writers: no more than the REST API shows them (pure logic).

The relay's envelope is for trusted consumers (the subscriber library keeps it whole): its
`actor` may name an API token (`user:<id>:token:<token id>`) or a server login
(`os:<login>`), and `request_id` ties the event to the portal's logs. The REST API shows a
member the users of a list by `user_id` and `username`, nothing about their tokens or
requests. So the sync server sends browsers the envelope with `actor` cut to `user:<id>`
(or null for any other writer: the page then names the source, e.g. "sql") and without
`request_id`. The page turns the user id into the username its members panel shows.

Built once per event where events enter the sync server (the live stream and catch-up
reads), never per subscriber: the hub splices `Event.raw` into every message as before.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

_USER = re.compile(r"user:[0-9]+")


def public_actor(actor: Any) -> str | None:
    """`user:<id>` of an actor that starts with one (`user:5`, `user:5:token:9`), else None."""
    if not isinstance(actor, str):
        return None
    m = _USER.match(actor)
    if m is None or (len(actor) > m.end() and actor[m.end()] != ":"):
        return None
    return m.group(0)


def browser_raw(event: Any) -> bytes:
    """The browser envelope of one event: the relay's fields and order, request_id
    dropped, actor cut to public_actor()."""
    doc: dict[str, Any] = {
        "v": event.v, "pos": event.pos, "tpos": event.tpos, "topic": event.topic, "tx": event.tx,
        "entity": event.entity, "id": event.id, "op": event.op, "version": event.version, "data": event.data,
        "changed": event.changed, "actor": public_actor(event.actor), "source": event.source,
        "committed_at": event.committed_at, "tx_last": event.tx_last,
    }
    if event.error is not None:
        doc["error"] = event.error
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def for_browsers(event: Any) -> Any:
    """The event as browsers may see it (raw, actor and request_id replaced)."""
    return dataclasses.replace(event, raw=browser_raw(event), actor=public_actor(event.actor), request_id=None)
