"""What a chaos client saw, per topic: the shape the recorder writes and the checker reads.

Pure data and the client-side apply rules (no sockets, no database), so the recorder and
the checker's unit tests share exactly one definition of "dedupe by tpos, apply by version".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

Key = tuple[str, str]  # (entity, id)


@dataclass(frozen=True)
class Change:
    """One sequenced outbox event, as the database holds it or as a client received it."""

    pos: int
    tpos: int
    entity: str
    id: str
    op: str
    version: int | None
    data: Any
    poisoned: bool = False

    @classmethod
    def from_envelope(cls, env: Mapping[str, Any]) -> "Change":
        return cls(
            pos=int(env["pos"]), tpos=int(env["tpos"]), entity=str(env["entity"]), id=str(env["id"]),
            op=str(env["op"]), version=env.get("version"), data=env.get("data"),
            poisoned=bool(env.get("error")),
        )

    @property
    def key(self) -> Key:
        return (self.entity, self.id)

    def same_change(self, other: "Change") -> bool:
        if self.poisoned or other.poisoned:  # a poison row's data is not published
            return (self.pos, self.tpos, self.poisoned) == (other.pos, other.tpos, other.poisoned)
        return (self.pos, self.tpos, self.entity, self.id, self.op, self.version, self.data) == (
            other.pos, other.tpos, other.entity, other.id, other.op, other.version, other.data)


# Log entry kinds.
APPLIED = "applied"    # tpos accepted (state updated if the version was newer)
DROPPED = "dropped"    # tpos not newer than the client's position: a duplicate, not shown
RESYNC = "resync"      # state reloaded from the database; position jumped


@dataclass
class Entry:
    kind: str
    change: Change | None = None
    from_tpos: int = 0   # RESYNC: the client's position before
    to_tpos: int = 0     # RESYNC: the snapshot's position


@dataclass
class TopicRecord:
    """One logical client's view of one topic (a replacement client continues the record)."""

    topic: str
    start_tpos: int
    last_tpos: int = -1
    # (entity, id) -> (version, data) of every live object; deletes remove the key.
    state: dict[Key, tuple[int | None, Any]] = field(default_factory=dict)
    log: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.last_tpos < 0:
            self.last_tpos = self.start_tpos

    def receive(self, change: Change) -> bool:
        """The browser client's rule: drop a tpos already seen, apply by version. True if applied."""
        if change.tpos <= self.last_tpos:
            self.log.append(Entry(DROPPED, change))
            return False
        self.last_tpos = change.tpos
        self.log.append(Entry(APPLIED, change))
        if change.poisoned or change.op == "event":
            return True  # keeps its position; carries no state
        current = self.state.get(change.key)
        if current is not None and change.version is not None and current[0] is not None \
                and change.version <= current[0]:
            return True  # an older version than what the snapshot already shows
        if change.op == "delete":
            self.state.pop(change.key, None)
        else:
            self.state[change.key] = (change.version, change.data)
        return True

    def resync(self, snapshot_tpos: int, state: Mapping[Key, tuple[int | None, Any]]) -> None:
        """Reload from the database (the REST contract: state plus the tpos it reflects)."""
        self.log.append(Entry(RESYNC, from_tpos=self.last_tpos, to_tpos=snapshot_tpos))
        self.last_tpos = snapshot_tpos
        self.state = dict(state)

    def applied(self) -> list[Change]:
        return [e.change for e in self.log if e.kind == APPLIED and e.change is not None]

    def visible_state(self) -> dict[Key, Any]:
        return {k: data for k, (_, data) in self.state.items()}
