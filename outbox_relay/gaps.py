"""Position continuity (pure): what a subscriber does with each thing it receives.

The stream from the broker is lossy (slow joiner, high-water mark, broker restarts) and,
after a relay takeover, may repeat positions. `Continuity` keeps the last delivered pos
and says, for each event or heartbeat, whether to deliver it, drop it as a duplicate,
or first catch up from the outbox (ZeroMQ guide, Clone pattern: subscribe first, then
catch up, drop anything at or below what was delivered).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    DELIVER = "deliver"      # the next position: deliver it now
    DROP = "drop"            # at or below delivered: a duplicate
    CATCH_UP = "catch_up"    # positions are missing: read (delivered, target] from the outbox


@dataclass(frozen=True)
class Decision:
    action: Action
    target: int = 0  # for CATCH_UP: the last position to read (inclusive)


class Continuity:
    """Tracks the last delivered position; pure and synchronous."""

    def __init__(self, delivered: int, stale_after: float) -> None:
        self.delivered = delivered
        self.stale_after = stale_after
        self._last_heard: float | None = None

    def on_event(self, pos: int, now: float) -> Decision:
        self._last_heard = now
        if pos <= self.delivered:
            return Decision(Action.DROP)
        if pos == self.delivered + 1:
            return Decision(Action.DELIVER)
        # A gap: the catch-up reads up to and including this event, so the live copy is
        # dropped afterwards rather than delivered out of order.
        return Decision(Action.CATCH_UP, pos)

    def on_heartbeat(self, pos: int, now: float) -> Decision:
        self._last_heard = now
        if pos > self.delivered:
            return Decision(Action.CATCH_UP, pos)
        return Decision(Action.DROP)

    def is_stale(self, now: float) -> bool:
        """No event or heartbeat for stale_after seconds: the stream may be dead."""
        if self._last_heard is None:
            return False
        return now - self._last_heard >= self.stale_after

    def heard(self, now: float) -> None:
        """Restart the silence timer (e.g. after starting or after a catch-up)."""
        self._last_heard = now

    def advance(self, pos: int) -> bool:
        """Record pos as delivered; False (and no change) if it would break the order."""
        if pos != self.delivered + 1:
            return False
        self.delivered = pos
        return True

    def skip_to(self, pos: int) -> list[tuple[int, int]]:
        """Jump over positions that no longer exist (pruned); returns the skipped ranges."""
        if pos <= self.delivered:
            return []
        skipped = [(self.delivered + 1, pos)]
        self.delivered = pos
        return skipped


def missing_ranges(expected_from: int, expected_to: int, found: list[int]) -> list[tuple[int, int]]:
    """Ranges of [expected_from, expected_to] not in the sorted list `found` (pruned rows)."""
    out: list[tuple[int, int]] = []
    nxt = expected_from
    for p in found:
        if p > nxt:
            out.append((nxt, p - 1))
        nxt = max(nxt, p + 1)
    if nxt <= expected_to:
        out.append((nxt, expected_to))
    return out
