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
- A transaction's events on a topic are never split across `events` messages: they go
  out on tx_last, or after `flush_delay` (50 ms: long enough that a busy machine pausing
  between two events of one transaction does not split it) so that a lost tx_last never
  holds events back for long. One message may carry several whole transactions: a
  topic flushes at the end of the loop's current turn when its last flush is older
  than its window (all that the broker stream handed over in that turn goes out
  together), else at the end of the window, so a busy topic costs one write per
  subscriber per window rather than per transaction. The window is `coalesce` (0 by
  default: a timer's wait is rounded up to a whole millisecond, which a 1 ms floor
  added to every event's latency at 1,000 events/s); and while the topic's flushes
  have taken half the loop's time or more lately (`duty`, averaged over about
  DUTY_TAU), it is a third of the last flush's time: then a topic with thousands of
  subscribers takes at most about three quarters of the loop (BUSY_SHARE), the rest
  stays for everything else (subscribes, other topics, the broker stream), and each
  write carries more transactions as the load grows. Below that, a transaction goes
  out as soon as it is whole: waiting would add latency and save nothing the loop
  needs. (A window as long as the flush, half the loop, saved about a fifth of the CPU
  per delivery at 100-150k deliveries/s but added a fifth to p99:
  bench/results/latest.md, figure 5.)
- The `events` text and its WebSocket frames are built once per flush and shared by
  all its subscribers; per subscriber the hot loop only compares tpos and writes.
