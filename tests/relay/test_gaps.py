"""gaps.Continuity, the subscriber's decisions, against a small model of the outbox: the
stream may lose, repeat and reorder messages, and anyone may claim any position; only the
outbox decides what is skipped (pure, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings, strategies as st

from outbox_relay.gaps import Action, Continuity, Hole, OutboxView, Skip


@dataclass
class Outbox:
    """Positions 1..last_pos were sequenced; `rows` are those still stored."""
    last_pos: int = 0
    pruned_pos: int = 0
    rows: set[int] = field(default_factory=set)

    def commit(self, n: int) -> list[int]:
        new = list(range(self.last_pos + 1, self.last_pos + n + 1))
        self.last_pos += n
        self.rows.update(new)
        return new

    def prune(self, upto: int) -> None:
        """prune: delete the oldest rows up to `upto`; the trigger raises the watermark."""
        upto = min(upto, self.last_pos)
        gone = {p for p in self.rows if p <= upto}
        self.rows -= gone
        if gone:
            self.pruned_pos = max(self.pruned_pos, max(gone))

    def view(self) -> OutboxView:
        return OutboxView(self.last_pos, self.pruned_pos)


class Model:
    """Drives a Continuity the way outbox_relay/subscriber.py does, recording what it delivers."""

    def __init__(self, start: int = 0) -> None:
        self.outbox = Outbox(last_pos=start, pruned_pos=start)
        self.cont = Continuity(start, stale_after=3.0)
        self.start = start
        self.delivered: list[int] = []
        self.skipped: list[tuple[int, int]] = []
        self.now = 0.0
        self.unfounded = 0

    def _deliver(self, pos: int) -> None:
        assert self.cont.advance(pos), (pos, self.cont.delivered)
        self.delivered.append(pos)

    def message(self, pos: int, heartbeat: bool) -> None:
        decision = self.cont.on_heartbeat(pos, self.now) if heartbeat else self.cont.on_event(pos, self.now)
        if decision.action is Action.DELIVER:
            self._deliver(pos)
        elif decision.action is Action.CATCH_UP:
            self.catch_up(decision.target)

    def catch_up(self, claimed: int | None) -> None:
        first = True
        while True:
            view = self.outbox.view()
            target, founded = self.cont.bound(view.last_pos if claimed is None else claimed, view, self.now)
            if first and not founded:
                self.unfounded += 1
            first = False
            assert target <= view.last_pos
            if target <= self.cont.delivered:
                return
            upto = min(target, self.cont.delivered + 3)  # small chunks: the loop matters
            found = [p for p in self.outbox.rows if self.cont.delivered < p <= upto]
            steps, hole = self.cont.plan(upto, found, view.pruned_pos)
            for step in steps:
                if isinstance(step, Skip):
                    assert step.last <= view.pruned_pos
                    assert not any(step.first <= p <= step.last for p in self.outbox.rows), "skipped a stored row"
                    self.skipped.append((step.first, step.last))
                    self.cont.skip_to(step.last, view.pruned_pos)
                else:
                    assert step in self.outbox.rows
                    self._deliver(step)
            if hole is not None:
                assert isinstance(hole, Hole) and hole.first > view.pruned_pos
                self.cont.hold_off(self.now)
                return

    def check(self) -> None:
        covered = sorted(self.delivered + [p for a, b in self.skipped for p in range(a, b + 1)])
        # Every position up to delivered was delivered or skipped, exactly once, in order.
        assert covered == list(range(self.start + 1, self.cont.delivered + 1))
        assert self.delivered == sorted(set(self.delivered))
        assert self.cont.delivered <= self.outbox.last_pos


# An action: ("commit", n) | ("event", k) | ("heartbeat", k) | ("claim", k) | ("prune", k) | ("wait", s)
ACTIONS = st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 4)),
    st.tuples(st.just("event"), st.integers(0, 12)),       # a real event: the k-th newest sequenced one
    st.tuples(st.just("heartbeat"), st.integers(0, 3)),    # a true heartbeat, maybe a little behind
    st.tuples(st.just("claim"), st.integers(1, 50)),       # a heartbeat k positions beyond the outbox
    st.tuples(st.just("lie"), st.integers(2, 50)),         # an event k positions beyond what was delivered
    st.tuples(st.just("prune"), st.integers(0, 6)),
    st.tuples(st.just("wait"), st.floats(0, 1)),
)


def run(actions, start: int = 0) -> Model:
    m = Model(start)
    for kind, k in actions:
        ob = m.outbox
        if kind == "commit":
            ob.commit(k)
        elif kind == "event" and ob.last_pos - k > 0:
            m.message(ob.last_pos - k, heartbeat=False)
        elif kind == "heartbeat":
            m.message(max(0, ob.last_pos - k), heartbeat=True)
        elif kind == "claim":
            m.message(ob.last_pos + k, heartbeat=True)
        elif kind == "lie" and m.cont.delivered + k > ob.last_pos:
            m.message(m.cont.delivered + k, heartbeat=False)
        elif kind == "prune":
            ob.prune(m.cont.delivered - k)  # prune never outruns what is published
        elif kind == "wait":
            m.now += k
        m.check()
    return m


@settings(max_examples=400, deadline=None)
@given(st.lists(ACTIONS, max_size=60), st.integers(0, 5))
def test_every_position_is_delivered_or_proven_pruned_whatever_is_claimed(actions, start):
    m = run(actions, start)
    # Liveness: once the window has passed, one true heartbeat brings it level with the outbox.
    m.now += 10
    m.message(m.outbox.last_pos, heartbeat=True)
    m.check()
    assert m.cont.delivered == m.outbox.last_pos
    assert set(m.delivered) == {p for p in m.outbox.rows if p > start} | (set(m.delivered) - m.outbox.rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(ACTIONS, max_size=40))
def test_a_hole_the_watermark_does_not_explain_is_never_skipped(actions):
    m = run(actions)
    m.outbox.commit(3)
    hole = m.outbox.last_pos - 1
    m.outbox.rows.discard(hole)  # deleted behind the watermark's back
    m.now += 10
    m.message(m.outbox.last_pos, heartbeat=True)
    m.check()
    assert m.cont.delivered == hole - 1
    for _ in range(3):  # however often it is told
        m.now += 10
        m.message(m.outbox.last_pos + 5, heartbeat=True)
        m.message(m.outbox.last_pos, heartbeat=False)
    assert m.cont.delivered == hole - 1 and hole not in m.delivered


def test_a_forged_heartbeat_ahead_skips_nothing_and_is_unfounded():
    m = Model()
    m.outbox.commit(2)
    m.message(5, heartbeat=True)  # "pos 5": the outbox has 2
    assert m.delivered == [1, 2] and m.unfounded == 1 and m.cont.delivered == 2
    m.outbox.commit(3)  # the real 3, 4, 5 arrive later, as events
    for pos in (3, 4, 5):
        m.message(pos, heartbeat=False)
    assert m.delivered == [1, 2, 3, 4, 5] and m.skipped == []


def test_a_flood_of_unfounded_claims_reads_the_outbox_once_per_window():
    c = Continuity(0, stale_after=3, recheck_after=0.25)
    assert c.on_heartbeat(100, 0.0).action is Action.CATCH_UP
    assert c.bound(100, OutboxView(last_pos=0, pruned_pos=0), 0.0) == (0, False)
    assert all(c.on_heartbeat(100 + i, 0.01 * i).action is Action.DROP for i in range(1, 20))
    assert c.on_event(1, 0.2).action is Action.DELIVER  # the live next event is not held up
    assert c.advance(1)
    assert c.on_heartbeat(100, 0.3).action is Action.CATCH_UP  # the window has passed


def test_an_unfounded_heartbeat_does_not_keep_a_silent_stream_alive():
    c = Continuity(0, stale_after=3)
    c.heard(0)
    for t in range(1, 10):
        c.on_heartbeat(1000, float(t))
        c.bound(1000, OutboxView(0, 0), float(t))
    assert c.is_stale(9.0)


def test_plan_skips_only_what_the_watermark_covers():
    c = Continuity(0, stale_after=3)
    steps, hole = c.plan(10, [3, 4, 8], pruned_pos=5)
    assert steps == [Skip(1, 2), 3, 4, Skip(5, 5)] and hole == Hole(6, 7)
    steps, hole = c.plan(4, [], pruned_pos=10)
    assert steps == [Skip(1, 4)] and hole is None
