"""The broker: an XSUB/XPUB proxy (ZeroMQ's forwarder device) in its own process.

Publishers (relays, replay) connect to the frontend (XSUB), subscribers to the backend
(XPUB); both sides may come and go. zmq.proxy runs in C in a worker thread, which is
the fastest forwarder pyzmq offers; the main thread only waits for SIGTERM/SIGINT and
then stops the proxy through its control socket (zmq.proxy_steerable), so exit is clean.
The stopping end of that control pipe is connected at start and closed only after the
proxy thread has ended: a TERMINATE sent on a socket closed at once with LINGER 0 can be
dropped before the proxy reads it, and stop() then waited out its whole join (issue 15:
"the broker sometimes takes 5 s to stop").
The broker holds no state: loss during its restart is repaired by subscribers from the
outbox, guided by positions and heartbeats.

Both sockets are CURVE servers, and pyzmq's ZAP handler (zmq.auth, in its own thread)
admits on each side only the public keys listed for it: publisher keys on the frontend,
subscriber keys on the backend (ZAP domains "publishers" and "subscribers"). Anonymous
peers and unknown keys never complete the handshake, so they can neither inject nor
read anything. CURVE cannot be switched off. ZAP runs once per connection, never per
message; the messages themselves are encrypted and authenticated by libzmq's I/O thread.
Both sockets enforce their ZAP domain (ZMQ_ZAP_ENFORCE_DOMAIN): were the handler gone,
libzmq would otherwise let every key in ("Stonehouse"); with it, nobody. The broker also
exits if its ZAP or proxy thread dies.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import zmq
from zmq.auth.thread import ThreadAuthenticator

from outbox_relay.config import BrokerConfig, check_broker_keys
from runtime.logs import setup_logging
from runtime.settings import exit_on_error

log = logging.getLogger(__name__)

PUBLISHERS = "publishers"    # ZAP domain of the frontend (XSUB)
SUBSCRIBERS = "subscribers"  # ZAP domain of the backend (XPUB)
REPEAT_EVERY = 60.0          # seconds between log lines about the same refused key
STOP_TIMEOUT = 5.0           # seconds stop() waits for each thread (normally milliseconds)


class AllowList:
    """A ZAP credentials provider (zmq.auth's configure_curve_callback): a fixed set of
    Z85 public keys. Says once which keys connect (rotation: is the old key still used?)
    and, at most once a minute per key, which it refused."""

    def __init__(self, role: str, keys: frozenset[str]) -> None:
        self.role = role
        self.keys = frozenset(k.encode() for k in keys)
        self.refused = 0
        self._seen: set[bytes] = set()
        self._said: dict[bytes, float] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            if key not in self._seen:
                self._seen.add(key)
                log.info("broker accepted a %s key=%s", self.role, key.decode())
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._said.get(key, -REPEAT_EVERY) >= REPEAT_EVERY:
            if len(self._said) > 10_000:
                self._said.clear()  # bounded however many keys try
            self._said[key] = now
            log.warning("broker refused a %s connection: key=%s is not an allowed %s key (refused so far: %d)",
                        domain, key.decode(errors="replace"), self.role, self.refused)
        return False


class Broker:
    def __init__(self, config: BrokerConfig, ctx: zmq.Context | None = None) -> None:
        check_broker_keys(config)  # no keys, no broker: there is no unauthenticated mode
        self.config = config
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self._control_url = f"inproc://broker-control-{id(self)}"
        self._thread: threading.Thread | None = None
        self._stopper: zmq.Socket | None = None  # our end of the proxy's control pipe
        self.auth: ThreadAuthenticator | None = None
        self.publishers = AllowList("publisher", config.publishers)
        self.subscribers = AllowList("subscriber", config.subscribers)

    def start(self) -> None:
        # The ZAP handler first: a CURVE socket bound before it exists would admit anyone.
        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("outbox_relay.broker.zap"))
        self.auth.start()
        self.auth.configure_curve_callback(PUBLISHERS, self.publishers)
        self.auth.configure_curve_callback(SUBSCRIBERS, self.subscribers)
        frontend = self.ctx.socket(zmq.XSUB)
        backend = self.ctx.socket(zmq.XPUB)
        for s, domain in ((frontend, PUBLISHERS), (backend, SUBSCRIBERS)):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.setsockopt(zmq.RCVHWM, 100_000)
            s.curve_server = True
            s.curve_secretkey = self.config.secret_key.encode()
            s.zap_domain = domain.encode()
            s.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        try:
            frontend.bind(self.config.frontend)
            backend.bind(self.config.backend)
        except zmq.ZMQError:
            frontend.close(0)
            backend.close(0)
            self.auth.stop()
            raise
        control = self.ctx.socket(zmq.PAIR)
        control.bind(self._control_url)
        self._stopper = self.ctx.socket(zmq.PAIR)
        self._stopper.connect(self._control_url)

        def serve() -> None:
            try:
                zmq.proxy_steerable(frontend, backend, None, control)
            except zmq.ContextTerminated:
                pass
            finally:
                for s in (frontend, backend, control):
                    s.close(0)

        self._thread = threading.Thread(target=serve, name="broker-proxy", daemon=True)
        self._thread.start()

    def alive(self) -> str | None:
        """None while both threads run; else which one died."""
        if self._thread is None or not self._thread.is_alive():
            return "the proxy thread died"
        if self.auth is None or not self.auth.is_alive():
            return "the ZAP (authentication) thread died"
        return None

    def stop(self) -> None:
        """Stop the proxy and the ZAP handler (each within STOP_TIMEOUT), then end the
        ZeroMQ context if the broker made it."""
        proxy_ended = True
        if self._thread is not None:
            assert self._stopper is not None
            self._stopper.send(b"TERMINATE")
            self._thread.join(STOP_TIMEOUT)
            proxy_ended = not self._thread.is_alive()
            if not proxy_ended:
                log.warning("broker: the proxy did not stop within %.0fs", STOP_TIMEOUT)
            self._thread = None
        if self._stopper is not None and proxy_ended:
            self._stopper.close(0)  # only now: the TERMINATE has been read
            self._stopper = None
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        if self._own_ctx and proxy_ended and not self.ctx.closed:
            # Every socket is closed by now (the proxy's in its thread, ZAP's by auth.stop);
            # destroy() closes any stray one rather than letting term() block on it.
            self.ctx.destroy(linger=0)


def main() -> None:
    config = exit_on_error("outbox-broker", BrokerConfig, os.environ)
    setup_logging(config.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    broker = Broker(config)
    try:
        broker.start()
    except zmq.ZMQError as exc:
        print(f"outbox-broker: cannot bind: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("broker ready frontend=%s backend=%s curve_public_key=%s publisher_keys=%d subscriber_keys=%d",
             config.frontend, config.backend, config.public_key, len(config.publishers), len(config.subscribers))
    while not stop.wait(0.5):
        if (dead := broker.alive()) is not None:
            # Never limp on: without its ZAP handler the broker admits nobody (enforced
            # domains), without its proxy it forwards nothing.
            log.error("broker stopping: %s", dead)
            print(f"outbox-broker: {dead}", file=sys.stderr)
            sys.exit(1)
    broker.stop()
    log.info("broker stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
