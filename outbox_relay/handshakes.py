"""Watching a broker client's CURVE handshakes: say when the broker refuses us, and retry.

A refused key is otherwise silent: the socket simply never delivers. Worse, after the
broker's ZAP handler answers 400 (an unknown key), libzmq never reconnects that socket,
not even to a restarted broker that now allows the key. So every broker client (relay
publisher, replay, subscriber) keeps one of these: `poll()`, called from the client's own
loop, logs what the socket's monitor reported and, after a refusal, reconnects every
RETRY seconds until the broker accepts (the operator may be adding the key right now).
"""
from __future__ import annotations

import logging
import time

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger(__name__)

RETRY = 5.0          # seconds between reconnects after the broker refused our key
REPEAT_EVERY = 30.0  # seconds between repeats of the same complaint

_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the broker refused this key (it is not in the broker's allowed keys for this side)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "CURVE handshake failed (protocol)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "CURVE handshake failed: the peer is not the broker whose public key we were"
                                          " given, or it does not speak CURVE",
}
_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED
for _e in _FAILED:
    _EVENTS |= _e


class HandshakeWatch:
    """Monitor `sock` (already configured, before or after connect) for handshake results."""

    def __init__(self, sock: zmq.Socket, url: str, what: str, *, clock=time.monotonic) -> None:
        self.sock = sock
        self.url = url
        self.what = what
        self.clock = clock
        self.accepted = False            # the last handshake succeeded
        self.refusals = 0
        self._retry_at: float | None = None
        self._said: dict[str, float] = {}
        addr = f"inproc://handshakes-{id(self)}"
        sock.monitor(addr, _EVENTS)
        # A plain socket on the same libzmq context (inproc needs that), also when `sock`
        # is a zmq.asyncio socket: poll() never blocks and never awaits.
        self._ctx = zmq.Context.shadow(sock.context.underlying)
        self._mon = self._ctx.socket(zmq.PAIR)
        self._mon.setsockopt(zmq.LINGER, 0)
        self._mon.connect(addr)

    def poll(self) -> None:
        """Log what happened since the last call; reconnect after a refusal when due."""
        while True:
            try:
                frames = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event = parse_monitor_message(frames)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if not self.accepted and self.refusals:
                    log.info("%s: the broker accepts this key again", self.what)
                self.accepted = True
                self._retry_at = None
                continue
            self.accepted = False
            reason = _FAILED.get(event, f"handshake event {event}")
            self._say(reason)
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refusals += 1
                if self._retry_at is None:
                    self._retry_at = self.clock() + RETRY
        if self._retry_at is not None and self.clock() >= self._retry_at:
            self._retry_at = None
            try:
                self.sock.disconnect(self.url)
            except zmq.ZMQError:
                pass  # not connected any more: connect again all the same
            self.sock.connect(self.url)

    def _say(self, reason: str) -> None:
        now = self.clock()
        if now - self._said.get(reason, -REPEAT_EVERY) >= REPEAT_EVERY:
            self._said[reason] = now
            log.error("%s at %s: %s", self.what, self.url, reason)

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._mon.close(0)
