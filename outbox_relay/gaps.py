"""Position continuity (pure): what a subscriber does with each thing it receives.

The stream from the broker is lossy (slow joiner, high-water mark, broker restarts) and,
after a relay takeover, may repeat positions. `Continuity` keeps the last delivered pos
and says, for each event or heartbeat, whether to deliver it, drop it as a duplicate,
or first catch up from the outbox (ZeroMQ guide, Clone pattern: subscribe first, then
catch up, drop anything at or below what was delivered).

Nothing that arrives over ZeroMQ is proof of anything: a heartbeat or an event that
claims a position ahead of what was delivered is hearsay, and only the outbox decides.

* A catch-up reads at most up to the outbox's `last_pos` (every position up to it is
  committed): a claim beyond it is *unfounded*. It is not acted on (counted, logged, the
  subscriber goes on), and when the outbox later has those positions they are delivered
  as usual.
* A position is skipped only when the outbox proves it is gone: it is missing and at or
  below `pruned_pos`, the retention watermark every deletion from the outbox raises
  (outbox_raise_watermark in migrations/schema.sql). A hole above the watermark is never jumped:
  delivery stops before it and the next catch-up tries again.
* A flood of unfounded claims costs at most one outbox read per `recheck_after` seconds:
  after a claim was found unfounded (or a read found a hole it could not explain), further
  claims are dropped until then. The next read after the window repairs whatever real loss
  happened meanwhile, since it reads up to the outbox's own last_pos.

Invariants (tests/relay/test_gaps.py checks them against a model with hypothesis):
delivered only grows; it passes a position either by delivering the outbox's row for it or
because the row is missing at or below pruned_pos; it never exceeds a last_pos the outbox
reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Union

RECHECK_AFTER = 0.25  # seconds: at most one outbox read per window for unfounded claims


class Action(Enum):
    DELIVER = "deliver"      # the next position: deliver it now
    DROP = "drop"            # at or below delivered (a duplicate), or hearsay not worth a read now
    CATCH_UP = "catch_up"    # positions may be missing: ask the outbox, up to target at most


@dataclass(frozen=True)
class Decision:
    action: Action
    target: int = 0  # for CATCH_UP: the claimed position (the outbox bounds what is read)


@dataclass(frozen=True)
class OutboxView:
    """One consistent reading of outbox_relay_state."""
    last_pos: int    # every position up to here is sequenced and committed
    pruned_pos: int  # a position at or below this that the outbox lacks was deleted


@dataclass(frozen=True)
class Skip:
    first: int
    last: int        # inclusive; a range proven pruned


@dataclass(frozen=True)
class Hole:
    first: int
    last: int        # inclusive; missing above the watermark: not skipped


Step = Union[int, Skip]  # a position to deliver from the rows read, or a range to skip


class Continuity:
    """Tracks the last delivered position; pure and synchronous."""

    def __init__(self, delivered: int, stale_after: float, recheck_after: float = RECHECK_AFTER) -> None:
        self.delivered = delivered
        self.stale_after = stale_after
        self.recheck_after = recheck_after
        self.known_last = delivered          # the highest last_pos the outbox has shown (or delivered)
        self._last_heard: float | None = None
        self._recheck_at: float | None = None  # set after an unfounded claim

    # ------------------------------------------------------------ what arrives
    def on_event(self, pos: int, now: float) -> Decision:
        if pos <= self.delivered:
            self._last_heard = now
            return Decision(Action.DROP)
        if pos == self.delivered + 1:
            # The fast path: the next position, from a publisher the broker authenticated.
            self._last_heard = now
            return Decision(Action.DELIVER)
        # A gap: the catch-up reads up to and including this event (if the outbox has
        # it), so the live copy is dropped afterwards rather than delivered out of order.
        return self._claim(pos, now)

    def on_heartbeat(self, pos: int, now: float) -> Decision:
        if pos <= self.delivered:
            self._last_heard = now
            return Decision(Action.DROP)
        return self._claim(pos, now)

    def _claim(self, pos: int, now: float) -> Decision:
        """A position ahead of what was delivered: only the outbox can confirm it."""
        if pos <= self.known_last:
            self._last_heard = now  # the outbox already showed it holds this position
        if self._recheck_at is not None and now < self._recheck_at:
            return Decision(Action.DROP)  # the read after the window covers it
        return Decision(Action.CATCH_UP, pos)

    # ------------------------------------------------------------ what the outbox says
    def bound(self, claimed: int, view: OutboxView, now: float) -> tuple[int, bool]:
        """The last position to read for a claim, and whether the claim was founded.

        Never beyond view.last_pos: a claim above it is not acted on. A founded claim counts
        as hearing from the stream (it proved true); an unfounded one does not, and opens
        the recheck window."""
        self.known_last = max(self.known_last, view.last_pos)
        if claimed <= view.last_pos:
            self._last_heard = now
            self._recheck_at = None
            return claimed, True
        self.hold_off(now)
        return view.last_pos, False

    def hold_off(self, now: float) -> None:
        """Read the outbox again for a claim no sooner than recheck_after from now (after
        an unfounded claim, or a hole the outbox does not explain)."""
        self._recheck_at = now + self.recheck_after

    def plan(self, upto: int, found: Iterable[int], pruned_pos: int) -> tuple[list[Step], Hole | None]:
        """What to do with the positions one outbox read found in (delivered, upto].

        Returns the steps in order (a position to deliver, or a Skip of a range the
        watermark proves pruned) and the first hole it does not explain, if any; the steps
        stop before that hole. Changes nothing: the caller applies each step (advance /
        skip_to) as it goes, so what it records is what it really delivered."""
        steps: list[Step] = []
        nxt = self.delivered + 1
        for pos in sorted(p for p in found if nxt <= p <= upto):
            if pos < nxt:
                continue  # a duplicate position in the rows (cannot happen: pos is unique)
            if pos > nxt:
                hole = self._explain(nxt, pos - 1, pruned_pos, steps)
                if hole is not None:
                    return steps, hole
            steps.append(pos)
            nxt = pos + 1
        if nxt <= upto:
            return steps, self._explain(nxt, upto, pruned_pos, steps)
        return steps, None

    @staticmethod
    def _explain(first: int, last: int, pruned_pos: int, steps: list[Step]) -> Hole | None:
        """Positions first..last are missing: skip what the watermark covers."""
        if pruned_pos >= first:
            steps.append(Skip(first, min(last, pruned_pos)))
        if last > pruned_pos:
            return Hole(max(first, pruned_pos + 1), last)
        return None

    # ------------------------------------------------------------ time
    def is_stale(self, now: float) -> bool:
        """No founded event or heartbeat for stale_after seconds: the stream may be dead."""
        if self._last_heard is None:
            return False
        return now - self._last_heard >= self.stale_after

    def heard(self, now: float) -> None:
        """Restart the silence timer (e.g. after starting or after a catch-up)."""
        self._last_heard = now

    # ------------------------------------------------------------ progress
    def advance(self, pos: int) -> bool:
        """Record pos as delivered; False (and no change) if it would break the order."""
        if pos != self.delivered + 1:
            return False
        self.delivered = pos
        self.known_last = max(self.known_last, pos)
        return True

    def skip_to(self, pos: int, pruned_pos: int) -> list[tuple[int, int]]:
        """Jump over positions the outbox proves pruned; returns the skipped ranges. Never
        beyond the watermark: a position above it may still be delivered."""
        pos = min(pos, pruned_pos)
        if pos <= self.delivered:
            return []
        skipped = [(self.delivered + 1, pos)]
        self.delivered = pos
        self.known_last = max(self.known_last, pos)
        return skipped
