"""Request rates as settings write them (pure): "20/min", "5/30s", "100/h"."""
from __future__ import annotations

import re

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'20/min' -> (20, 60); '5/30s' -> (5, 30). ValueError for anything else.

    >>> parse_rate("3/10m")
    (3, 600)
    """
    match = _RATE.match(rate or "")
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ValueError(f"{rate!r} is not a rate like 20/min or 5/30s (requests / [count] s|m|h|d)")
    return int(match.group(1)), int(match.group(2) or 1) * _UNIT[match.group(3)[0]]
