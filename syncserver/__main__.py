"""`python -m syncserver` / `syncserver`: configure from SYNC_* variables, serve until
SIGTERM or SIGINT, then close every session cleanly and exit 0."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys

from runtime.database import embedded_url
from runtime.settings import exit_on_error
from syncserver.config import Config

log = logging.getLogger("syncserver")


def main() -> None:
    config = exit_on_error("syncserver", Config, os.environ)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.database_url:
        config = dataclasses.replace(config, database_url=embedded_url())
    sys.exit(asyncio.run(serve(config)))


async def serve(config) -> int:
    from syncserver.app import SyncServer

    server = SyncServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await server.start()
    except OSError as exc:
        print(f"syncserver: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    print(f"syncserver ready port={port}", flush=True)
    log.info("serving SockJS at http://%s:%d/sync (transports off: %s)", config.host, port,
             ",".join(config.disabled_transports) or "none")
    code = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            failure = server.task_failure()
            if failure is not None:
                # A dead event stream would silently starve every client: stop instead.
                log.error("background task failed; stopping", exc_info=failure)
                code = 1
                break
    if code == 0:
        await server.drain()
    log.info("shutting down: closing %d connection(s)", len(server.hub.sinks))
    await server.stop()
    return code


if __name__ == "__main__":
    main()
