"""Figures 3 and 4, and the peers' latency: commit-to-receiver latency at a paced write rate.

Ours: write+commit in PostgreSQL -> capture trigger -> relay -> broker -> sync server ->
bench.client (a separate process: websocket, xhr-streaming, eventsource or xhr-polling). Peers end at a ZeroMQ
subscriber (bench.zprobe): the seed publishes straight after commit, the polling relay
every 300 ms. Latency = receiver's arrival time - the writer's time right after COMMIT.
"""
from __future__ import annotations

import logging
import math
import signal
import time

from bench import procs
from bench.context import Ctx, int_keys, read_json
from bench.dbsetup import reset_outbox, topic_tpos
from bench.stats import join_latencies, summarize_ms
from bench.writer import paced_write, parallel_write

log = logging.getLogger(__name__)


def _summary(commits: dict, recv: dict, extra: dict) -> dict:
    lat, lost = join_latencies(commits, recv)
    return {**summarize_ms(lat), "sent": len(commits), "lost": lost, **extra}


def start_probe(ctx: Ctx, topic: str):
    out = ctx.file("probe")
    probe = procs.start("zprobe", procs.python_module("bench.zprobe", "--sub", ctx.broker_backend, "--topic", topic,
                                                    "--out", str(out)), ctx.keys.sync_env())
    probe.wait_for_line("ready", 15)
    return probe, out


def stop_probe(probe, out) -> dict:
    probe.kill(signal.SIGTERM)
    data = read_json(out, 15)
    probe.stop()
    return int_keys(data["recv"])


def ours(ctx: Ctx, *, rate: float, duration: float, transport: str = "websocket", writers: int | None = None,
         per_tx: int = 1, with_probe: bool = False) -> dict:
    """Commit-to-client latency through our whole pipeline at `rate` events/s."""
    topic = ctx.topic(0)
    total = int(rate * duration)
    if writers is None:
        # One connection commits at most a few hundred synchronous (fsynced) transactions/s
        # here; more writers let PostgreSQL group the commits.
        writers = 1 if rate <= 200 else 4
    out = ctx.file(f"client-{transport}")
    client = procs.start(f"client-{transport}", procs.python_module(
        "bench.client", "--url", ctx.sync_url, "--transport", transport, "--token", ctx.token([topic]),
        "--topic", topic, "--origin", ctx.origin, "--since", str(topic_tpos(ctx.url, topic)),
        "--count", str(total), "--timeout", str(duration + 20), "--out", str(out)))
    try:
        client.wait_for_line("ready", 20)
        probe = start_probe(ctx, topic) if with_probe else None
        if writers > 1:
            w = parallel_write(ctx.url, writers=writers, checklist_ids=[ctx.checklists[0]], rate=rate,
                               duration=duration, per_tx=per_tx)
        else:
            w = paced_write(ctx.url, checklist_id=ctx.checklists[0], rate=rate, duration=duration, per_tx=per_tx)
        client.wait_for_line("done", duration + 30)
        data = read_json(out)
        relay_hop = None
        if probe:
            time.sleep(0.5)
            relay_hop = summarize_ms(join_latencies(w["commits"], stop_probe(*probe))[0])
    finally:
        client.stop()
    result = _summary(w["commits"], int_keys(data["recv"]), {
        "rate": rate, "achieved_rate": round(w["achieved_rate"], 1), "writer_behind_s": round(w["behind_s"], 3),
        "transport": transport, "per_tx": per_tx, "client_error": data.get("error"),
    })
    if relay_hop:
        result["commit_to_broker"] = relay_hop
    if data.get("poll_seconds"):
        # xhr-polling: each poll's request-to-response time; at 1,000/s messages are
        # almost always waiting, so this is the round trip polling adds (figures.latency).
        result["poll_rtt_ms"] = summarize_ms(data["poll_seconds"])
    return result


