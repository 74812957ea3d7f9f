"""Short-lived sync tokens: the portal signs which topics a user may watch; the sync
server verifies signature, expiry and topic, and has no copy of the permission rules.

Format: base64url(JSON claims) "." base64url(HMAC-SHA256(secret, that first part)).
Claims: {"sub": user id, "name": username, "topics": [...], "exp": unix seconds, "iat": ...}.
Pure logic: no Django, no I/O.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

DEFAULT_TTL = 300  # seconds; clients fetch a fresh token on every (re)connect


class TokenError(ValueError):
    """The token is malformed, forged or expired; the message says which."""


@dataclass(frozen=True, slots=True)  # one per connection: no __dict__
class Claims:
    user_id: int
    username: str
    topics: frozenset[str]
    expires_at: float

    def allows(self, topic: str) -> bool:
        return topic in self.topics


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode("ascii"), hashlib.sha256).digest())


def mint(secret: str, *, user_id: int, username: str, topics: list[str], ttl: int = DEFAULT_TTL,
         now: float | None = None) -> str:
    if not secret:
        raise ValueError("a sync token secret is required")
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "name": username, "topics": sorted(set(topics)), "iat": issued, "exp": issued + ttl}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_signature(secret, body)}"


def verify(secret: str, token: object, *, now: float | None = None) -> Claims:
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 8192:
        raise TokenError("malformed token")
    body, signature = token.split(".")
    if not hmac.compare_digest(signature, _signature(secret, body)):
        raise TokenError("bad signature")
    try:
        claims = json.loads(_unb64(body))
        user_id, username, topics, exp = claims["sub"], claims["name"], claims["topics"], claims["exp"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("malformed token") from exc
    if not (isinstance(user_id, int) and isinstance(username, str) and isinstance(topics, list)
            and all(isinstance(t, str) for t in topics) and isinstance(exp, (int, float))):
        raise TokenError("malformed token")
    if exp <= (now if now is not None else time.time()):
        raise TokenError("token expired")
    return Claims(user_id=user_id, username=username, topics=frozenset(topics), expires_at=float(exp))
