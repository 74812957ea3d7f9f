"""Figure 5: fan-out of one topic from one server process to many websocket subscribers.

At saturation (issue 17): each server gets a stepped series of offered loads (deliveries/s
= subscribers x events/s) on the same open connections, until two steps in a row miss (p99
over 50 ms, anything lost, or fewer than 90% of the offered deliveries/s); its figure is
the highest step it sustained (`sustained`), and each step says the server's CPU time per
delivery. The load clients share the machine's cores with
the server, so the ceiling they find is the pair's, the same for both servers.

The same node clients (bench/peers/sockjs_node/clients.js, a few processes holding many
connections each, "raw": a minimal websocket client that counts events without parsing
most messages, so that the clients' CPU, on the cores the server needs, is not what the
search finds) subscribe to our sync server and to the sockjs-node peer; both get the same
event rate, with messages of the same byte size. Deliveries/s = events received
by all clients / the receiving window; latency = arrival - the event's send timestamp
(ours: taken before the INSERT, so it includes commit, relay and broker; the peer's:
taken when its timer fires).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.request

from bench import procs
from bench.context import Ctx
from bench.dbsetup import topic_tpos
from bench.stats import summarize_ms
from bench.writer import paced_write

log = logging.getLogger(__name__)

PER_PROCESS = 2500  # connections per client process (each needs an fd per connection)
MIN_PROCESSES = 2


def open_clients(name: str, url: str, n: int, *, token: str, topic: str, origin: str, since: int = 0,
                 sample: int = 50000, timeout: float = 180,
                 marker: str = '"b:', client: str = "raw") -> list[procs.Process]:
    # At least two processes: one node process takes about 100-150k messages/s, less than
    # either server sends to 1,000 subscribers, and the load client must not be the ceiling
    # found. client: "raw" (fan-out) or "ws" (idle connections), see clients.js.
    k = max(MIN_PROCESSES if n >= 100 else 1, math.ceil(n / PER_PROCESS))
    clients = []
    for i in range(k):
        share = n // k + (1 if i < n % k else 0)
        clients.append(procs.node_clients(f"{name}-{i}", {"url": url, "n": share, "token": token, "topic": topic,
                                                          "origin": origin, "since": since, "sample": sample,
                                                          "marker": marker, "client": client}))
    connected = failed = 0
    for c in clients:
        parts = c.expect("connected", timeout).split()
        connected += int(parts[1])
        failed += int(parts[2])
    if failed:
        log.warning("%s: %d of %d connections failed", name, failed, n)
    return clients


def close_clients(clients: list[procs.Process]) -> None:
    for c in clients:
        try:
            c.send("close")
        except (BrokenPipeError, OSError):
            pass
    for c in clients:
        c.stop()


def collect(clients: list[procs.Process], expected: int, settle: float, max_wait: float = 30.0) -> dict:
    """Wait until every expected delivery arrived (or nothing new came for `settle` s, or
    max_wait s passed: a server that falls behind is not waited for); merge reports."""
    last_total, still_since = -1, time.monotonic()
    deadline = time.monotonic() + max_wait
    while True:
        reports = [c.ask_json("report", 60) for c in clients]
        total = sum(r["received"] for r in reports)
        if total >= expected:
            break
        if total != last_total:
            last_total, still_since = total, time.monotonic()
        elif time.monotonic() - still_since > settle or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    lat = [x / 1000.0 for r in reports for x in r["lat"]]
    first = min((r["firstRecv"] for r in reports if r["firstRecv"]), default=0)
    last = max((r["lastRecv"] for r in reports), default=0)
    window = (last - first) / 1000.0 if last > first else None
    received = sum(r["received"] for r in reports)
    return {"received": received, "expected": expected, "lost": max(0, expected - received),
            "window_s": round(window, 3) if window else None,
            "deliveries_per_s": round(received / window, 1) if window else None,
            "bytes_per_event": round(sum(r["bytes"] for r in reports) / received, 1) if received else None,
            "connected": sum(r["subscribed"] for r in reports), "failed": sum(r["failed"] for r in reports),
            **summarize_ms(lat)}


P99_LIMIT_MS = 50.0
WARMUP_S = 1.0  # an unrecorded first step on fresh connections, the same for both servers


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time a process has used (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(pid: int | None, run_step):
    """run_step, each step also saying the server's CPU microseconds per delivery: a figure
    that other load on a shared machine slows less than it slows latency."""
    def step(rate: float, seconds: float | None) -> dict:
        before = cpu_seconds(pid)
        result = run_step(rate, seconds)
        after = cpu_seconds(pid)
        if before is not None and after is not None and result.get("received"):
            result["server_cpu_s"] = round(after - before, 3)
            result["server_cpu_us_per_delivery"] = round((after - before) * 1e6 / result["received"], 2)
        return result
    return step


def step_ok(step: dict, limit_ms: float = P99_LIMIT_MS) -> bool:
    """A step is sustained: every delivery arrived, at >= 90% of the offered rate, p99 within the limit.

    >>> step_ok({"p99_ms": 20, "lost": 0, "deliveries_per_s": 95_000, "offered_deliveries_per_s": 100_000})
    True
    >>> step_ok({"p99_ms": 60, "lost": 0, "deliveries_per_s": 95_000, "offered_deliveries_per_s": 100_000})
    False
    """
    p99, delivered = step.get("p99_ms"), step.get("deliveries_per_s")
    return (p99 is not None and p99 <= limit_ms and not step.get("lost") and not step.get("error")
            and delivered is not None and delivered >= 0.9 * step["offered_deliveries_per_s"])


def sustained(steps: list[dict], limit_ms: float = P99_LIMIT_MS) -> dict | None:
    """The sustained step with the most deliveries/s, or None."""
    return max((s for s in steps if step_ok(s, limit_ms)), key=lambda s: s["deliveries_per_s"], default=None)


def between(steps: list[dict], limit_ms: float = P99_LIMIT_MS) -> float | None:
    """The next level to try: halfway between the best sustained step and the lowest level
    above it that missed, to the nearest thousand; None when there is no such gap left.

    >>> ok = {"p99_ms": 20, "lost": 0, "deliveries_per_s": 50_000, "offered_deliveries_per_s": 50_000}
    >>> miss = {"p99_ms": 90, "lost": 0, "deliveries_per_s": 99_000, "offered_deliveries_per_s": 100_000}
    >>> between([ok, miss])
    75000.0
    >>> between([miss]) is None, between([ok]) is None
    (True, True)
    """
    best = sustained(steps, limit_ms)
    if best is None:
        return None
    lo = best["offered_deliveries_per_s"]
    hi = min((s["offered_deliveries_per_s"] for s in steps if s["offered_deliveries_per_s"] > lo), default=None)
    if hi is None:
        return None
    mid = round((lo + hi) / 2, -3)
    return float(mid) if lo < mid < hi else None


def search(run_step, subscribers: int, levels: list[float], budget_s: float, misses: int = 2,
           warmup: float = 0.0, refine: int = 2) -> dict:
    """Offer each level (deliveries/s) in turn through run_step(rate) until `misses` steps in a
    row miss (one slow moment of a shared machine does not end the search) or the time
    budget is spent; then, `refine` times, the level halfway between the best sustained step
    and the next one up that missed (`between`: levels a factor of 1.5-2 apart would
    otherwise hide a ceiling between them). {"steps": [...] by level, "best": the sustained
    step or None}. run_step(rate, duration) runs one step; with `warmup` s, a first step at
    the lowest level goes unrecorded."""
    steps, started, missed = [], time.monotonic(), 0
    if warmup and levels:
        # Connections just opened: let the first collections and caches settle, unrecorded.
        try:
            run_step(round(levels[0] / subscribers, 2), warmup)
        except (TimeoutError, RuntimeError, OSError) as exc:
            log.warning("fan-out warm-up failed: %s", exc)

    def offer(level: float) -> bool:
        rate = round(level / subscribers, 2)
        try:
            step = run_step(rate, None)
        except (TimeoutError, RuntimeError, OSError) as exc:
            steps.append({"offered_deliveries_per_s": level, "rate": rate, "error": str(exc)[:300]})
            return False
        step["offered_deliveries_per_s"] = level
        steps.append(step)
        log.info("fan-out %d subs, offered %d/s: delivered %s/s, p99 %s ms, lost %s", subscribers, level,
                 step.get("deliveries_per_s"), step.get("p99_ms"), step.get("lost"))
        return True

    for level in levels:
        if time.monotonic() - started > budget_s or not offer(level):
            break
        missed = 0 if step_ok(steps[-1]) else missed + 1
        if missed >= misses:
            break
    for _ in range(refine):
        level = between(steps)
        if level is None or time.monotonic() - started > budget_s or not offer(level):
            break
    steps.sort(key=lambda s: s["offered_deliveries_per_s"])
    return {"subscribers": subscribers, "steps": steps, "best": sustained(steps)}


def ours_saturation(ctx: Ctx, *, subscribers: int, levels: list[float], duration: float, budget_s: float) -> dict:
    """Our sync server: the same subscribers through every step; rows written at each rate."""
    topic = ctx.topic(0)
    url = ctx.sync_url.replace("http://", "ws://") + "/websocket"
    clients = open_clients("fan-ours", url, subscribers, token=ctx.token([topic]), topic=topic, origin=ctx.origin,
                           since=topic_tpos(ctx.url, topic))

    def run_step(rate: float, seconds: float | None) -> dict:
        for c in clients:
            c.send("reset")
        w = paced_write(ctx.url, checklist_id=ctx.checklists[0], rate=rate, duration=seconds or duration,
                        synchronous_commit=False)
        result = collect(clients, subscribers * len(w["commits"]), settle=3, max_wait=duration + 10)
        return {"rate": rate, "achieved_rate": round(w["achieved_rate"], 1), **result}

    try:
        return search(with_cpu(ctx.stack.pids().get("syncserver"), run_step), subscribers, levels, budget_s,
                      warmup=WARMUP_S)
    finally:
        close_clients(clients)


def peer_saturation(port: int, *, subscribers: int, levels: list[float], duration: float, size: int,
                    budget_s: float, pid: int | None = None) -> dict:
    topic = "checklist:1"
    clients = open_clients("fan-peer", f"ws://127.0.0.1:{port}/sync/websocket", subscribers, token="peer",
                           topic=topic, origin="http://127.0.0.1", marker='"t":')

    def run_step(rate: float, seconds: float | None) -> dict:
        for c in clients:
            c.send("reset")
        d = seconds or duration
        req = urllib.request.Request(f"http://127.0.0.1:{port}/fire?rate={rate}&duration={d}&size={size}"
                                     f"&topic={topic}", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        time.sleep(d)
        result = collect(clients, subscribers * int(round(rate * d)), settle=3, max_wait=10)
        return {"rate": rate, "message_bytes": size, **result}

    try:
        return search(with_cpu(pid, run_step), subscribers, levels, budget_s, warmup=WARMUP_S)
    finally:
        close_clients(clients)


def start_peer() -> tuple[procs.Process, int]:
    port = procs.free_port()
    d = procs.start("sockjs-node", ["node", str(procs.NODE_DIR / "server.js"), str(port)])
    d.wait_for_line("ready", 20)
    return d, port


def peer_stats(port: int) -> dict:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10))
