"""Figure 6: idle websocket connections held by one server process, and memory per
connection (RSS delta / N), ours and sockjs-node's, with the same clients (authenticated
and subscribed, then idle)."""
from __future__ import annotations

import logging
import resource
import time

from bench import procs
from bench.context import Ctx
from bench.dbsetup import topic_tpos
from bench.fanout import close_clients, open_clients

log = logging.getLogger(__name__)


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hold(pid: int, url: str, n: int, *, token: str, topic: str, origin: str, since: int = 0,
         settle: float = 2.0) -> dict:
    before = procs.rss_bytes(pid)
    t0 = time.monotonic()
    clients = open_clients("idle", url, n, token=token, topic=topic, origin=origin, since=since, sample=10,
                           timeout=300, client="ws")
    try:
        connect_s = time.monotonic() - t0
        time.sleep(settle)
        after = procs.rss_bytes(pid)
        reports = [c.ask_json("report", 60) for c in clients]
        held = sum(r["subscribed"] for r in reports)
        failed = sum(r["failed"] for r in reports)
    finally:
        close_clients(clients)
    return {"requested": n, "held": held, "failed": failed, "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "kb_per_connection": round((after - before) / 1024 / held, 2) if held else None,
            "connect_s": round(connect_s, 1)}


def ours(ctx: Ctx, n: int) -> dict:
    pid = ctx.stack.pids()["syncserver"]
    topic = ctx.topic(0)
    return hold(pid, ctx.sync_url.replace("http://", "ws://") + "/websocket", n, token=ctx.token([topic]),
                topic=topic, origin=ctx.origin, since=topic_tpos(ctx.url, topic))


def peer(pid: int, port: int, n: int) -> dict:
    return hold(pid, f"ws://127.0.0.1:{port}/sync/websocket", n, token="peer", topic="checklist:1",
                origin="http://127.0.0.1")
