"""runtime/backoff.py: the one backoff of the reconnect and retry loops, against a model."""
from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, strategies as st

from runtime.backoff import Backoff, sleep_or_stop


def test_doubles_up_to_the_cap_and_starts_over_after_a_success():
    b = Backoff(first=0.2, cap=1.0)
    assert [b.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.2


@given(first=st.floats(0.001, 10), cap_factor=st.floats(1, 100), factor=st.floats(1, 4),
       jitter=st.floats(0, 0.99), outcomes=st.lists(st.booleans(), max_size=40), seed=st.integers())
def test_delays_follow_the_model(first, cap_factor, factor, jitter, outcomes, seed):
    """Model: after k failures in a row the next delay is min(first * factor**k, cap),
    scaled by a factor in [1 - jitter, 1]; a success starts over."""
    cap = first * cap_factor
    b = Backoff(first=first, cap=cap, factor=factor, jitter=jitter, rng=random.Random(seed))
    failures = 0
    for succeeded in outcomes:
        if succeeded:
            b.reset()
            failures = 0
            continue
        expected = min(first * factor ** failures, cap)
        delay = b.next()
        assert expected * (1 - jitter) - 1e-9 <= delay <= expected + 1e-9
        assert delay <= cap + 1e-9
        failures += 1


@pytest.mark.parametrize("kwargs", [dict(first=0), dict(first=2, cap=1), dict(factor=0.5), dict(jitter=1)])
def test_a_backoff_that_would_not_back_off_is_refused(kwargs):
    with pytest.raises(ValueError, match="no such backoff"):
        Backoff(**kwargs)


def test_sleep_or_stop_returns_when_stopped():
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        await asyncio.wait_for(sleep_or_stop(stop, 3600), timeout=30)  # returns on stop, not after an hour
        await sleep_or_stop(asyncio.Event(), 0.01)  # and after the time when not stopped
    asyncio.run(main())
