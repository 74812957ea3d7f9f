"""CSP source expressions for the sync server's URL (pure)."""
from __future__ import annotations

from urllib.parse import urlsplit

_WS = {"http": "ws", "https": "wss"}


def connect_origins(url: str) -> list[str]:
    """The origins a SockJS client at `url` connects to: http(s) for XHR and EventSource,
    ws(s) for the WebSocket (not covered by 'self' or by the http origin in every browser).

    >>> connect_origins("http://127.0.0.1:8001/sync")
    ['http://127.0.0.1:8001', 'ws://127.0.0.1:8001']
    >>> connect_origins("/sync")
    []
    """
    parts = urlsplit(url)
    if parts.scheme not in _WS or not parts.netloc:
        return []  # same origin as the page: 'self' (and ws: of self in current browsers)
    return [f"{parts.scheme}://{parts.netloc}", f"{_WS[parts.scheme]}://{parts.netloc}"]
