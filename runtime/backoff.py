"""Delays for reconnect and retry loops (pure): start small, grow by a factor up to a cap,
start over after a success.

    backoff = Backoff(first=0.2, cap=5.0)
    while not stop.is_set():
        try:
            await work()
            backoff.reset()
        except psycopg.OperationalError:
            await sleep_or_stop(stop, backoff.next())

Invariants: the delays before the jitter are first, first*factor, ... never above cap;
reset() starts over at first; with jitter j each delay is scaled by a random factor in
[1 - j, 1], so clients that lost the same server do not come back in step.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float = 0.1
    cap: float = 5.0
    factor: float = 2.0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _delay: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"no such backoff: first={self.first} cap={self.cap} factor={self.factor}"
                             f" jitter={self.jitter}")
        self._delay = self.first

    def next(self) -> float:
        """The delay to wait before the next attempt (then the one after grows)."""
        delay = self._delay
        self._delay = min(self._delay * self.factor, self.cap)
        if self.jitter:
            delay *= 1 - self.jitter * self.rng.random()
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self._delay = self.first


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
