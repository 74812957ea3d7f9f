"""RingRate: when rings come too fast for a quiet relay to stay armed (pure logic)."""
from hypothesis import given
from hypothesis import strategies as st

from outbox_relay.pacing import BUSY_GAP, QUIET, RingRate

gaps = st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), max_size=50)


@given(st.lists(st.floats(min_value=BUSY_GAP, max_value=60, allow_nan=False), max_size=200))
def test_claims_at_least_the_busy_gap_apart_are_never_busy(history):
    rate, now = RingRate(0.0), 0.0
    for gap in history:
        now += gap
        assert not rate.busy(now)


@given(gaps)
def test_five_rings_with_no_time_between_them_are_busy_whatever_came_before(history):
    one_by_one, together, now = RingRate(0.0), RingRate(0.0), 0.0
    for gap in history:
        now += gap
        one_by_one.busy(now)
        together.busy(now)
    assert [one_by_one.busy(now) for _ in range(5)][-1]
    assert together.busy(now, rings=5)


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=60, allow_nan=False), st.integers(0, 50)), max_size=50))
def test_rings_counted_together_weigh_as_the_same_rings_one_by_one(history):
    """A claim that carries k rings moves the average as k rings spread evenly since the
    last claim that carried any."""
    together, one_by_one, now, since = RingRate(0.0), RingRate(0.0), 0.0, 0.0
    for gap, rings in history:
        now += gap
        together.busy(now, rings)
        for i in range(1, rings + 1):
            one_by_one.busy(since + (now - since) * i / rings)
        if rings:
            since = now
        assert abs(together.gap - one_by_one.gap) <= 1e-9 * max(1.0, one_by_one.gap)


def test_a_wake_up_without_rings_leaves_the_average_alone():
    rate = RingRate(0.0)
    rate.busy(0.001)
    gap = rate.gap
    assert rate.busy(5.0, rings=0) is False and rate.gap == gap


def test_a_burst_after_a_lull_is_busy_from_its_fifth_ring_not_before():
    rate = RingRate(0.0)
    assert rate.busy(3600.0) is False  # a lull of an hour counts as QUIET gaps, no more
    assert [rate.busy(3600.0) for _ in range(5)] == [False, False, False, False, True]
    assert QUIET * BUSY_GAP * 0.75 ** 5 < BUSY_GAP < QUIET * BUSY_GAP * 0.75 ** 4


def test_a_steady_trickle_just_slower_than_the_busy_gap_stays_quiet_and_just_faster_turns_busy():
    slow, fast = RingRate(0.0), RingRate(0.0)
    assert not any(slow.busy(i * BUSY_GAP * 1.1) for i in range(1, 100))
    assert any(fast.busy(i * BUSY_GAP * 0.9) for i in range(1, 100))
