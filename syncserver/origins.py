"""Origin allowlist (pure). Browsers send Origin on WebSocket handshakes and on
cross-origin XHR; a foreign page must not be able to open or drive a sync session.

A request without an Origin header is not a browser acting for another site (browsers
always send it on WebSocket and cross-origin requests), so it is allowed: authority comes
from the token anyway. "null" (sandboxed frames, file://) is never allowed.
"""
from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str, strict: bool = False) -> str:
    """scheme://host[:port] in lower case, default port dropped.

    >>> normalize_origin("HTTP://LocalHost:80")
    'http://localhost'
    """
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{origin!r} is not an http(s) origin")
    if strict and (parts.path not in ("", "/") or parts.query or parts.fragment or parts.username):
        raise ValueError(f"{origin!r} is not a bare origin (scheme://host[:port])")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{origin!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class OriginPolicy:
    def __init__(self, allowed: frozenset[str] | set[str]):
        self.allowed = frozenset(normalize_origin(o) for o in allowed)

    def allows(self, origin: str | None) -> bool:
        """True for an allowlisted origin, or for no Origin header at all (non-browser)."""
        if origin is None:
            return True
        try:
            return normalize_origin(origin) in self.allowed
        except ValueError:
            return False
