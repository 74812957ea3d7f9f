"""When the relay stops claiming each ring and drains on a timer instead (pure logic).

Armed, every writer transaction rings the doorbell, and each ring costs the relay one
claim: the cheapest way to carry a trickle. But NOTIFY makes the commits of the
transactions that ring wait for each other, so once rings come faster than one per
BUSY_GAP on average, disarming (writers no longer ring) and claiming every claim_interval
costs everyone less. RingRate keeps that average. It counts rings, not claims: under load a
claim takes longer and carries the rings of several transactions, and it is the rings that
writers pay for.
"""
from __future__ import annotations

BUSY_GAP = 0.002  # seconds between rings, on average: shorter is busy
WEIGHT = 0.25     # of each ring's gap in the average
QUIET = 4         # a gap counts at most QUIET * busy_gap: a long lull says "quiet", no more


class RingRate:
    """A moving average of the time between rings.

    Invariants (tests/relay/test_pacing.py): rings at least busy_gap apart are never busy;
    from any history, five rings with no time between them are busy, counted one by one or
    together (each gap counts at most QUIET * busy_gap, so a long lull does not hide a burst
    that follows it).
    """

    def __init__(self, now: float, busy_gap: float = BUSY_GAP, weight: float = WEIGHT) -> None:
        self.busy_gap = busy_gap
        self.weight = weight
        self.gap = QUIET * busy_gap  # as after a lull
        self.last = now

    def busy(self, now: float, rings: int = 1) -> bool:
        """`rings` more rings came by `now` (spread evenly since the last call that counted
        any): do they now come too fast? No rings leave the average as it is."""
        if rings > 0:
            gap = min((now - self.last) / rings, QUIET * self.busy_gap)
            self.gap = gap + (1 - self.weight) ** rings * (self.gap - gap)
            self.last = now
        return self.gap < self.busy_gap
