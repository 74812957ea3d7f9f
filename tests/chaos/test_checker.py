"""The checker on crafted records: each defect class is counted, and a clean record passes."""
from __future__ import annotations

from chaos.checker import check_all, check_topic, misordered_rows, unsequenced_gaps
from chaos.record import Change, TopicRecord

TOPIC = "checklist:1"


def ch(tpos: int, item: int = 1, version: int = 1, op: str = "update", pos: int | None = None) -> Change:
    data = {"id": item, "text": f"v{version}", "version": version}
    return Change(pos=pos if pos is not None else 100 + tpos, tpos=tpos, entity="item", id=str(item),
                  op=op, version=version, data=data)


def truth_of(*changes: Change) -> dict[int, Change]:
    return {c.tpos: c for c in changes}


def final_state(*changes: Change) -> dict:
    state = {}
    for c in changes:
        if c.op == "delete":
            state.pop(c.key, None)
        else:
            state[c.key] = c.data
    return state


def test_clean_record_passes_and_counts_redeliveries():
    events = [ch(1, 1, 1, "insert"), ch(2, 1, 2), ch(3, 2, 1, "insert"), ch(4, 1, 3)]
    rec = TopicRecord(TOPIC, start_tpos=0)
    for e in events[:3]:
        rec.receive(e)
    rec.receive(events[1])  # the server resent one: dropped, not shown
    rec.receive(events[3])
    v = check_topic("c1", rec, truth_of(*events), final_state(*events))
    assert v.ok, v.examples
    assert v.redelivered == 1 and v.window == 4


def test_missing_event_is_counted():
    events = [ch(1, 1, 1, "insert"), ch(2, 1, 2), ch(3, 1, 3)]
    rec = TopicRecord(TOPIC, start_tpos=0)
    rec.receive(events[0])
    rec.receive(events[2])
    v = check_topic("c1", rec, truth_of(*events), final_state(*events))
    assert v.missing == 1 and v.reorders == 0 and v.duplicates == 0


def test_tail_not_delivered_is_missing_and_state_differs():
    events = [ch(1, 1, 1, "insert"), ch(2, 1, 2)]
    rec = TopicRecord(TOPIC, start_tpos=0)
    rec.receive(events[0])
    v = check_topic("c1", rec, truth_of(*events), final_state(*events))
    assert v.missing == 1 and v.state_diff == 1


def test_late_event_is_a_reorder_and_missing():
    events = [ch(1, 1, 1, "insert"), ch(2, 2, 1, "insert"), ch(3, 1, 2)]
    rec = TopicRecord(TOPIC, start_tpos=0)
    rec.receive(events[0])
    rec.receive(events[2])
    rec.receive(events[1])  # arrives after tpos 3: dropped by the client
    v = check_topic("c1", rec, truth_of(*events), final_state(*events))
    assert v.reorders == 1 and v.missing == 1


def test_same_change_under_two_tpos_is_a_duplicate():
    first = ch(1, 1, 1, "insert", pos=50)
    again = Change(pos=50, tpos=2, entity="item", id="1", op="insert", version=1, data=first.data)
    rec = TopicRecord(TOPIC, start_tpos=0)
    rec.receive(first)
    rec.receive(again)
    v = check_topic("c1", rec, truth_of(first, ch(2, 1, 2, pos=51)), {})
    assert v.duplicates == 1 and v.mismatched == 1


def test_version_going_backwards_is_a_reorder():
    events = [ch(1, 1, 2, "insert"), ch(2, 1, 1)]
    rec = TopicRecord(TOPIC, start_tpos=0)
    for e in events:
        rec.receive(e)
    v = check_topic("c1", rec, truth_of(*events), {("item", "1"): events[0].data})
    assert v.reorders == 1 and v.state_diff == 0  # apply-by-version kept the newer state


def test_content_differing_from_database_is_mismatched():
    good = ch(1, 1, 1, "insert")
    bad = Change(pos=good.pos, tpos=1, entity="item", id="1", op="insert", version=1, data={"id": 1, "text": "x"})
    rec = TopicRecord(TOPIC, start_tpos=0)
    rec.receive(bad)
    v = check_topic("c1", rec, truth_of(good), final_state(good))
    assert v.mismatched == 1 and v.state_diff == 1


def test_resync_covers_the_skipped_range():
    events = [ch(t, 1, t, "insert" if t == 1 else "update") for t in range(1, 7)]
    rec = TopicRecord(TOPIC, start_tpos=0)
    rec.receive(events[0])
    rec.resync(4, {("item", "1"): (4, events[3].data)})
    rec.receive(events[4])
    rec.receive(events[5])
    v = check_topic("c1", rec, truth_of(*events), final_state(*events))
    assert v.ok and v.resyncs == 1, v.examples


def test_window_starts_at_first_subscription():
    events = [ch(t, 1, t, "insert" if t == 1 else "update") for t in range(1, 5)]
    rec = TopicRecord(TOPIC, start_tpos=2, state={("item", "1"): (2, events[1].data)})
    rec.receive(events[1])  # the server replayed an old one: redelivered
    rec.receive(events[2])
    rec.receive(events[3])
    v = check_topic("c1", rec, truth_of(*events), final_state(*events))
    assert v.ok and v.window == 2 and v.redelivered == 1


def test_delete_removes_state_and_poison_keeps_position():
    ins = ch(1, 1, 1, "insert")
    poison = Change(pos=102, tpos=2, entity="item", id="1", op="update", version=2, data=None, poisoned=True)
    dele = ch(3, 1, 3, "delete")
    rec = TopicRecord(TOPIC, start_tpos=0)
    for e in (ins, poison, dele):
        rec.receive(e)
    v = check_topic("c1", rec, truth_of(ins, poison, dele), {})
    assert v.ok, v.examples


def test_totals_and_database_holes():
    events = [ch(1, 1, 1, "insert"), ch(2, 1, 2)]
    good, bad = TopicRecord(TOPIC, 0), TopicRecord(TOPIC, 0)
    for e in events:
        good.receive(e)
    bad.receive(events[0])
    totals = check_all([("a", good), ("b", bad)], {TOPIC: truth_of(*events)}, {TOPIC: final_state(*events)})
    assert totals.records == 2 and totals.missing == 1 and not totals.ok
    assert unsequenced_gaps({TOPIC: {1: events[0], 3: events[1]}}) == 1


def test_rows_whose_versions_fall_in_pos_order_are_counted():
    """The database's own order (issue 13): versions of one object must rise with pos, across
    topics too (a move's delete and insert share a version)."""
    fine = {TOPIC: truth_of(ch(1, 1, 1, "insert"), ch(2, 1, 2), ch(3, 2, 1, "insert")),
            "checklist:2": {1: Change(pos=104, tpos=1, entity="item", id="1", op="insert", version=2, data={})}}
    assert misordered_rows(fine) == []
    swapped = {TOPIC: truth_of(ch(1, 1, 1, "insert"), ch(2, 1, 3), ch(3, 1, 2))}
    assert misordered_rows(swapped) == ["('item', '1'): version 2 at pos 103 after version 3 at pos 102"]
