"""The broker: an XSUB/XPUB proxy (ZeroMQ's forwarder device) in its own process.

Publishers (relays, replay) connect to the frontend (XSUB), subscribers to the backend
(XPUB); both sides may come and go. zmq.proxy runs in C in a worker thread, which is
the fastest forwarder pyzmq offers; the main thread only waits for SIGTERM/SIGINT and
then stops the proxy through its control socket (zmq.proxy_steerable), so exit is clean.
The broker holds no state: loss during its restart is repaired by subscribers from the
outbox, guided by positions and heartbeats.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import zmq

from outbox_relay.config import BrokerConfig, ConfigError, broker_config
from outbox_relay.logs import setup_logging

log = logging.getLogger(__name__)


class Broker:
    def __init__(self, config: BrokerConfig, ctx: zmq.Context | None = None) -> None:
        self.config = config
        self.ctx = ctx or zmq.Context()
        self._control_url = f"inproc://broker-control-{id(self)}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        frontend = self.ctx.socket(zmq.XSUB)
        backend = self.ctx.socket(zmq.XPUB)
        for s in (frontend, backend):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.setsockopt(zmq.RCVHWM, 100_000)
        frontend.bind(self.config.frontend)
        backend.bind(self.config.backend)
        control = self.ctx.socket(zmq.PAIR)
        control.bind(self._control_url)

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

    def stop(self) -> None:
        if self._thread is None:
            return
        ctl = self.ctx.socket(zmq.PAIR)
        ctl.connect(self._control_url)
        ctl.send(b"TERMINATE")
        ctl.close(0)
        self._thread.join(5)
        self._thread = None


def main() -> None:
    try:
        config = broker_config(os.environ)
    except ConfigError as exc:
        print(f"outbox-broker: {exc}", file=sys.stderr)
        sys.exit(2)
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
    log.info("broker ready frontend=%s backend=%s", config.frontend, config.backend)
    while not stop.wait(0.5):
        pass
    broker.stop()
    log.info("broker stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
