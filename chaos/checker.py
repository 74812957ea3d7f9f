"""Compare what each client applied with what the database committed (pure: no I/O).

For every (client, topic) record it counts:
- missing:    committed tpos in the client's window that it neither applied nor covered
              by a resync snapshot;
- duplicates: the same change applied twice (same tpos, or the same pos under two tpos);
- reorders:   an event that arrived after a later one (it could only be dropped), or an
              applied version not newer than one applied before for the same object;
- mismatched: an applied event whose content differs from the database's at that tpos;
- state_diff: objects whose final state differs from the database's.
The window is (start_tpos, last committed tpos of the topic]: everything committed after
the client first subscribed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .record import APPLIED, DROPPED, RESYNC, Change, Key, TopicRecord


@dataclass
class Verdict:
    client: str
    topic: str
    window: int = 0
    missing: int = 0
    duplicates: int = 0
    reorders: int = 0
    mismatched: int = 0
    state_diff: int = 0
    redelivered: int = 0   # duplicates the server sent and the client dropped (allowed)
    resyncs: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.reorders or self.mismatched or self.state_diff)

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


def check_topic(client: str, record: TopicRecord, truth: Mapping[int, Change],
                db_state: Mapping[Key, Any]) -> Verdict:
    """truth: tpos -> Change for the topic (every sequenced event); db_state: (entity, id) -> data."""
    v = Verdict(client=client, topic=record.topic)
    last_committed = max(truth, default=0)
    covered: set[int] = set()
    applied_tpos: set[int] = set()
    applied_pos: dict[int, int] = {}
    max_version: dict[Key, int] = {}
    high = record.start_tpos
    for entry in record.log:
        if entry.kind == RESYNC:
            v.resyncs += 1
            covered.update(range(entry.from_tpos + 1, entry.to_tpos + 1))
            high = max(high, entry.to_tpos)
            continue
        ch = entry.change
        assert ch is not None
        if entry.kind == DROPPED:
            if ch.tpos in applied_tpos or ch.tpos in covered or ch.tpos <= record.start_tpos:
                v.redelivered += 1
            else:
                v.reorders += 1
                v.note(f"tpos {ch.tpos} arrived after {high} and was never applied")
            continue
        if entry.kind != APPLIED:
            continue
        if ch.tpos in applied_tpos or applied_pos.get(ch.pos, ch.tpos) != ch.tpos:
            v.duplicates += 1
            v.note(f"applied twice: tpos {ch.tpos} pos {ch.pos}")
        applied_tpos.add(ch.tpos)
        applied_pos[ch.pos] = ch.tpos
        covered.add(ch.tpos)
        if ch.tpos < high:
            v.reorders += 1
            v.note(f"applied tpos {ch.tpos} after {high}")
        high = max(high, ch.tpos)
        expected = truth.get(ch.tpos)
        if expected is None or not expected.same_change(ch):
            v.mismatched += 1
            v.note(f"tpos {ch.tpos}: got {ch}, database has {expected}")
        if ch.version is not None and not ch.poisoned:
            prev = max_version.get(ch.key)
            if prev is not None and ch.version <= prev:
                v.reorders += 1
                v.note(f"{ch.key} version {ch.version} applied after {prev}")
            max_version[ch.key] = max(prev or 0, ch.version)
    window = set(range(record.start_tpos + 1, last_committed + 1))
    v.window = len(window)
    gaps = sorted(window - covered)
    v.missing = len(gaps)
    if gaps:
        v.note(f"missing tpos {gaps[:10]}{'...' if len(gaps) > 10 else ''}")
    mine = record.visible_state()
    diff = [k for k in set(mine) | set(db_state) if mine.get(k) != db_state.get(k)]
    v.state_diff = len(diff)
    for k in sorted(diff)[:3]:
        v.note(f"state of {k}: client {mine.get(k)!r}, database {db_state.get(k)!r}")
    return v


@dataclass
class Totals:
    committed: int = 0
    missing: int = 0
    duplicates: int = 0
    reorders: int = 0
    mismatched: int = 0
    state_diff: int = 0
    redelivered: int = 0
    resyncs: int = 0
    records: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.reorders or self.mismatched or self.state_diff)

    def add(self, v: Verdict) -> None:
        self.records += 1
        for name in ("missing", "duplicates", "reorders", "mismatched", "state_diff", "redelivered", "resyncs"):
            setattr(self, name, getattr(self, name) + getattr(v, name))
        for ex in v.examples:
            if len(self.examples) < 10:
                self.examples.append(f"{v.client} {v.topic}: {ex}")

    def merge(self, other: "Totals") -> None:
        for name in ("committed", "missing", "duplicates", "reorders", "mismatched", "state_diff",
                     "redelivered", "resyncs", "records"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples.extend(other.examples[: max(0, 10 - len(self.examples))])


def check_all(records: Iterable[tuple[str, TopicRecord]], truth: Mapping[str, Mapping[int, Change]],
              db_state: Mapping[str, Mapping[Key, Any]]) -> Totals:
    totals = Totals()
    for client, record in records:
        totals.add(check_topic(client, record, truth.get(record.topic, {}), db_state.get(record.topic, {})))
    return totals


def unsequenced_gaps(truth: Mapping[str, Mapping[int, Change]]) -> int:
    """tpos holes in the database itself (a relay bug): each topic's tpos must be 1..n gapless
    above its lowest stored tpos."""
    holes = 0
    for by_tpos in truth.values():
        if by_tpos:
            lo, hi = min(by_tpos), max(by_tpos)
            holes += (hi - lo + 1) - len(by_tpos)
    return holes


def misordered_rows(truth: Mapping[str, Mapping[int, Change]]) -> list[str]:
    """Objects whose versions do not rise with pos in the database itself (a sequencing bug:
    positions must follow commit order on every row, and a row's versions are its commit
    order). Checked across topics: a moved item's delete and insert carry the same version."""
    by_key: dict[Key, list[Change]] = {}
    for by_tpos in truth.values():
        for ch in by_tpos.values():
            if ch.version is not None:
                by_key.setdefault(ch.key, []).append(ch)
    out = []
    for key, changes in by_key.items():
        changes.sort(key=lambda ch: ch.pos)
        for before, after in zip(changes, changes[1:]):
            if after.version < before.version:
                out.append(f"{key}: version {after.version} at pos {after.pos} after version "
                           f"{before.version} at pos {before.pos}")
    return out