- Authority (issue 14): a subscription is registered, buffering live events, before the
  database is asked whether its user may watch the topic now (`Authority`). A removal
  committed before that check makes it fail (`revoked`); one committed after it reaches
  the hub on the stream, after the registration, and revokes the subscription, live or
  still resuming. Which of the two a removal seen on the stream is, the grant's floor
  tells: above it, it ends the membership the check found; at or below it, an earlier one
  (the user rejoined, and the stream lags behind the database). A resume never starts before the current membership began
  (the grant's floor), and never replays past a removal of the subscriber.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Protocol, Sequence

from syncserver import metrics, protocol, wsframe

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = "_heartbeat"
MAX_WINDOW = 0.1  # seconds: the longest a busy topic's coalescing window grows
DUTY_TAU = 0.5    # seconds: how far back a topic's flush duty is averaged
DUTY_BUSY = 0.5   # from this share of the loop's time on, a topic's flushes are spaced
BUSY_SHARE = 0.75  # ... so that they take at most about this share: window = took * (1/share - 1)


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
    """One server message, encoded once and shared by every connection it goes to: the
    text (raw websocket, polling), the JSON string literal SockJS puts inside its
    `a[...]` frame, and the finished WebSocket frames of both websocket transports,
    each computed on first use."""

    __slots__ = ("text", "_jsonified", "_raw_frame", "_sockjs_frame")

    def __init__(self, text: str):
        self.text = text
        self._jsonified: str | None = None
        self._raw_frame: bytes | None = None
        self._sockjs_frame: bytes | None = None

    @property
    def jsonified(self) -> str:
        if self._jsonified is None:
            self._jsonified = json.dumps(self.text)
        return self._jsonified

    @property
    def raw_frame(self) -> bytes:
        """The text frame of the raw websocket transport (/sync/websocket)."""
        if self._raw_frame is None:
            self._raw_frame = wsframe.text_frame(self.text.encode("utf-8"))
        return self._raw_frame

    @property
    def sockjs_frame(self) -> bytes:
        """The text frame of the SockJS websocket transport: `a[<json string>]`."""
        if self._sockjs_frame is None:
            self._sockjs_frame = wsframe.text_frame(f"a[{self.jsonified}]".encode("utf-8"))
        return self._sockjs_frame


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


class GrantLike(Protocol):
    floor: int | None  # lowest `since` allowed; None: not known yet (answer resync)


class Authority(Protocol):
    """syncserver.authority.DatabaseAuthority: the user's grant on a topic now, or None."""

    def check(self, user_id: int, topic: str) -> "asyncio.Future[GrantLike | None]": ...


@dataclass(eq=False, slots=True)
class Subscription:
    sink: Sink
    topic: str
    last: int
    live: bool = False
    ended: bool = False
    buffer: list = field(default_factory=list)
    presence: bool = False   # the client asked to appear in (and receive) the topic's presence
    present: bool = False    # joined the presence observer (live, not ended yet)
    # The grant's floor once the check answered (None before): a removal of this user at
    # or below it ended an earlier membership, not this one.
    floor: int | None = None
    removed: int | None = None  # the latest removal of this user seen while the check was out


@dataclass(eq=False, slots=True)
class TopicState:
    ring: deque
    tpos: int | None = None
    subs: dict = field(default_factory=dict)  # sink -> Subscription
    pending: list = field(default_factory=list)
    flush_handle: asyncio.Handle | None = None  # the next flush: a timer, or this turn's end
    # While no event of the topic has been routed (tpos is None): the highest latest
    # tpos an outbox read reported since this state was created. Every event above it
    # is still to come through on_event, so a subscriber at exactly that tpos can go
    # live without reading the outbox again (thousands subscribing after a restart).
    read_tpos: int | None = None
    complete: int = 0        # pending[:complete] are whole transactions (ended by tx_last)
    open_since: float = 0.0  # loop time of the first event of the open transaction
    flushed_at: float = float("-inf")  # loop time the last flush finished
    window: float = 0.0      # the coalescing window after it (see Hub._send)
    duty: float = 0.0        # share of recent loop time spent flushing this topic (see Hub._send)

    @property
    def flush_soon(self) -> bool:
        """The next flush is due now, at the end of this turn (a call_soon, not a timer)."""
        return self.flush_handle is not None and not isinstance(self.flush_handle, asyncio.TimerHandle)


def revoked_users(events: Iterable[EventLike]) -> dict[int, int]:
    """Users whose last membership event among `events` removes them, with its tpos."""
    last: dict[int, EventLike] = {}
    for e in events:
        if e.entity == "membership" and isinstance(e.data, dict) and isinstance(e.data.get("user_id"), int):
            last[e.data["user_id"]] = e
    return {user: e.tpos for user, e in last.items() if e.op == "delete"}


def changes_hands(events: Iterable[EventLike]) -> bool:
    """Whether a membership among `events` was given to another user in place (raw SQL:
    UPDATE ... SET user_id). Its event names the new user only, so whose access ended is
    unknown: every subscriber of the topic must be checked again."""
    return any(e.entity == "membership" and e.op == "update" and "user_id" in (getattr(e, "changed", None) or ())
               for e in events)


def removes(events: Iterable[EventLike], user_id: int) -> bool:
    """Whether any of `events` removes user_id's membership (a rejoin later among them does
    not undo it: what lies between was not his to read)."""
    return any(e.entity == "membership" and e.op == "delete" and isinstance(e.data, dict)
               and e.data.get("user_id") == user_id for e in events)


def spacing(duty: float, since: float, took: float, coalesce: float) -> tuple[float, float]:
    """A topic's flush duty after a flush that took `took` s and ended `since` s after the
    previous one, and the window before its next flush (see the module doc).

    >>> duty, window = 0.0, 0.0
    >>> for _ in range(200):  # 15 ms flushes every 20 ms: most of the loop
    ...     duty, window = spacing(duty, 0.02, 0.015, 0.001)
    >>> round(duty, 1), round(window, 4)
    (0.8, 0.005)
    >>> for _ in range(200):  # 5 ms flushes every 20 ms: sent as soon as whole
    ...     duty, window = spacing(duty, 0.02, 0.005, 0.001)
    >>> round(duty, 1), window
    (0.3, 0.001)
    """
    decayed = duty * math.exp(-since / DUTY_TAU) if since < 50 * DUTY_TAU else 0.0
    duty = decayed + took / DUTY_TAU
    return duty, (max(coalesce, min(took * (1 / BUSY_SHARE - 1), MAX_WINDOW)) if duty >= DUTY_BUSY else coalesce)


def _committed_epoch(event: EventLike) -> float | None:
    try:
        return datetime.fromisoformat(event.committed_at).timestamp()
    except (TypeError, ValueError):
        return None


class PresenceObserver(Protocol):
    """syncserver.presence.Presence: told when a presence subscription goes live and ends."""

    def joined_sub(self, sub: Subscription) -> None: ...

    def left_sub(self, sub: Subscription) -> None: ...


class Hub:
    def __init__(self, catchup: CatchUp, *, authority: Authority, recent_events: int = 256,
                 max_recover_events: int = 5000, max_subscriptions: int = 100, flush_delay: float = 0.05,
                 max_idle_topics: int = 10_000, coalesce: float = 0.0):
        self.catchup = catchup
        self.authority = authority
        self.recent_events = recent_events
        self.max_recover_events = max_recover_events
        self.max_subscriptions = max_subscriptions
        self.flush_delay = flush_delay
        self.coalesce = coalesce
        self.max_idle_topics = max_idle_topics
        self.topics: OrderedDict[str, TopicState] = OrderedDict()
        self.sinks: dict[Sink, dict[str, Subscription]] = {}
        self.presence: PresenceObserver | None = None
        self._delivered_live = metrics.EVENTS_DELIVERED.labels("live")
        # Concurrent identical catch-up reads share one query: (topic, since) -> (task,
        # the topic state it was started under).
        self._reads: dict[tuple[str, int], tuple[asyncio.Task, TopicState]] = {}

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
        loop = asyncio.get_running_loop()
        if len(ts.pending) == ts.complete:
            ts.open_since = loop.time()  # the first event of a transaction still open
        ts.pending.append(event)
        if event.tx_last:
            ts.complete = len(ts.pending)
            due = ts.flushed_at + ts.window
            if loop.time() >= due:
                # Due now: sent at the end of this turn of the loop. The broker stream hands
                # over every message it has queued in one turn, so a burst of transactions
                # (a relay batch) is one write per subscriber, and no timer delays it (the
                # selector rounds a timer's wait up to a whole millisecond).
                if not ts.flush_soon:
                    if ts.flush_handle is not None:
                        ts.flush_handle.cancel()
                    ts.flush_handle = loop.call_soon(self._flush_due, event.topic)
            elif ts.flush_handle is None or (not ts.flush_soon and ts.flush_handle.when() > due):
                # Flushed a moment ago: whatever whole transactions arrive until `due`
                # go out together, one write per subscriber instead of one per
                # transaction; under load the batches grow with the backlog.
                if ts.flush_handle is not None:
                    ts.flush_handle.cancel()
                ts.flush_handle = loop.call_at(due, self._flush_due, event.topic)
        elif ts.flush_handle is None:
            ts.flush_handle = loop.call_later(self.flush_delay, self._flush_due, event.topic)

    def _flush_due(self, topic: str) -> None:
        """Timer: send the whole transactions; an open one's events too once they waited
        `flush_delay` (a lost tx_last must never hold events back)."""
        ts = self.topics.get(topic)
        if ts is None:
            return
        ts.flush_handle = None
        if len(ts.pending) > ts.complete:
            wait = ts.open_since + self.flush_delay - asyncio.get_running_loop().time()
            if wait > 0:
                if ts.complete:
                    self._send(topic, ts, ts.complete)
                ts.flush_handle = asyncio.get_running_loop().call_later(wait, self._flush_due, topic)
                return
        self.flush(topic)

    def flush(self, topic: str) -> None:
        """Send all the topic's pending events to its subscribers now."""
        ts = self.topics.get(topic)
        if ts is None:
            return
        if ts.flush_handle is not None:
            ts.flush_handle.cancel()
            ts.flush_handle = None
        self._send(topic, ts, len(ts.pending))

    def _send(self, topic: str, ts: TopicState, count: int) -> None:
        """Send the first `count` pending events: one message, encoded once, shared."""
        events = ts.pending[:count]
        del ts.pending[:count]
        ts.complete = max(0, ts.complete - count)
        if not events:
            return
        started = asyncio.get_running_loop().time()
        if ts.subs:
            now = time.time()
            for e in events:
                committed = _committed_epoch(e)
                if committed is not None:
                    metrics.COMMIT_TO_PUSH.observe(max(0.0, now - committed))
        if len(events) > 1 and any(e.entity == "membership" and e.op == "delete" for e in events):
            # A removal takes effect at its own transaction: what came before it still
            # reaches the removed user, nothing after it does. Rare: send each
            # transaction of this batch as its own message.
            start = 0
            for i, e in enumerate(events):
                if e.tx_last or i == len(events) - 1:
                    self._deliver(topic, ts, events[start:i + 1])
                    start = i + 1
        else:
            self._deliver(topic, ts, events)
        # The coalescing window starts when the writes are done. While the topic's writes
        # have taken half the loop or more lately, it lasts a third of what they took: a
        # topic with many subscribers then spends at most about three quarters of the loop
        # on its writes (BUSY_SHARE), and under load each write carries more transactions.
        # `duty` is the flush times decayed with DUTY_TAU: for flushes of F s every P s it
        # tends to F / P.
        done = asyncio.get_running_loop().time()
        ts.duty, ts.window = spacing(ts.duty, done - ts.flushed_at, done - started, self.coalesce)
        ts.flushed_at = done

    def _deliver(self, topic: str, ts: TopicState, events: list) -> None:
        if changes_hands(events):
            # Rare (no UI or API path does it): each subscriber reloads and subscribes
            # again, and the database decides (the previous holder is refused).
            for sub in list(ts.subs.values()):
                self._resync(sub, events[-1].tpos, "a membership changed hands")
            return
        revoked = revoked_users(events)
        if revoked:
            # Access ends before any later event: these subscribers never see this batch.
            # A removal at or below a subscription's floor ended an earlier membership (the
            # stream can lag behind the database that granted this one, after a rejoin).
            for sub in [sub for sub in ts.subs.values() if sub.sink.user_id in revoked]:
                tpos = revoked[sub.sink.user_id]
                if sub.floor is None:  # the check is still out: it decides (subscribe)
                    sub.removed = max(sub.removed or 0, tpos)
                elif tpos > sub.floor:
                    self._revoke(sub)
        shared: Prepared | None = None
        first, last = events[0].tpos, events[-1].tpos
        whole = partial = 0
        # The hot loop of fan-out: per subscriber only a comparison and one write of
        # the shared, already framed message; metrics are counted once per flush.
        for sub in list(ts.subs.values()):
            if not sub.live:
                sub.buffer.extend(events)
                continue
            if first > sub.last:
                if shared is None:
                    shared = Prepared(protocol.events(topic, [e.raw for e in events]))
                sub.sink.send_prepared(shared)
                whole += 1
                sub.last = last
            elif last > sub.last:
                # This subscriber already has some of them (it resumed from the outbox
                # past what the broker had delivered): send only the rest.
                rest = [e for e in events if e.tpos > sub.last]
                sub.sink.send_prepared(Prepared(protocol.events(topic, [e.raw for e in rest])))
                partial += len(rest)
                sub.last = last
        if whole or partial:
            self._delivered_live.inc(whole * len(events) + partial)

    # -- subscriptions ---------------------------------------------------------------

    def unsubscribe(self, sink: Sink, topic: str) -> bool:
        sub = self.sinks.get(sink, {}).get(topic)
        if sub is None:
            return False
        self._end(sub)
        return True

    def end_where(self, sink: Sink, ends: Callable[[str], str | None]) -> list[str]:
        """End each of the sink's subscriptions (live or resuming) for which ends(topic)
        gives a message, after sending it that message (the token expired, or a renewed
        token no longer lists the topic). Returns the topics ended."""
        ended = []
        for topic, sub in list(self.sinks.get(sink, {}).items()):
            text = ends(topic)
            if text is not None:
                self._end(sub)
                sink.send_prepared(Prepared(text))
                ended.append(topic)
        return ended

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
        if sub.present:
            # Any end (unsubscribe, closed, revoked, expired, resync) ends its presence.
            sub.present = False
            if self.presence is not None:
                self.presence.left_sub(sub)

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

    async def subscribe(self, sink: Sink, topic: str, since: int, presence: bool = False) -> str:
        """Start (or restart) a subscription; sends subscribed / recovered+subscribed /
        resync / revoked. Returns the outcome. The caller checked token and limits."""
        old = self.sinks.get(sink, {}).get(topic)
        if old is not None:
            self._end(old)
        ts = self._state(topic)
        sub = Subscription(sink, topic, last=since, presence=presence)
        ts.subs[sink] = sub
        self.sinks.setdefault(sink, {})[topic] = sub
        metrics.SUBSCRIPTIONS.inc()

        # Registered (live events buffer on it) before the database is asked: see the
        # module docstring for why this order closes the race with a removal.
        try:
            grant = await asyncio.shield(self.authority.check(sink.user_id, topic))
        except Exception:  # any database failure: the client must not be left guessing
            # (syncserver.authority logs the failure once per batch, not once per waiter)
            log.debug("grant check failed for user %s on %s", sink.user_id, topic, exc_info=True)
            if sub.ended:
                return "ended"
            return self._resync(sub, ts.tpos if ts.tpos is not None else since, "grant check failed")
        if sub.ended:
            return "ended"
        if grant is None:
            self._revoke(sub)
            metrics.RESUMES.labels("revoked").inc()
            return "revoked"
        if grant.floor is None:
            # The event that began this membership is not sequenced yet: its position is
            # unknown, so no resume can be proven to start after it. The client reloads
            # over REST and retries with backoff; the relay sequences it within moments.
            return self._resync(sub, ts.tpos if ts.tpos is not None else since, "membership not sequenced yet")
        sub.floor = grant.floor
        if sub.removed is not None and sub.removed > grant.floor:
            # Removed on the stream after the database answered: access ended.
            self._revoke(sub)
            metrics.RESUMES.labels("revoked").inc()
            return "revoked"
        if since < grant.floor:
            return self._resync(sub, max(grant.floor, ts.tpos or 0), "before the membership began")

        current = ts.tpos
        if current is None and since == ts.read_tpos:
            return self._go_live(sub, [], "live")
        if current is not None and since == current:
            return self._go_live(sub, [], "live")
        if current is not None and since < current:
            recent = [e for e in ts.ring if e.tpos > since]
            if recent and recent[0].tpos == since + 1 and recent[-1].tpos == current:
                return self._go_live(sub, recent, "recovered_ring")

        try:
            result = await asyncio.shield(self._read(ts, topic, since))
        except Exception:  # any database failure: the client must not be left guessing
            log.exception("catch-up read failed for %s since %s", topic, since)
            if sub.ended:
                return "ended"
            return self._resync(sub, ts.tpos if ts.tpos is not None else since, "catch-up failed")
        if sub.ended:
            return "ended"
        if ts.tpos is None and self.topics.get(topic) is ts:
            # The read started under this state and nothing was routed since: see read_tpos.
            ts.read_tpos = max(ts.read_tpos or 0, result.latest)
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

    def _read(self, ts: TopicState, topic: str, since: int) -> asyncio.Task:
        """The catch-up read of `topic` after `since`, shared by every subscriber asking
        for the same one while it runs, under the same topic state (its own task: one
        subscriber's cancellation must not cancel the others' read)."""
        key = (topic, since)
        entry = self._reads.get(key)
        if entry is not None and entry[1] is ts:
            return entry[0]
        task = asyncio.ensure_future(self.catchup.read(topic, since, self.max_recover_events + 1))
        self._reads[key] = (task, ts)
        task.add_done_callback(lambda t: self._read_done(key, t))
        return task

    def _read_done(self, key: tuple[str, int], task: asyncio.Task) -> None:
        entry = self._reads.get(key)
        if entry is not None and entry[0] is task:
            del self._reads[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter handles it (or none was left)

    def _go_live(self, sub: Subscription, events: Sequence[EventLike], outcome: str) -> str:
        if sub.sink.user_id is not None and removes(events, sub.sink.user_id):
            self._revoke(sub)
            metrics.RESUMES.labels("revoked").inc()
            return "revoked"
        if changes_hands(events):
            return self._resync(sub, events[-1].tpos, "a membership changed hands")
        if events:
            sub.sink.send_prepared(Prepared(protocol.recovered(sub.topic, [e.raw for e in events])))
            metrics.EVENTS_DELIVERED.labels("recovered").inc(len(events))
            sub.last = events[-1].tpos
        sub.live = True
        sub.buffer = []
        metrics.RESUMES.labels(outcome).inc()
        sub.sink.send_prepared(Prepared(protocol.subscribed(sub.topic, sub.last)))
        if sub.presence and self.presence is not None:
            sub.present = True  # only now: the database said this user may watch the topic
            self.presence.joined_sub(sub)
        return outcome
