"""`python -m outbox_relay` / `outbox-relay`: run one relay (leader or hot standby)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys

from outbox_relay.config import RelayConfig
from runtime.database import embedded_url
from runtime.logs import setup_logging
from runtime.settings import exit_on_error


def main() -> None:
    config = exit_on_error("outbox-relay", RelayConfig, os.environ)
    setup_logging(config.log_level)
    from outbox_relay import metrics
    from outbox_relay.relay import Relay

    try:
        metrics.serve(config.metrics_port)
    except OSError as exc:
        print(f"outbox-relay: OUTBOX_RELAY_METRICS_PORT {config.metrics_port}: {exc}", file=sys.stderr)
        sys.exit(2)
    relay = Relay(config, config.database_url or embedded_url())

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
