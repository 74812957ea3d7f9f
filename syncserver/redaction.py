"""What browsers learn about writers: no more than the REST API shows them (pure logic).

The relay's envelope is for trusted consumers (the subscriber library keeps it whole): its
`actor` may name an API token (`user:<id>:token:<token id>`) or a server login
(`os:<login>`), and `request_id` ties the event to the portal's logs. The REST API shows a
member the users of a list by `user_id` and `username`, nothing about their tokens or
requests. So the sync server sends browsers the envelope with `actor` cut to `user:<id>`
(or null for any other writer: the page then names the source, e.g. "sql") and without
`request_id`. The page turns the user id into the username its members panel shows.

Done once per event where events enter the sync server (the live stream and catch-up
reads), never per subscriber, and without re-encoding: the envelope's bytes are spliced
(a couple of microseconds, against ~30 for decoding it). The splice relies on the
envelope's key order (outbox_envelope() and envelope.encode() both end with `actor`,
`source`, `request_id`, `committed_at`, `tx_last`[, `error`]): searching from the end,
the last `"request_id"` key and the last `"actor"` key before it are the envelope's own
(inside JSON strings quotes are escaped; a string value equal to a key, such as an
`error` of "request_id", is told from a key by the colon that follows only a key). Anything
unexpected falls back to re-encoding the decoded fields.
"""
from __future__ import annotations

import json
import re
from typing import Any

_USER = re.compile(r"user:[0-9]+")
_WS = b" \t\n\r"


def public_actor(actor: Any) -> str | None:
    """`user:<id>` of an actor that starts with one (`user:5`, `user:5:token:9`), else None."""
    if not isinstance(actor, str):
        return None
    m = _USER.match(actor)
    if m is None or (len(actor) > m.end() and actor[m.end()] != ":"):
        return None
    return m.group(0)


class BrowserEvent:
    """An event as browsers may see it: what the hub reads, and `raw`, the browser envelope.
    Slotted: the hub's rings hold many."""

    __slots__ = ("v", "pos", "tpos", "topic", "tx", "entity", "id", "op", "version", "data", "changed", "actor",
                 "source", "committed_at", "tx_last", "error", "raw")
    request_id = None

    def __init__(self, event: Any, raw: bytes, actor: str | None):
        self.v, self.pos, self.tpos, self.topic, self.tx = event.v, event.pos, event.tpos, event.topic, event.tx
        self.entity, self.id, self.op, self.version = event.entity, event.id, event.op, event.version
        self.data, self.changed, self.source = event.data, event.changed, event.source
        self.committed_at, self.tx_last, self.error = event.committed_at, event.tx_last, event.error
        self.actor, self.raw = actor, raw


def for_browsers(event: Any) -> BrowserEvent:
    actor = public_actor(event.actor)
    raw = _splice(event.raw, actor)
    return BrowserEvent(event, raw if raw is not None else browser_raw(event), actor)


def browser_raw(event: Any) -> bytes:
    """The browser envelope re-encoded from the decoded fields (the slow, sure way)."""
    doc: dict[str, Any] = {
        "v": event.v, "pos": event.pos, "tpos": event.tpos, "topic": event.topic, "tx": event.tx,
        "entity": event.entity, "id": event.id, "op": event.op, "version": event.version, "data": event.data,
        "changed": event.changed, "actor": public_actor(event.actor), "source": event.source,
        "committed_at": event.committed_at, "tx_last": event.tx_last,
    }
    if event.error is not None:
        doc["error"] = event.error
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# After a key: the colon and a null or string value (a JSON string: no raw quote or
# backslash except escaped ones).
_MEMBER_VALUE = re.compile(rb'[ \t\n\r]*:[ \t\n\r]*(null|"[^"\\]*(?:\\.[^"\\]*)*")', re.S)


def _last_member(raw: bytes, key: bytes, end: int) -> tuple[int, re.Match] | None:
    """The last `key` that starts before `end` and is a member's key, with its value's
    match. A string value can equal a key (an `error` or `source` of "request_id" or
    "actor"): it is followed by no colon, so the search goes on before it."""
    while (k := raw.rfind(key, 0, end)) >= 0:
        m = _MEMBER_VALUE.match(raw, k + len(key))
        if m is not None:
            return k, m
        end = k
    return None


def _splice(raw: bytes, actor: str | None) -> bytes | None:
    """raw without request_id and with actor replaced, or None if raw is not shaped as expected."""
    found_r = _last_member(raw, b'"request_id"', len(raw))
    if found_r is None:
        return None
    r, mr = found_r
    found_a = _last_member(raw, b'"actor"', r)
    if found_a is None:
        return None
    _, ma = found_a
    if ma.end() > r:
        return None
    # The request_id member goes with the comma before it.
    comma = raw.rfind(b",", ma.end(), r)
    if comma < 0 or raw[comma + 1:r].strip(_WS):
        return None
    new_actor = b"null" if actor is None else b'"' + actor.encode() + b'"'
    return b"".join((raw[:ma.start(1)], new_actor, raw[ma.end():comma], raw[mr.end():]))
