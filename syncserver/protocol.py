"""The browser protocol (pure): parse and validate client messages, encode server messages.

Client -> server: auth, subscribe (optionally with presence), unsubscribe, ping, latency.
Server -> client: authed, subscribed, recovered, resync, events, revoked, presence, heartbeat,
pong, error. Event lists are spliced from
the envelopes' exact bytes (Event.raw) rather than re-encoded: the relay's JSON is already
what the browser needs, and re-encoding per message would cost more than the rest of the
fan-out.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Union

MAX_TOPIC_LENGTH = 200

# Error codes (the README documents each).
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
TOO_LARGE = "too_large"
UNAUTHENTICATED = "unauthenticated"
BAD_TOKEN = "bad_token"
TOKEN_EXPIRED = "token_expired"
FORBIDDEN_TOPIC = "forbidden_topic"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
NOT_SUBSCRIBED = "not_subscribed"
RATE_LIMITED = "rate_limited"


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str, ref: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True)
class Auth:
    token: str


@dataclass(frozen=True)
class Subscribe:
    topic: str
    since: int
    presence: bool = False  # appear in the topic's presence and receive it


@dataclass(frozen=True)
class Unsubscribe:
    topic: str


@dataclass(frozen=True)
class Ping:
    id: Any


@dataclass(frozen=True)
class Latency:
    """Commit -> applied-on-page samples in ms (syncserver/pagelatency.py judges the values)."""
    samples: tuple[float, ...]


MAX_LATENCY_SAMPLES = 32  # per message (pagelatency.MAX_SAMPLES)

ClientMessage = Union[Auth, Subscribe, Unsubscribe, Ping, Latency]


def parse(message: object, max_bytes: int) -> ClientMessage:
    """One client message (the text of one SockJS message) -> a typed message, or ProtocolError."""
    if isinstance(message, bytes):
        if len(message) > max_bytes:
            raise ProtocolError(TOO_LARGE, f"message exceeds {max_bytes} bytes")
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_JSON, "message is not valid UTF-8") from None
    if not isinstance(message, str):
        # SockJS framing lets a client send any JSON value as "a message"; ours are strings.
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON text string")
    # Byte length, not characters: the limit bounds memory and parse time.
    if len(message) > max_bytes or len(message.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(TOO_LARGE, f"message exceeds {max_bytes} bytes")
    try:
        doc = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ProtocolError(BAD_JSON, f"invalid JSON: {exc.msg}") from None
    except RecursionError:  # "[[[[..." thousands deep: within the size limit, beyond the parser
        raise ProtocolError(BAD_JSON, "invalid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object")
    kind = doc.get("type")
    ref = kind if isinstance(kind, str) and len(kind) <= 32 else None
    if kind == "auth":
        token = doc.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError(BAD_MESSAGE, "auth needs a string token", ref)
        return Auth(token)
    if kind == "subscribe":
        topic = _topic(doc, ref)
        since = doc.get("since")
        if type(since) is not int or since < 0:
            raise ProtocolError(BAD_MESSAGE, "subscribe needs an integer since >= 0", ref)
        presence = doc.get("presence", False)
        if type(presence) is not bool:
            raise ProtocolError(BAD_MESSAGE, "presence must be true or false", ref)
        return Subscribe(topic, since, presence)
    if kind == "unsubscribe":
        return Unsubscribe(_topic(doc, ref))
    if kind == "ping":
        return Ping(doc.get("id"))
    if kind == "latency":
        samples = doc.get("samples")
        if not isinstance(samples, list) or not 1 <= len(samples) <= MAX_LATENCY_SAMPLES:
            raise ProtocolError(BAD_MESSAGE, f"latency needs samples: a list of 1 to {MAX_LATENCY_SAMPLES} numbers", ref)
        # json.loads takes NaN and Infinity; bool is an int to Python: both refused.
        if not all(type(x) in (int, float) and math.isfinite(x) for x in samples):
            raise ProtocolError(BAD_MESSAGE, "latency samples must be finite numbers (ms)", ref)
        return Latency(tuple(float(x) for x in samples))
    raise ProtocolError(BAD_MESSAGE, "unknown message type", ref)


def _topic(doc: dict, ref: str | None) -> str:
    topic = doc.get("topic")
    if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC_LENGTH:
        raise ProtocolError(BAD_MESSAGE, f"topic must be a non-empty string of at most {MAX_TOPIC_LENGTH} characters", ref)
    # The topic goes to PostgreSQL (the grant check), which takes neither NUL nor a lone
    # surrogate ("\ud800" is valid JSON): refused here, so it can never fail a batch.
    if "\x00" in topic or not _encodable(topic):
        raise ProtocolError(BAD_MESSAGE, "topic must be text without NUL", ref)
    return topic


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dumps(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def authed(user: str, expires_at: float, expires_in: float, server_time: float) -> str:
    """expires_at: the token's expiry (unix seconds); expires_in: seconds left by this
    server's clock (what a client with a skewed clock should schedule its renewal by);
    server_time: this server's clock now (unix seconds, ms precision), against which the
    browser sets the clock it measures commit -> page latency with (committed_at is the
    database's clock, kept in step with the servers' by NTP)."""
    return _dumps({"type": "authed", "user": user, "expires_at": int(expires_at),
                   "expires_in": round(max(0.0, expires_in), 3), "server_time": round(server_time, 3)})


def subscribed(topic: str, tpos: int) -> str:
    return _dumps({"type": "subscribed", "topic": topic, "tpos": tpos})


def resync(topic: str, tpos: int) -> str:
    return _dumps({"type": "resync", "topic": topic, "tpos": tpos})


def revoked(topic: str) -> str:
    return _dumps({"type": "revoked", "topic": topic})


def heartbeat(pos: int, server_time: float) -> str:
    """server_time: this server's clock (unix seconds, ms precision); browsers set the clock
    they measure latency with by the heartbeat that reached them fastest (syncclient.js)."""
    return _dumps({"type": "heartbeat", "pos": pos, "time": round(server_time, 3)})


def presence(topic: str, users: list[dict]) -> str:
    """Who has the topic open: [{"user_id", "name", "since" (ISO 8601), "tabs"}], the whole
    list each time (a late or lost message is repaired by the next one)."""
    return _dumps({"type": "presence", "topic": topic, "users": users})


def pong(id: Any) -> str:
    return _dumps({"type": "pong", "id": id})


def error(code: str, message: str, ref: str | None = None, topic: str | None = None) -> str:
    """`topic` names the subscription an error ended (token_expired, forbidden_topic on renewal)."""
    doc = {"type": "error", "code": code, "message": message, "ref": ref}
    if topic is not None:
        doc["topic"] = topic
    return _dumps(doc)


def _with_events(kind: str, topic: str, raws: Iterable[bytes]) -> str:
    body = b",".join(raws).decode("utf-8")
    return f'{{"type":"{kind}","topic":{json.dumps(topic, ensure_ascii=False)},"events":[{body}]}}'


def events(topic: str, raws: Iterable[bytes]) -> str:
    """The live `events` message for one transaction's envelopes on a topic."""
    return _with_events("events", topic, raws)


def recovered(topic: str, raws: Iterable[bytes]) -> str:
    return _with_events("recovered", topic, raws)
