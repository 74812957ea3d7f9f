"""What every scenario needs: the database, the bench user and checklists, scratch files,
our stack (broker, relay, sync server) when it runs, and the run's size (quick or full)."""
from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from runtime.tokens import mint
from stack.keys import KeySet

log = logging.getLogger(__name__)

SECRET = "bench-sync-secret"


@dataclass
class Ctx:
    url: str
    user_id: int
    checklists: list[int]
    quick: bool
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))
    stack: object | None = None
    stack_log: io.TextIOBase | None = None
    sync_url: str = ""
    origin: str = ""
    broker_frontend: str = ""
    broker_backend: str = ""
    # The broker's CURVE keys for the whole run: our daemons, the probes and the peers
    # (which publish through our broker, with the relay's key) all use this set.
    keys: KeySet = field(default_factory=KeySet.generate)
    _n: int = 0

    def scale(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def file(self, stem: str) -> Path:
        self._n += 1
        return self.tmp / f"{self._n:03d}-{stem}.json"

    def token(self, topics: list[str], ttl: int = 3600) -> str:
        return mint(SECRET, user_id=self.user_id, username="bench", topics=topics, ttl=ttl)

    def topic(self, i: int = 0) -> str:
        return f"checklist:{self.checklists[i]}"


def read_json(path: Path, timeout: float = 10.0) -> dict:
    """A result file a child writes at exit (waits for it to appear)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never written")
        time.sleep(0.05)
    time.sleep(0.05)
    return json.loads(path.read_text())


def int_keys(d: dict) -> dict[int, float]:
    return {int(k): v for k, v in d.items()}


def start_broker(ctx: Ctx) -> procs.Daemon:
    """A broker of our own (the peers publish through it too, as the seed did)."""
    f, b = procs.free_port(), procs.free_port()
    ctx.broker_frontend, ctx.broker_backend = f"tcp://127.0.0.1:{f}", f"tcp://127.0.0.1:{b}"
    d = procs.start("broker", procs.python_argv("outbox_relay.broker"),
                    {"OUTBOX_BROKER_FRONTEND": ctx.broker_frontend, "OUTBOX_BROKER_BACKEND": ctx.broker_backend,
                     **ctx.keys.broker_env()})
    d.wait_for_line("broker ready", 20)
    return d


def start_stack(ctx: Ctx, extra_env: dict[str, str] | None = None) -> None:
    """Broker, relay and sync server on free ports via the stack runner's Stack class."""
    from stack.run import Stack

    portal, sync, front, back, metrics = (procs.free_port() for _ in range(5))
    env = {
        "DATABASE_URL": ctx.url, "PORTAL_PORT": str(portal), "SYNC_PORT": str(sync),
        "OUTBOX_BROKER_FRONTEND": f"tcp://127.0.0.1:{front}", "OUTBOX_BROKER_BACKEND": f"tcp://127.0.0.1:{back}",
        "OUTBOX_RELAY_METRICS_PORT": str(metrics), "SYNC_TOKEN_SECRET": SECRET,
        # Figure 7 asks for a 10k-event resume; the default cap (5000) would answer resync.
        "SYNC_MAX_RECOVER_EVENTS": "20000",
        **(extra_env or {}),
    }
    ctx.stack_log = open(ctx.tmp / "stack.log", "a", buffering=1)
    stack = Stack(env=env, services=("broker", "relay", "syncserver"), seed=False, out=ctx.stack_log, keys=ctx.keys)
    ctx.stack = stack
    stack.start()
    ctx.sync_url = stack.sync_url
    ctx.origin = f"http://127.0.0.1:{portal}"
    ctx.broker_frontend, ctx.broker_backend = env["OUTBOX_BROKER_FRONTEND"], env["OUTBOX_BROKER_BACKEND"]


def stop_stack(ctx: Ctx) -> None:
    if ctx.stack is not None:
        ctx.stack.stop()
        ctx.stack = None


def stack_tail(ctx: Ctx, lines: int = 20) -> str:
    path = ctx.tmp / "stack.log"
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""
