"""Broker forgery: whoever reaches the broker's ports on the internal network, without a
key of the right role, tries to put events on screens, make subscribers skip real commits,
and read every list's events.

The forgers publish, for each topic under test, events at the next positions (pos and
tpos the real commits are about to take, bogus content) and heartbeats far ahead; the
spies subscribe to everything. They come as anonymous sockets, with keys the broker does
not know, and with keys of the other role (a subscriber key publishing, a publisher key
reading). With CURVE on, none completes a handshake: the spies read nothing, and the
trial's checker must find every committed change exactly once, in order, with the
database's content.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import psycopg
import zmq
import zmq.asyncio

from runtime.curve import ClientKeys
from stack.keys import KeySet

log = logging.getLogger(__name__)


@dataclass
class ForgeryResult:
    sent: int = 0       # forged messages handed to ZeroMQ (what was accepted by no one)
    read: int = 0       # messages the spies received: must stay 0


def _identities(keys: KeySet) -> dict[str, tuple[ClientKeys | None, ClientKeys | None]]:
    """name -> (keys to publish with, keys to subscribe with); None: anonymous."""
    unknown = ClientKeys.generate(keys.broker_public)
    return {
        "anonymous": (None, None),
        "unknown key": (unknown, unknown),
        "other role": (keys.subscriber(), keys.publisher()),
    }


def _socket(ctx: zmq.asyncio.Context, kind: int, url: str, curve: ClientKeys | None) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    return sock


def _positions(dsn: str, topics: list[str]) -> tuple[int, dict[str, int]]:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        last = conn.execute("SELECT last_pos FROM outbox_relay_state WHERE id = 1").fetchone()[0]
        rows = dict(conn.execute("SELECT topic, tpos FROM outbox_topic WHERE topic = ANY(%s)", (topics,)).fetchall())
    return int(last), {t: int(rows.get(t, 0)) for t in topics}


def forged_messages(last_pos: int, tpos: dict[str, int], ahead: int = 5) -> list[list[bytes]]:
    """Events at the positions the next real commits take, and a heartbeat far ahead."""
    out = []
    pos = last_pos
    for topic, t in tpos.items():
        for i in range(1, ahead + 1):
            pos += 1
            env = {"v": 1, "pos": pos, "tpos": t + i, "topic": topic, "tx": "1", "entity": "item",
                   "id": "999999999", "op": "insert", "version": 1,
                   "data": {"id": 999999999, "text": "FORGED", "done": False, "position": 0},
                   "changed": [], "actor": None, "source": "api", "request_id": None,
                   "committed_at": "2030-01-01T00:00:00.000000Z", "tx_last": True}
            out.append([topic.encode(), json.dumps(env).encode()])
    out.append([b"_heartbeat", json.dumps({"v": 1, "type": "heartbeat", "pos": last_pos + 1000, "ts": "x"}).encode()])
    return out


async def forge(dsn: str, frontend: str, backend: str, keys: KeySet, topics: list[str],
                seconds: float = 3.0) -> ForgeryResult:
    """Forge and spy for `seconds` while the load runs; returns what was sent and read."""
    ctx = zmq.asyncio.Context.instance()
    result = ForgeryResult()
    pubs, subs = [], []
    for pub_keys, sub_keys in _identities(keys).values():
        pubs.append(_socket(ctx, zmq.PUB, frontend, pub_keys))
        subs.append(_socket(ctx, zmq.SUB, backend, sub_keys))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            last_pos, tpos = await asyncio.to_thread(_positions, dsn, topics)
            for frames in forged_messages(last_pos, tpos):
                for pub in pubs:
                    await pub.send_multipart(frames)
                    result.sent += 1
            for sub in subs:
                while await sub.poll(0):
                    await sub.recv_multipart()
                    result.read += 1
            await asyncio.sleep(0.05)
    finally:
        for sock in pubs + subs:
            sock.close(0)
    log.info("forgery: sent %d messages, the spies read %d", result.sent, result.read)
    return result
