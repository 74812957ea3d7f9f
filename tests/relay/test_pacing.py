"""RingRate: when a quiet relay's claims come too fast to stay armed (pure logic)."""
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
def test_five_claims_in_a_row_with_no_time_between_them_are_busy_whatever_came_before(history):
    rate, now = RingRate(0.0), 0.0
    for gap in history:
        now += gap
        rate.busy(now)
    assert [rate.busy(now) for _ in range(5)][-1]


def test_a_burst_after_a_lull_is_busy_from_its_fifth_claim_not_before():
    rate = RingRate(0.0)
    assert rate.busy(3600.0) is False  # a lull of an hour counts as QUIET gaps, no more
    assert [rate.busy(3600.0) for _ in range(5)] == [False, False, False, False, True]
    assert QUIET * BUSY_GAP * 0.75 ** 5 < BUSY_GAP < QUIET * BUSY_GAP * 0.75 ** 4


def test_a_steady_trickle_just_slower_than_the_busy_gap_stays_quiet_and_just_faster_turns_busy():
    slow, fast = RingRate(0.0), RingRate(0.0)
    assert not any(slow.busy(i * BUSY_GAP * 1.1) for i in range(1, 100))
    assert any(fast.busy(i * BUSY_GAP * 0.9) for i in range(1, 100))
