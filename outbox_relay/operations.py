"""Admin operations on the outbox: status, replay, prune.

Used by the `outbox-admin` CLI, the manage.py commands and the Django admin; plain
psycopg 3 (sync), given a libpq DSN.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterator, TextIO

import psycopg
import zmq

from outbox_relay.handshakes import HandshakeWatch
from outbox_relay.leader import LEADER_ALIVE_SQL
from runtime.curve import ClientKeys

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- status

@dataclass(frozen=True)
class Status:
    leader: str | None
    leader_alive: bool
    leader_since: datetime | None
    last_pos: int
    published_pos: int
    pruned_pos: int                        # retention watermark: positions up to it may be gone
    backlog: int
    oldest_unsequenced_age: float | None   # seconds: how far behind sequencing is
    heartbeat_age: float | None            # seconds since the leader last checked in
    poison_rows: int
    doorbell_armed: bool

    def as_dict(self) -> dict:
        d = asdict(self)
        d["leader_since"] = self.leader_since.isoformat() if self.leader_since else None
        return d


STATUS_SQL = f"""
SELECT s.leader, ({LEADER_ALIVE_SQL}) AS alive, s.leader_since, s.last_pos, s.published_pos, s.pruned_pos,
       (SELECT count(*) FROM outbox WHERE pos IS NULL) AS backlog,
       extract(epoch FROM clock_timestamp() - (SELECT min(created_at) FROM outbox WHERE pos IS NULL)),
       extract(epoch FROM clock_timestamp() - s.heartbeat_at),
       (SELECT count(*) FROM outbox WHERE error IS NOT NULL) AS poison,
       (SELECT armed FROM outbox_doorbell WHERE id = 1)
  FROM outbox_relay_state s WHERE s.id = 1
