"""Integer and TCP-port settings read from environment strings (pure).

The relay, the broker, the sync server and `make run` each read ports and counts from the
environment. They parse them here, so every daemon rejects the same values with the same
words. Each daemon keeps its own ConfigError (its contract: one line, exit code 2) and turns
the ValueError raised here into it; the message already names the variable:

    SYNC_PORT='abc' is not an integer
    SYNC_PORT=70000 is out of range [0, 65535]
"""
from __future__ import annotations

from typing import Callable, Mapping, TypeVar

T = TypeVar("T")

MAX_PORT = 65535


def parse_int(raw: str, low: int, high: int | None = None) -> int:
    """`raw` as an integer in [low, high] (no upper bound when high is None).

    ValueError messages start with the value, to follow `NAME=` (see env_value).
    """
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


def env_value(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    """env[name] parsed, or default when it is unset or blank.

    A ValueError from parse comes back as `NAME=<its message>`, one line that names the variable.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={exc}") from None
