"""`python -m outbox_relay` / `outbox-relay`: run one relay (leader or hot standby)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys

from outbox_relay.config import ConfigError, relay_config
from outbox_relay.logs import setup_logging


def main() -> None:
    try:
        config = relay_config(os.environ)
    except ConfigError as exc:
        print(f"outbox-relay: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(config.log_level)
    from stack.database import database_url, url_problem

    from outbox_relay import metrics
    from outbox_relay.relay import Relay

    try:
        metrics.serve(config.metrics_port)
    except OSError as exc:
        print(f"outbox-relay: OUTBOX_RELAY_METRICS_PORT {config.metrics_port}: {exc}", file=sys.stderr)
        sys.exit(2)
    dsn = database_url()
    if problem := url_problem(dsn):
        print(f"outbox-relay: {problem}", file=sys.stderr)
        sys.exit(2)
    relay = Relay(config, dsn)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await relay.run(stop)

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