"""


def status(dsn: str) -> Status:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(STATUS_SQL).fetchone()
    leader, alive, since, last, published, pruned, backlog, oldest, hb, poison, armed = row
    return Status(
        leader=leader, leader_alive=bool(alive), leader_since=since, last_pos=int(last),
        published_pos=int(published), pruned_pos=int(pruned), backlog=int(backlog),
        oldest_unsequenced_age=float(oldest) if oldest is not None else None,
        heartbeat_age=float(hb) if hb is not None else None, poison_rows=int(poison),
        doorbell_armed=bool(armed),
    )


def format_status(s: Status) -> str:
    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}s"
    leader = f"{s.leader} ({'alive' if s.leader_alive else 'NOT RUNNING'})" if s.leader else "none yet"
    return "\n".join([
        f"leader:             {leader}",
        f"last assigned pos:  {s.last_pos}",
        f"published pos:      {s.published_pos}",
        f"pruned up to pos:   {s.pruned_pos}",
        f"backlog (rows):     {s.backlog}",
        f"oldest unsequenced: {secs(s.oldest_unsequenced_age)}",
        f"heartbeat age:      {secs(s.heartbeat_age)}",
        f"poison rows:        {s.poison_rows}",
        f"doorbell armed:     {s.doorbell_armed}",
    ])


# ---------------------------------------------------------------- replay

@dataclass(frozen=True)
class Selection:
    """Which stored (sequenced) events a replay covers; every given bound applies."""
    from_pos: int | None = None
    to_pos: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    topic: str | None = None
    ids: tuple[int, ...] = ()

    def where(self) -> tuple[str, list]:
        clauses, args = ["o.pos IS NOT NULL"], []
        if self.from_pos is not None:
            clauses.append("o.pos >= %s"); args.append(self.from_pos)
        if self.to_pos is not None:
            clauses.append("o.pos <= %s"); args.append(self.to_pos)
        if self.since is not None:
            clauses.append("o.created_at >= %s"); args.append(self.since)
        if self.until is not None:
            clauses.append("o.created_at < %s"); args.append(self.until)
        if self.topic is not None:
            clauses.append("o.topic = %s"); args.append(self.topic)
        if self.ids:
            clauses.append("o.id = ANY(%s)"); args.append(list(self.ids))
        return " AND ".join(clauses), args


@dataclass
class ReplayResult:
    count: int = 0
    first_pos: int | None = None
    last_pos: int | None = None
    topics: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False


class Progress:
    """A one-line progress bar on stderr (only when there is something long to show)."""

    def __init__(self, total: int, out: TextIO | None = None, width: int = 30) -> None:
        self.total, self.out, self.width = total, out or sys.stderr, width
        self.done = 0
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.2 or self.done >= self.total:
            self._last = now
            frac = self.done / self.total if self.total else 1.0
            bar = "#" * int(frac * self.width)
            self.out.write(f"\rreplay [{bar:<{self.width}}] {self.done}/{self.total} {frac:5.1%}")
            if self.done >= self.total:
                self.out.write("\n")
            self.out.flush()


def _rows(conn: psycopg.Connection, sel: Selection, columns: str, chunk: int = 5000) -> Iterator[tuple]:
    where, args = sel.where()
    with conn.cursor(name="outbox_replay") as cur:
        cur.itersize = chunk
        cur.execute(f"SELECT {columns} FROM outbox o WHERE {where} ORDER BY o.pos", args)
        yield from cur


def count(dsn: str, sel: Selection) -> int:
    where, args = sel.where()
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM outbox o WHERE {where}", args).fetchone()[0])


def preview(dsn: str, sel: Selection, limit: int = 20) -> tuple[ReplayResult, list[str]]:
    """What a replay would send, without sending: totals and the first `limit` lines."""
    result, lines = ReplayResult(dry_run=True), []
    with psycopg.connect(dsn) as conn:
        for pos, topic, op, entity, entity_id, created in _rows(conn, sel, "o.pos, o.topic, o.op, o.entity, o.entity_id, o.created_at"):
            _tally(result, pos, topic)
            if len(lines) < limit:
                lines.append(f"pos={pos} topic={topic} op={op} {entity}:{entity_id} at={created.isoformat()}")
    return result, lines


class BrokerRefused(RuntimeError):
    """The broker refused our CURVE key: nothing was sent."""


def replay(dsn: str, broker_url: str, sel: Selection, *, curve: ClientKeys, rate: float | None = None,
           progress: bool = False, connect_timeout: float = 2.0, ctx: zmq.Context | None = None) -> ReplayResult:
    """Re-publish stored events to the broker frontend, in pos order, keeping their pos.

    `curve` is a publisher key (the relay's: config.relay_keys); BrokerRefused if the
    broker does not accept it."""
    result = ReplayResult()
    total = count(dsn, sel) if progress else 0
    bar = Progress(total) if progress and total else None
    sock = _connect_publisher(broker_url, curve, connect_timeout, ctx)
    try:
        started = time.monotonic()
        with psycopg.connect(dsn) as conn:
            for pos, topic, envelope in _rows(conn, sel, "o.pos, o.topic, outbox_envelope(o)"):
                if rate:
                    # Pace against the start, not per message, so sleeps do not accumulate drift.
                    ahead = started + result.count / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                sock.send_multipart((topic.encode(), envelope.encode()))
                _tally(result, pos, topic)
                if bar:
                    bar.update()
    finally:
        sock.close(linger=5000)  # let queued messages reach the broker before returning
    log.info("replayed count=%d first_pos=%s last_pos=%s", result.count, result.first_pos, result.last_pos)
    return result


def _tally(result: ReplayResult, pos: int, topic: str) -> None:
    result.count += 1
    result.first_pos = pos if result.first_pos is None else result.first_pos
    result.last_pos = pos
    result.topics[topic] = result.topics.get(topic, 0) + 1


def _connect_publisher(url: str, curve: ClientKeys, timeout: float, ctx: zmq.Context | None) -> zmq.Socket:
    """An XPUB socket connected to the broker, returned once subscriptions have arrived.

    An XPUB (unlike a PUB) tells us when the broker forwards its subscribers'
    subscriptions, so the first replayed message is not dropped by a socket that does
    not yet know anyone listens. With no subscriber at all, we go ahead after `timeout`;
    if the broker refuses our key, BrokerRefused at once.
    """
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)  # no limit: a replay must not drop locally
    curve.apply(sock)
    watch = HandshakeWatch(sock, url, "replay")
    sock.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if sock.poll(50, zmq.POLLIN):
                while sock.poll(0, zmq.POLLIN):
                    sock.recv()
                break
            watch.poll()
            if watch.refusals:
                sock.close(0)
                raise BrokerRefused(f"the broker at {url} refused the replay's key (OUTBOX_RELAY_CURVE_SECRET_KEY:"
                                    " its public key must be in OUTBOX_BROKER_PUBLISHER_KEYS); nothing was sent")
            if time.monotonic() >= deadline:
                log.warning("replay: no subscriber behind the broker at %s after %.1fs; sending anyway", url, timeout)
                break
    finally:
        watch.close()
    return sock


# ---------------------------------------------------------------- prune

@dataclass(frozen=True)
class PruneResult:
    deleted: int
    dry_run: bool
    cutoff: datetime


# One step of prune's walk along the pos index: the next `chunk` published rows after
# pos `after`, and those of them sequenced before the cutoff deleted (unless a dry run).
# Rows are sequenced in pos order, so sequenced_at grows with pos: the walk ends at the
# first younger row. There is no index on sequenced_at: the claim would pay for it on
# every row. Never beyond published_pos: never an
# unpublished row.
PRUNE_STEP = """
WITH walk AS (
    SELECT o.id, o.pos, o.sequenced_at < %(cutoff)s AS old
      FROM outbox o
     WHERE o.pos > %(after)s AND o.pos <= (SELECT published_pos FROM outbox_relay_state WHERE id = 1)
     ORDER BY o.pos
     LIMIT %(chunk)s
), gone AS (
    DELETE FROM outbox o USING walk w WHERE o.id = w.id AND w.old AND NOT %(dry_run)s RETURNING o.id
)
SELECT count(*), count(*) FILTER (WHERE w.old), coalesce(max(w.pos), 0), (SELECT count(*) FROM gone) FROM walk w
"""


def prune(dsn: str, older_than: timedelta, *, dry_run: bool = False, chunk: int = 10_000,
          on_progress: Callable[[int], None] | None = None) -> PruneResult:
    """Delete published rows sequenced before now - older_than; never an unpublished row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cutoff = conn.execute("SELECT clock_timestamp() - %s", (older_than,)).fetchone()[0]
        found, after = 0, 0
        while True:
            # Small transactions: a long prune must not hold locks or bloat one transaction.
            seen, old, last, deleted = conn.execute(
                PRUNE_STEP, {"cutoff": cutoff, "after": after, "chunk": chunk, "dry_run": dry_run}).fetchone()
            found += old if dry_run else deleted  # a concurrent prune may have taken some
            if on_progress and not dry_run:
                on_progress(found)
            if seen < chunk or old < seen:
                break
            after = last
    if not dry_run:
        log.info("pruned deleted=%d cutoff=%s", found, cutoff.isoformat())
    return PruneResult(found, dry_run, cutoff)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '15m', '90s', '2w' -> timedelta; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 7d, 12h, 30m or 90s, got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def parse_rate(text: str) -> float:
    """'100/s' or '100' -> events per second (positive, finite); ValueError otherwise."""
    number = text[:-2] if text.endswith("/s") else text
    try:
        rate = float(number)
    except ValueError:
        raise ValueError(f"expected events per second like 100/s, got {text!r}") from None
    if not (0 < rate < float("inf")):
        raise ValueError(f"expected a positive events-per-second rate like 100/s, got {text!r}")
    return rate


def parse_time(text: str) -> datetime:
    """ISO-8601; a time without a zone is taken as UTC."""
    from datetime import timezone
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO-8601 time like 2025-01-31T12:00:00Z, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
