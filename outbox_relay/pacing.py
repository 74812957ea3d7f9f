"""When the relay stops claiming each ring and drains on a timer instead (pure logic).

Armed, every writer transaction rings the doorbell, and each ring costs the relay one
claim: the cheapest way to carry a trickle. But NOTIFY makes the commits of the
transactions that ring wait for each other, so once rings come faster than one per
BUSY_GAP on average, disarming (writers no longer ring) and claiming every claim_interval
costs everyone less. RingRate keeps that average.
"""
from __future__ import annotations

BUSY_GAP = 0.002  # seconds between claims that find work, on average: shorter is busy
WEIGHT = 0.25     # of the newest gap in the average
QUIET = 4         # a gap counts at most QUIET * busy_gap: a long lull says "quiet", no more


class RingRate:
    """A moving average of the time between claims that found work.

    Invariants (tests/relay/test_pacing.py): gaps of at least busy_gap are never busy; from
    any history, eight claims in a row with no time between them are busy (each gap counts
    at most QUIET * busy_gap, so a long lull does not hide a burst that follows it).
    """

    def __init__(self, now: float, busy_gap: float = BUSY_GAP, weight: float = WEIGHT) -> None:
        self.busy_gap = busy_gap
        self.weight = weight
        self.gap = QUIET * busy_gap  # as after a lull
        self.last = now

    def busy(self, now: float) -> bool:
        """A claim that found work started at `now`: do such claims now come too fast?"""
        gap = min(now - self.last, QUIET * self.busy_gap)
        self.gap += self.weight * (gap - self.gap)
        self.last = now
        return self.gap < self.busy_gap
