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
from stack.cluster import Cluster
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
    stack: Cluster | None = None   # our broker, relay and sync server, while they run
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
    """A result file a child writes at exit: waits until it is there and whole (a large
    file can be read while the child is still writing it; that read does not parse)."""
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and path.stat().st_size:
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                if time.monotonic() > deadline:
                    raise
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never written")
        time.sleep(0.05)


def int_keys(d: dict) -> dict[int, float]:
    return {int(k): v for k, v in d.items()}


def start_broker(ctx: Ctx) -> Cluster:
    """A broker of our own (the peers publish through it too, as the seed did); stop() it."""
    broker = Cluster(ctx.url, relays=0, sync_servers=0, keys=ctx.keys)
    broker.start_broker()
    ctx.broker_frontend, ctx.broker_backend = broker.frontend, broker.backend
    return broker


def start_stack(ctx: Ctx, relay_env: dict[str, str] | None = None) -> None:
    """Broker, relay ("relay-1") and sync server on free ports (stack.cluster.Cluster), all
    with their default settings but these: the relay serves its metrics (as in a
    deployment) and takes `relay_env`, and the sync server recovers up to 20k events
    (figure 7 asks for a 10k-event resume; the default cap, 5000, would answer resync).
    Their output goes to the run's stack.log."""
    ctx.stack_log = open(ctx.tmp / "stack.log", "a", buffering=1)
    stack = Cluster(ctx.url, relays=1, keys=ctx.keys, token_secret=SECRET, log_to=ctx.stack_log,
                    relay_env={"OUTBOX_RELAY_METRICS_PORT": str(procs.free_port()), **(relay_env or {})},
                    sync_env={"SYNC_MAX_RECOVER_EVENTS": "20000"})
    ctx.stack = stack
    stack.start()
    ctx.sync_url = stack.sockjs_url
    ctx.origin = stack.origin
    ctx.broker_frontend, ctx.broker_backend = stack.frontend, stack.backend


def stop_stack(ctx: Ctx) -> None:
    if ctx.stack is not None:
        ctx.stack.stop()
        ctx.stack = None


def stack_tail(ctx: Ctx, lines: int = 20) -> str:
    path = ctx.tmp / "stack.log"
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""
