"""Browser-like sync clients that record every event they apply, per topic.

A RecordingClient behaves like portal/static/sync/syncclient.js: it reconnects with
backoff and jitter, gets a fresh token on every connect, resumes each topic since its last
tpos, drops duplicates (by tpos), applies by version, watches heartbeats, and on `resync`
reloads the topic's state from the database (the REST contract: state plus the tpos it
reflects, read in one transaction) and resubscribes since that tpos. Its TopicRecords are
what the checker compares with the database.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from stack.sockjs_client import Client, SessionClosed, make_client

from .record import Change, Key, TopicRecord

log = logging.getLogger(__name__)

TokenFn = Callable[[list[str]], str]
SnapshotFn = Callable[[str], Awaitable[tuple[int, dict[Key, tuple[int | None, Any]]]]]


@dataclass
class ClientStats:
    connects: int = 0
    disconnects: int = 0
    errors: list[dict] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    last_frame: float = 0.0


class RecordingClient:
    def __init__(self, name: str, *, sockjs_url: str, transport: str, records: dict[str, TopicRecord],
                 token_fn: TokenFn, snapshot_fn: SnapshotFn, origin: str | None = None,
                 heartbeat_timeout: float = 4.0, backoff_base: float = 0.1, backoff_max: float = 2.0):
        self.name = name
        self.sockjs_url = sockjs_url
        self.transport_kind = transport
        self.records = records
        self.token_fn = token_fn
        self.snapshot_fn = snapshot_fn
        self.origin = origin
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = ClientStats()
        self.live: set[str] = set()           # topics subscribed on the current session
        self.paused = asyncio.Event()         # set = reading; cleared = a frozen, slow client
        self.paused.set()
        self._transport: Client | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> "RecordingClient":
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        self._stopping = True
        if self._transport:
            self._transport.abort()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def kill(self) -> None:
        """Die like a closed tab: the connection drops, nothing is said."""
        self._stopping = True
        if self._transport:
            self._transport.abort()
        if self._task:
            self._task.cancel()

    def pause(self) -> None:
        """Read nothing, as a frozen tab: frames pile up in the socket and on the server."""
        self.paused.clear()
        if self._transport:
            self._transport.pause()

    def resume(self) -> None:
        self.paused.set()
        if self._transport:
            self._transport.resume()

    def drop_connection(self) -> None:
        """Lose the network for a moment: the client notices and reconnects."""
        if self._transport:
            self._transport.abort()

    def caught_up(self, latest: dict[str, int]) -> bool:
        return all(self.records[t].last_tpos >= latest.get(t, 0) for t in self.records) \
            and self.live >= set(self.records)

    # --- the loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await self._session()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except (SessionClosed, OSError, TimeoutError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ValueError) as exc:
                log.info("%s: session ended: %s", self.name, exc)
            finally:
                self.live.clear()
                if self._transport:
                    self._transport.abort()
                    self._transport = None
                self.stats.disconnects += 1
            if self._stopping:
                return
            attempt += 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** min(attempt, 6))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def _session(self) -> None:
        t = make_client(self.transport_kind, self.sockjs_url, self.origin)
        self._transport = t
        await t.open(5.0)
        self.stats.connects += 1
        self.stats.last_frame = time.monotonic()
        await t.send({"type": "auth", "token": self.token_fn(sorted(self.records))})
        authed = False
        while True:
            await self.paused.wait()
            try:
                kind, payload = await t.frames(self.heartbeat_timeout)
            except (TimeoutError, asyncio.TimeoutError):
                if not self.paused.is_set():
                    continue  # frozen on purpose: the frames wait for us
                raise SessionClosed(f"no frame for {self.heartbeat_timeout}s") from None
            self.stats.last_frame = time.monotonic()
            if kind != "messages":
                continue
            for msg in payload:
                if not isinstance(msg, dict):
                    continue
                mtype = msg.get("type")
                if mtype == "authed" and not authed:
                    authed = True
                    await t.send(*[{"type": "subscribe", "topic": topic, "since": rec.last_tpos}
                                   for topic, rec in self.records.items()])
                else:
                    await self._handle(t, msg)

    async def _handle(self, t: Client, msg: dict) -> None:
        mtype = msg.get("type")
        topic = msg.get("topic")
        rec = self.records.get(topic) if isinstance(topic, str) else None
        if mtype in ("events", "recovered") and rec is not None:
            for env in msg.get("events") or []:
                rec.receive(Change.from_envelope(env))
        elif mtype == "subscribed" and rec is not None:
            self.live.add(topic)
        elif mtype == "resync" and rec is not None:
            tpos, state = await self.snapshot_fn(topic)
            rec.resync(tpos, state)
            await t.send({"type": "subscribe", "topic": topic, "since": tpos})
        elif mtype == "revoked" and topic:
            self.stats.revoked.append(topic)
            self.live.discard(topic)
        elif mtype == "error":
            self.stats.errors.append(msg)
            if msg.get("code") in ("unauthenticated", "bad_token", "token_expired"):
                raise SessionClosed(f"auth error {msg}")


def start_clients(n: int, *, transports: list[str], topics: list[str], start_tpos: dict[str, int],
                  start_state: dict[str, dict], **kwargs) -> list[RecordingClient]:
    """n clients spread over the transports, each subscribed to every topic from start_tpos."""
    clients = []
    for i in range(n):
        records = {t: TopicRecord(t, start_tpos=start_tpos.get(t, 0), state=dict(start_state.get(t, {})))
                   for t in topics}
        kind = transports[i % len(transports)]
        clients.append(RecordingClient(f"c{i}-{kind}", transport=kind, records=records, **kwargs).start())
    return clients


def successor(dead: RecordingClient) -> RecordingClient:
    """A new client that resumes where a killed one stopped (same records, new connection)."""
    return RecordingClient(
        dead.name, sockjs_url=dead.sockjs_url, transport=dead.transport_kind, records=dead.records,
        token_fn=dead.token_fn, snapshot_fn=dead.snapshot_fn, origin=dead.origin,
        heartbeat_timeout=dead.heartbeat_timeout, backoff_base=dead.backoff_base, backoff_max=dead.backoff_max,
    ).start()
