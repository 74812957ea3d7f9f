"""The wire envelope: what one outbox event looks like on ZeroMQ (pure: no I/O).

A message is multipart [topic bytes, envelope bytes]. The relay builds envelopes in
PostgreSQL (outbox_envelope() in migrations/schema.sql, the fastest path); encode()
here builds the same JSON from a row in Python, for tests and tools. decode() accepts
either, and keeps the exact bytes in Event.raw so consumers forward without re-encoding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import orjson

VERSION = 1
HEARTBEAT_TOPIC = "_heartbeat"


class EnvelopeError(ValueError):
    """The bytes are not a valid v1 envelope."""


@dataclass(frozen=True)
class Event:
    v: int
    pos: int
    tpos: int
    topic: str
    tx: str
    entity: str
    id: str
    op: str
    version: int | None
    data: Any
    changed: list[str]
    actor: str | None
    source: str
    request_id: str | None
    committed_at: str
    tx_last: bool
    raw: bytes = field(repr=False, compare=False)
    # Set on a poison row: it keeps its position (so the stream stays gapless) but its
    # data could not be published; consumers must not apply it.
    error: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    pos: int
    ts: str
    raw: bytes = field(repr=False, compare=False)


def iso_utc(ts: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a Z, the format PostgreSQL's side writes too."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(row: Mapping[str, Any]) -> bytes:
    """The envelope of one sequenced outbox row (keys as the outbox columns)."""
    created = row.get("committed_at") or row["created_at"]
    doc: dict[str, Any] = {
        "v": VERSION,
        "pos": int(row["pos"]),
        "tpos": int(row["tpos"]),
        "topic": row["topic"],
        "tx": str(row["txid"] if "txid" in row else row["tx"]),
        "entity": row["entity"],
        "id": str(row["entity_id"] if "entity_id" in row else row["id"]),
        "op": row["op"],
        "version": row.get("version"),
        "data": row["data"],
        "changed": list(row.get("changed") or []),
        "actor": row.get("actor"),
        "source": row.get("source") or "sql",
        "request_id": row.get("request_id"),
        "committed_at": created if isinstance(created, str) else iso_utc(created),
        "tx_last": bool(row.get("tx_last")),
    }
    if row.get("error"):
        doc["error"] = row["error"]
        doc["data"] = None
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def encode_heartbeat(pos: int, now: datetime | None = None) -> bytes:
    ts = iso_utc(now or datetime.now(timezone.utc))
    return json.dumps({"v": VERSION, "type": "heartbeat", "pos": pos, "ts": ts}, separators=(",", ":")).encode()


_REQUIRED = ("pos", "tpos", "topic", "tx", "entity", "id", "op", "source", "committed_at")


def decode(raw: bytes) -> Event:
    """Parse an event envelope; raises EnvelopeError if it is not one."""
    doc = _load(raw)
    if doc.get("type") == "heartbeat":
        raise EnvelopeError("a heartbeat, not an event")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    if not isinstance(doc["pos"], int) or not isinstance(doc["tpos"], int):
        raise EnvelopeError("pos and tpos must be integers")
    return Event(
        v=doc["v"], pos=doc["pos"], tpos=doc["tpos"], topic=doc["topic"], tx=str(doc["tx"]),
        entity=doc["entity"], id=str(doc["id"]), op=doc["op"], version=doc.get("version"),
        data=doc.get("data"), changed=list(doc.get("changed") or []), actor=doc.get("actor"),
        source=doc["source"], request_id=doc.get("request_id"), committed_at=doc["committed_at"],
        tx_last=bool(doc.get("tx_last")), raw=bytes(raw), error=doc.get("error"),
    )


def decode_heartbeat(raw: bytes) -> Heartbeat:
    doc = _load(raw)
    if doc.get("type") != "heartbeat" or not isinstance(doc.get("pos"), int):
        raise EnvelopeError("not a heartbeat")
    return Heartbeat(pos=doc["pos"], ts=str(doc.get("ts", "")), raw=bytes(raw))


def decode_message(topic: bytes, raw: bytes) -> Event | Heartbeat:
    """Decode one [topic, envelope] message from the broker."""
    if topic == HEARTBEAT_TOPIC.encode():
        return decode_heartbeat(raw)
    return decode(raw)


def _load(raw: bytes) -> dict[str, Any]:
    try:
        # orjson: every event's path in every subscriber; parses an envelope ~3.6x faster
        # than json (1.3 against 4.6 us here), and is stricter (no NaN, valid UTF-8 only).
        doc = orjson.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # orjson's error is a JSONDecodeError
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError("not a JSON object")
    if doc.get("v") != VERSION:
        raise EnvelopeError(f"unsupported envelope version {doc.get('v')!r}")
    return doc
