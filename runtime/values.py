"""Setting values as the environment writes them, parsed (pure).

Each parser takes the value as written (stripped) and returns it typed, or raises
ValueError. A message starts with the value, so that the settings reader's `NAME=` in front
of it reads as one line (runtime/settings.py):

    SYNC_PORT='abc' is not an integer
    SYNC_PORT=70000 is out of range [0, 65535]

Parsers of secret values (keys, passwords) never put the value in a message.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Iterable
from urllib.parse import urlsplit

MAX_PORT = 65535
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_int(raw: str, low: int, high: int | None = None) -> int:
    """`raw` as an integer in [low, high] (no upper bound when high is None)."""
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"(must be >= {low})" if high is None else f"[{low}, {high}]"
        raise ValueError(f"{text} is out of range {bounds}")
    return value


def parse_port(raw: str, *, allow_zero: bool = False) -> int:
    """`raw` as a TCP port; 0 only where the setting gives it a meaning (disabled, any port)."""
    return parse_int(raw, 0 if allow_zero else 1, MAX_PORT)


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return parse_int(raw, low, high)
    return parse


def port(*, allow_zero: bool = False) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return parse_port(raw, allow_zero=allow_zero)
    return parse


def seconds(*, allow_zero: bool = False) -> Callable[[str], float]:
    """A finite, positive number of seconds (or zero, where it means "at once")."""
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{raw!r} is not a finite number of seconds")
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"{raw} is out of range (must be {'>= 0' if allow_zero else '> 0'})")
        return value
    return parse


def flag(raw: str) -> bool:
    """0 or 1, nothing else: a typo must not silently mean "off"."""
    if raw not in ("0", "1"):
        raise ValueError(f"{raw!r} is not 0 or 1")
    return raw == "1"


def text(raw: str) -> str:
    return raw


def nonempty(raw: str) -> str:
    # Used for secrets: the message must not (and need not) show the value.
    if not raw:
        raise ValueError("must not be empty")
    return raw


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{raw!r} is not {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")
    return level


def endpoint(raw: str) -> str:
    """A ZeroMQ endpoint to bind or connect."""
    if not raw.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"{raw!r} is not a ZeroMQ endpoint like tcp://127.0.0.1:5557")
    return raw


def address_port(raw: str) -> int:
    """The port of tcp://host:port (host:port, *:port), or a bare port; in [1, 65535] either way."""
    if raw.isdigit():
        return parse_port(raw)
    netloc = urlsplit(raw if "://" in raw else f"tcp://{raw}").netloc
    _host, sep, number = netloc.rpartition(":")
    if not sep or not number.isdigit():
        raise ValueError(f"{raw!r} is not an address like tcp://127.0.0.1:5557")
    try:
        return parse_port(number)
    except ValueError as exc:
        raise ValueError(f"{raw!r}: port {exc}") from None


def items(raw: str) -> tuple[str, ...]:
    """A comma-separated list; blanks between commas are dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def names(choices: Iterable[str]) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of some of `choices` (possibly none)."""
    known = tuple(choices)

    def parse(raw: str) -> tuple[str, ...]:
        given = items(raw)
        unknown = [n for n in given if n not in known]
        if unknown:
            raise ValueError(f"{raw!r} names unknown {', '.join(unknown)}; known: {', '.join(known)}")
        return given
    return parse


def rate(raw: str) -> tuple[int, int]:
    """'20/min' -> (20, 60); '5/30s' -> (5, 30): requests per period, as settings write them.

    >>> rate("3/10m")
    (3, 600)
    """
    match = _RATE.match(raw or "")
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ValueError(f"{raw!r} is not a rate like 20/min or 5/30s (requests / [count] s|m|h|d)")
    return int(match.group(1)), int(match.group(2) or 1) * _UNIT[match.group(3)[0]]


_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def rate_text(raw: str) -> str:
    """A rate, checked (see rate) but kept as written: DRF's throttles take the text."""
    rate(raw)
    return raw


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(raw: str, strict: bool = False) -> str:
    """scheme://host[:port] in lower case, default port dropped; strict: nothing else in it.

    >>> origin("HTTP://LocalHost:80")
    'http://localhost'
    """
    parts = urlsplit(raw.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{raw!r} is not an http(s) origin")
    if strict and (parts.path not in ("", "/") or parts.query or parts.fragment or parts.username):
        raise ValueError(f"{raw!r} is not a bare origin (scheme://host[:port])")
    try:
        number = parts.port
    except ValueError:
        raise ValueError(f"{raw!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if number is None or number == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{number}"


def origins(raw: str) -> frozenset[str]:
    """A comma-separated allow-list of bare origins: at least one."""
    found = frozenset(origin(o, strict=True) for o in items(raw))
    if not found:
        raise ValueError(f"{raw!r} lists no origin (at least one is needed)")
    return found
