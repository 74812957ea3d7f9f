"""The hub: routes events from the broker stream to the connections subscribed to their
topic, and resumes subscriptions without gaps or duplicates.

Pure logic plus timers: no sockets, no SQL (catch-up reads go through the `CatchUp`
reader passed in). Per topic it keeps the last tpos seen live, a ring of recent events
(cheap resumes after short disconnects) and the pending events of an open transaction.

Invariants:
- A subscription delivers each tpos at most once and in order: `last` is the highest
  tpos sent to it; anything at or below is dropped.
- A resume is either complete (`recovered`, then `subscribed`) or refused (`resync`):
  live events that arrive while the outbox is read are buffered on the subscription and
  merged by tpos, and any hole makes it a resync.
- One transaction's events on a topic go out as one `events` message (flushed on
  tx_last, or after `flush_delay` so a lost tx_last never holds events back).
- The `events` text is built once per topic group and shared by all its subscribers.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Hashable, Iterable, Protocol, Sequence

from syncserver import metrics, protocol

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = "_heartbeat"


class EventLike(Protocol):
    pos: int
    tpos: int
    topic: str
    entity: str
    op: str
    data: Any
    tx_last: bool
    committed_at: str
    raw: bytes


class Prepared:
    """One server message, encoded once: text for raw websockets, and the JSON string
    literal SockJS puts inside its `a[...]` frame, computed at most once."""

    __slots__ = ("text", "_jsonified")

    def __init__(self, text: str):
        self.text = text
        self._jsonified: str | None = None

    @property
    def jsonified(self) -> str:
        if self._jsonified is None:
            self._jsonified = json.dumps(self.text)
        return self._jsonified


class Sink(Protocol):
    """A client connection as the hub sees it."""
    user_id: int | None

    def send_prepared(self, message: Prepared) -> None: ...


@dataclass
class CatchUpResult:
    events: list  # EventLike, ordered by tpos, all with tpos > since
    latest: int   # the topic's latest sequenced tpos in the outbox (0 if none)


class CatchUp(Protocol):
    async def read(self, topic: str, since: int, limit: int) -> CatchUpResult: ...


@dataclass(eq=False)
class Subscription:
    sink: Sink
    topic: str
    last: int
    live: bool = False
    ended: bool = False
    buffer: list = field(default_factory=list)


@dataclass(eq=False)
class TopicState:
    ring: deque
    tpos: int | None = None
    subs: dict = field(default_factory=dict)  # sink -> Subscription
    pending: list = field(default_factory=list)
    flush_handle: asyncio.TimerHandle | None = None


def revoked_users(events: Iterable[EventLike]) -> set[int]:
    """Users whose last membership event among `events` removes them."""
    last: dict[int, str] = {}
    for e in events:
        if e.entity == "membership" and isinstance(e.data, dict) and isinstance(e.data.get("user_id"), int):
            last[e.data["user_id"]] = e.op
    return {user for user, op in last.items() if op == "delete"}


def _committed_epoch(event: EventLike) -> float | None:
    try:
        return datetime.fromisoformat(event.committed_at).timestamp()
    except (TypeError, ValueError):
        return None


class Hub:
    def __init__(self, catchup: CatchUp, *, recent_events: int = 256, max_recover_events: int = 5000,
                 max_subscriptions: int = 100, flush_delay: float = 0.005, max_idle_topics: int = 10_000):
        self.catchup = catchup
        self.recent_events = recent_events
        self.max_recover_events = max_recover_events
        self.max_subscriptions = max_subscriptions
        self.flush_delay = flush_delay
        self.max_idle_topics = max_idle_topics
        self.topics: OrderedDict[str, TopicState] = OrderedDict()
        self.sinks: dict[Sink, dict[str, Subscription]] = {}

    # -- connections ---------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        self.sinks.setdefault(sink, {})

    def remove_sink(self, sink: Sink) -> None:
        for sub in list(self.sinks.pop(sink, {}).values()):
            self._end(sub)

    def subscription_count(self, sink: Sink) -> int:
        return len(self.sinks.get(sink, {}))

    def is_subscribed(self, sink: Sink, topic: str) -> bool:
        return topic in self.sinks.get(sink, {})

    def broadcast(self, message: Prepared) -> None:
        """Send one message (a heartbeat) to every connection."""
        for sink in list(self.sinks):
            sink.send_prepared(message)

    # -- live stream ---------------------------------------------------------------

    def _state(self, topic: str) -> TopicState:
        ts = self.topics.get(topic)
        if ts is None:
            ts = self.topics[topic] = TopicState(ring=deque(maxlen=self.recent_events or None))
            self._evict_idle()
        else:
            self.topics.move_to_end(topic)
        return ts

    def _evict_idle(self) -> None:
        excess = len(self.topics) - self.max_idle_topics
        if excess <= 0:
            return
        for topic in list(self.topics)[:excess * 2]:
            ts = self.topics[topic]
            if not ts.subs and not ts.pending:
                del self.topics[topic]
                excess -= 1
                if excess <= 0:
                    return

    def on_event(self, event: EventLike) -> None:
        """One event from the (gapless, pos-ordered) subscriber stream."""
        if event.topic == HEARTBEAT_TOPIC:
            return
        metrics.BROKER_EVENTS.inc()
        ts = self._state(event.topic)
        if ts.tpos is not None:
            if event.tpos <= ts.tpos:
                return  # already routed (a repeat after a relay takeover)
            if event.tpos != ts.tpos + 1:
                # The subscriber repairs gaps, so this means it skipped; keep the ring
                # contiguous so a resume from it can never be partial.
                log.warning("tpos jump on %s: %s -> %s", event.topic, ts.tpos, event.tpos)
                ts.ring.clear()
        ts.tpos = event.tpos
        if self.recent_events:
            ts.ring.append(event)
        ts.pending.append(event)
        if event.tx_last:
            self.flush(event.topic)
        elif ts.flush_handle is None:
            ts.flush_handle = asyncio.get_running_loop().call_later(self.flush_delay, self.flush, event.topic)

    def flush(self, topic: str) -> None:
        """Send the topic's pending events to its subscribers: one message, encoded once."""
        ts = self.topics.get(topic)
        if ts is None:
            return
        if ts.flush_handle is not None:
            ts.flush_handle.cancel()
            ts.flush_handle = None
        events, ts.pending = ts.pending, []
        if not events:
            return
        if ts.subs:
            now = time.time()
            for e in events:
                committed = _committed_epoch(e)
                if committed is not None:
                    metrics.COMMIT_TO_PUSH.observe(max(0.0, now - committed))
        revoked = revoked_users(events)
        shared: Prepared | None = None
        first, last = events[0].tpos, events[-1].tpos
        for sub in list(ts.subs.values()):
            if sub.sink.user_id in revoked:
                self._revoke(sub)
                continue
            if not sub.live:
                sub.buffer.extend(events)
                continue
            if last <= sub.last:
                continue
            if first > sub.last:
                if shared is None:
                    shared = Prepared(protocol.events(topic, [e.raw for e in events]))
                sub.sink.send_prepared(shared)
                metrics.EVENTS_DELIVERED.labels("live").inc(len(events))
            else:
                # This subscriber already has some of them (it resumed from the outbox
                # past what the broker had delivered): send only the rest.
                rest = [e for e in events if e.tpos > sub.last]
                sub.sink.send_prepared(Prepared(protocol.events(topic, [e.raw for e in rest])))
                metrics.EVENTS_DELIVERED.labels("live").inc(len(rest))
            sub.last = last

    # -- subscriptions ---------------------------------------------------------------

    def unsubscribe(self, sink: Sink, topic: str) -> bool:
        sub = self.sinks.get(sink, {}).get(topic)
        if sub is None:
            return False
        self._end(sub)
        return True

    def _end(self, sub: Subscription) -> None:
        if sub.ended:
            return
        sub.ended = True
        sub.buffer = []
        ts = self.topics.get(sub.topic)
        if ts is not None and ts.subs.get(sub.sink) is sub:
            del ts.subs[sub.sink]
        subs = self.sinks.get(sub.sink)
        if subs is not None and subs.get(sub.topic) is sub:
            del subs[sub.topic]
        metrics.SUBSCRIPTIONS.dec()

    def _revoke(self, sub: Subscription) -> None:
        self._end(sub)
        metrics.REVOCATIONS.inc()
        sub.sink.send_prepared(Prepared(protocol.revoked(sub.topic)))

    def _resync(self, sub: Subscription, tpos: int, why: str) -> str:
        self._end(sub)
        metrics.RESUMES.labels("resync").inc()
        log.debug("resync %s since %s: %s", sub.topic, sub.last, why)
        sub.sink.send_prepared(Prepared(protocol.resync(sub.topic, tpos)))
        return "resync"

    async def subscribe(self, sink: Sink, topic: str, since: int) -> str:
        """Start (or restart) a subscription; sends subscribed / recovered+subscribed /
        resync / revoked. Returns the outcome. The caller checked token and limits."""
        old = self.sinks.get(sink, {}).get(topic)
        if old is not None:
            self._end(old)
        ts = self._state(topic)
        sub = Subscription(sink, topic, last=since)
        ts.subs[sink] = sub
        self.sinks.setdefault(sink, {})[topic] = sub
        metrics.SUBSCRIPTIONS.inc()

        current = ts.tpos
        if current is not None and since == current:
            return self._go_live(sub, [], "live")
        if current is not None and since < current:
            recent = [e for e in ts.ring if e.tpos > since]
            if recent and recent[0].tpos == since + 1 and recent[-1].tpos == current:
                return self._go_live(sub, recent, "recovered_ring")

        try:
            result = await self.catchup.read(topic, since, self.max_recover_events + 1)
        except Exception:  # any database failure: the client must not be left guessing
            log.exception("catch-up read failed for %s since %s", topic, since)
            if sub.ended:
                return "ended"
            return self._resync(sub, ts.tpos if ts.tpos is not None else since, "catch-up failed")
        if sub.ended:
            return "ended"
        if len(result.events) > self.max_recover_events:
            return self._resync(sub, max(result.latest, ts.tpos or 0), "too far behind")
        merged: dict[int, EventLike] = {}
        for e in list(result.events) + sub.buffer:
            if e.tpos > since:
                merged.setdefault(e.tpos, e)
        events = [merged[t] for t in sorted(merged)]
        latest = max(result.latest, ts.tpos or 0, events[-1].tpos if events else 0)
        if since > latest:
            return self._resync(sub, latest, "client is ahead of the outbox")
        expected = since + 1
        for e in events:
            if e.tpos != expected:
                return self._resync(sub, latest, f"missing tpos {expected} (pruned)")
            expected += 1
        if expected - 1 < result.latest:
            return self._resync(sub, latest, "outbox rows pruned")
        return self._go_live(sub, events, "recovered_outbox" if events else "live")

    def _go_live(self, sub: Subscription, events: Sequence[EventLike], outcome: str) -> str:
        if sub.sink.user_id is not None and sub.sink.user_id in revoked_users(events):
            self._revoke(sub)
            metrics.RESUMES.labels("revoked").inc()
            return "revoked"
        if events:
            sub.sink.send_prepared(Prepared(protocol.recovered(sub.topic, [e.raw for e in events])))
            metrics.EVENTS_DELIVERED.labels("recovered").inc(len(events))
            sub.last = events[-1].tpos
        sub.live = True
        sub.buffer = []
        metrics.RESUMES.labels(outcome).inc()
        sub.sink.send_prepared(Prepared(protocol.subscribed(sub.topic, sub.last)))
        return outcome
