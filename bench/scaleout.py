"""Figure 8: fan-out of one topic through HAProxy to 1, 2 and 3 sync servers.

Each size gets a fresh stack of its own (stack.cluster.Cluster with balancer=True: broker,
relay, N sync servers, HAProxy in front), the same node websocket clients as figure 5
(bench/fanout.py) connecting to the balancer, and the same offered deliveries per second.
Deliveries/s, p99 and lost as in figure 5; `per_server` is how HAProxy spread the
connections (each server's /healthz count). Then `idle` connections are opened and held
(authenticated, subscribed, then idle, as figure 6): how many the balanced stack held, and
the sync servers' memory per connection (their RSS growth summed / held; HAProxy's apart). On one 2-CPU machine more processes share the
same cores, so this shows that the balanced topology delivers everything and how the
spread looks, not how it scales on separate machines.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.request

from bench import procs
from bench.context import SECRET, Ctx
from bench.dbsetup import topic_tpos
from bench.fanout import close_clients, collect, open_clients
from bench.writer import paced_write
from stack.cluster import Cluster

log = logging.getLogger(__name__)


def per_server(cluster: Cluster) -> dict[str, int]:
    counts = {}
    for name in cluster.syncs:
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.sync_ports[name]}/healthz", timeout=10) as r:
            counts[name] = json.loads(r.read())["connections"]
    return counts


def hold_idle(ctx: Ctx, cluster: Cluster, n: int, settle: float = 2.0) -> dict:
    pids = cluster.pids()
    syncs = [pids[name] for name in cluster.syncs]
    before = sum(procs.rss_bytes(pid) for pid in syncs)
    balancer_before = procs.rss_bytes(pids["balancer"])
    topic = ctx.topic(0)
    url = cluster.sockjs_url.replace("http://", "ws://") + "/websocket"
    clients = open_clients("idle-scale", url, n, token=ctx.token([topic]), topic=topic, origin=cluster.origin,
                           since=topic_tpos(ctx.url, topic), sample=10, timeout=300, client="ws")
    try:
        time.sleep(settle)
        after = sum(procs.rss_bytes(pid) for pid in syncs)
        balancer_after = procs.rss_bytes(pids["balancer"])
        reports = [c.ask_json("report", 60) for c in clients]
        held = sum(r["subscribed"] for r in reports)
        failed = sum(r["failed"] for r in reports)
        spread = per_server(cluster)
    finally:
        close_clients(clients)
    return {"requested": n, "held": held, "failed": failed, "per_server": spread,
            "kb_per_connection": round((after - before) / 1024 / held, 2) if held else None,
            "balancer_kb_per_connection": round((balancer_after - balancer_before) / 1024 / held, 2) if held else None}


def run(ctx: Ctx, *, servers: int, subscribers: int, rate: float, duration: float, idle: int = 0) -> dict:
    cluster = Cluster(ctx.url, relays=1, sync_servers=servers, balancer=True, keys=ctx.keys, token_secret=SECRET,
                      log_to=ctx.stack_log, relay_env={"OUTBOX_RELAY_METRICS_PORT": str(procs.free_port())})
    try:
        cluster.start()
        topic = ctx.topic(0)
        url = cluster.sockjs_url.replace("http://", "ws://") + "/websocket"
        clients = open_clients(f"scale{servers}", url, subscribers, token=ctx.token([topic]), topic=topic,
                               origin=cluster.origin, since=topic_tpos(ctx.url, topic))
        try:
            spread = per_server(cluster)
            for c in clients:
                c.send("reset")
            w = paced_write(ctx.url, checklist_id=ctx.checklists[0], rate=rate, duration=duration)
            result = collect(clients, subscribers * len(w["commits"]), settle=5)
        finally:
            close_clients(clients)
        held = hold_idle(ctx, cluster, idle) if idle else None
    finally:
        cluster.stop()
    return {"servers": servers, "subscribers": subscribers, "rate": rate,
            "offered_deliveries_per_s": subscribers * rate, "per_server": spread, "idle": held, **result}
