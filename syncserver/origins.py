"""Origin allowlist (pure). Browsers send Origin on WebSocket handshakes and on
cross-origin XHR; a foreign page must not be able to open or drive a sync session.

A request without an Origin header is not a browser acting for another site (browsers
always send it on WebSocket and cross-origin requests), so it is allowed: authority comes
from the token anyway. "null" (sandboxed frames, file://) is never allowed.
"""
from __future__ import annotations

from runtime.values import origin as normalize_origin  # scheme://host[:port], lower case, no default port


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
