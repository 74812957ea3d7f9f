"""What users see: commit -> applied-on-page latency as browsers report it (pure logic).

The browser client measures, for a sample of the live transactions it applies, the time
from the event's `committed_at` to the moment the page had applied it (its clock set to
the server's by the `server_time` of `authed`), and sends a few samples at a time in one
`{"type":"latency","samples":[ms, ...]}` message. The sync server exports them as the
histogram `sync_client_latency_seconds`.

A client is not trusted with the histogram: protocol.parse refuses a malformed report
(bad_message: not a list, empty, more than MAX_SAMPLES, a non-number, NaN/Infinity);
here a value outside [0, MAX_MS] is dropped (a skewed clock or a lie, not a latency),
and each connection may add at most RATE samples per second (burst BURST): the rest is
dropped. Dropped samples are only counted (sync_client_latency_dropped_total{reason}),
never answered: a client that means well has nothing to fix, one that does not learns
nothing. So one connection moves the histogram by at most RATE samples/s, each within
[0, MAX_MS].
"""
from __future__ import annotations

from typing import Iterable

from syncserver.ratelimit import TokenBucket

MAX_SAMPLES = 32       # per message
MAX_MS = 60_000.0      # a minute: anything above is not a latency this histogram should hold
RATE = 20.0            # samples per second per connection (the browser sends ~1/s)
BURST = 64


def budget() -> TokenBucket:
    """A connection's allowance of samples."""
    return TokenBucket(RATE, BURST)


def admit(samples: Iterable[float], allowance: TokenBucket) -> tuple[list[float], int, int]:
    """(the samples to record, in seconds; how many were out of range; how many over the
    connection's rate). Out-of-range samples do not use the allowance."""
    kept: list[float] = []
    out_of_range = over_rate = 0
    for ms in samples:
        if not 0.0 <= ms <= MAX_MS:
            out_of_range += 1
        elif allowance.take():
            kept.append(ms / 1000.0)
        else:
            over_rate += 1
    return kept, out_of_range, over_rate