def claim_interval_trade(ctx: Ctx, *, duration: float, rate: float = 1000) -> dict:
    """The relay's trade between latency and CPU under a steady load (docs/relay.md): the
    streaming transports at `rate` with the claim interval at its default and at 0, each
    setting on a stack of its own. Per run, besides the latency: the CPU milliseconds per
    event of the relay and of the PostgreSQL backends that stay connected (the relay's
    claims, the sync server's reads; the writers' connections come and go with the run and
    are not counted). Leaves no stack running."""
    from bench.api_bench import CpuMeter
    from bench.context import start_stack, stop_stack

    out = {}
    for label, env in (("default", {}), ("0", {"OUTBOX_RELAY_CLAIM_INTERVAL": "0"})):
        stop_stack(ctx)
        start_stack(ctx, relay_env=env)
        try:
            runs = {}
            for transport in ("websocket", "xhr-streaming", "eventsource"):
                meter = CpuMeter(ctx.url, None, {"relay": ctx.stack.pids()["relay-1"]})
                before = meter.sample()
                result = ours(ctx, rate=rate, duration=duration, transport=transport, with_probe=True)
                spent = CpuMeter.spent(before, meter.sample())
                result["cpu_ms_per_event"] = {part: round(1000 * spent.get(part, 0.0) / max(1, result["sent"]), 3)
                                              for part in ("relay", "postgres")}
                runs[transport] = result
            out[label] = runs
        finally:
            stop_stack(ctx)
    return out


def seed_direct(ctx: Ctx, *, rate: float, duration: float) -> dict:
    """The seed's publish-after-commit: commit-to-ZeroMQ-subscriber latency (no sync server hop)."""
    topic = ctx.topic(1)
    probe, probe_out = start_probe(ctx, topic)
    out = ctx.file("seed-commits")
    seed = procs.start("seed", procs.python_module(
        "bench.peers.seed_direct", "--db", ctx.url, "--pub", ctx.broker_frontend, "--checklist",
        str(ctx.checklists[1]), "--rate", str(rate), "--duration", str(duration), "--out", str(out)),
        ctx.keys.relay_env())
    try:
        seed.wait_for_line("finished", duration + 30)
        commits = int_keys(read_json(out)["commits"])
        time.sleep(0.5)
        recv = stop_probe(probe, probe_out)
    finally:
        seed.stop()
        probe.stop()
    return _summary(commits, recv, {"rate": rate, "endpoint": "ZeroMQ subscriber"})


def polling_relay(ctx: Ctx, *, rate: float, duration: float) -> dict:
    """The 300 ms `id > last_seen` poller: commit-to-ZeroMQ-subscriber latency."""
    reset_outbox(ctx.url)
    topic = ctx.topic(2)
    probe, probe_out = start_probe(ctx, topic)
    seen_out = ctx.file("poller-seen")
    poller = procs.start("poller", procs.python_module(
        "bench.peers.polling_relay", "--db", ctx.url, "--pub", ctx.broker_frontend, "--out", str(seen_out)),
        ctx.keys.relay_env())
    try:
        poller.wait_for_line("ready", 15)
        w = paced_write(ctx.url, checklist_id=ctx.checklists[2], rate=rate, duration=duration)
        time.sleep(1.0)  # three more polls
        recv = stop_probe(probe, probe_out)
    finally:
        poller.kill(signal.SIGTERM)
        poller.stop()
        probe.stop()
    return _summary(w["commits"], recv, {"rate": rate, "endpoint": "ZeroMQ subscriber", "interval_s": 0.3})


def ramp(ctx: Ctx, rates: list[float], duration: float, limit_ms: float = 100.0) -> dict:
    """Figure 4: raise the rate until p99 >= limit (or events are lost, or the writers cannot keep up)."""
    steps = []
    for rate in rates:
        # Synchronous commits cost a few ms each here: 4 writers let PostgreSQL group them,
        # and above ~500 tx/s the rows are batched into multi-row transactions.
        writers = 4
        per_tx = max(1, math.ceil(rate / 500))
        try:
            step = ours(ctx, rate=rate, duration=duration, writers=writers, per_tx=per_tx)
        except (TimeoutError, RuntimeError) as exc:
            steps.append({"rate": rate, "error": str(exc)[:300]})
            break
        step["writers"] = writers
        steps.append(step)
        log.info("ramp %s/s: achieved %s, p99 %s ms, lost %s", rate, step["achieved_rate"], step["p99_ms"],
                 step["lost"])
        if step["p99_ms"] is None or step["p99_ms"] >= limit_ms or step["lost"] or step["achieved_rate"] < 0.9 * rate:
            break
    return {"steps": steps}
