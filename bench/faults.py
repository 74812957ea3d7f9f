"""The fault run: kill -9 the publisher mid-stream and count committed rows never delivered.

Seed design: the writer process is the publisher; whatever it committed but had not yet
handed to ZeroMQ (or that sat in ZeroMQ's queue) is gone. Ours: kill -9 the relay while
writers keep committing, restart it; the client behind the sync server must get every row.
"""
from __future__ import annotations

import logging
import signal
import time

import psycopg

from bench import procs
from bench.context import Ctx, int_keys, read_json
from bench.dbsetup import reset_outbox, topic_tpos
from bench.latency import start_probe, stop_probe
from bench.writer import paced_write

log = logging.getLogger(__name__)


def seed_kill(ctx: Ctx, *, rounds: int, rate: float = 2000, kill_after: float = 1.0) -> dict:
    """kill -9 the seed's writer/publisher `rounds` times; count committed-but-never-published rows."""
    total_committed = total_lost = 0
    per_round = []
    for r in range(rounds):
        reset_outbox(ctx.url)
        probe = start_probe(ctx, ctx.topic(1))
        seed = procs.start("seed", procs.python_module(
            "bench.peers.seed_direct", "--db", ctx.url, "--pub", ctx.broker_frontend, "--checklist",
            str(ctx.checklists[1]), "--rate", str(rate), "--duration", "30", "--out", str(ctx.file("seed-kill"))),
            ctx.keys.relay_env())
        try:
            seed.wait_for_line("started", 20)
            time.sleep(kill_after + 0.137 * r)
            seed.kill(signal.SIGKILL)
            seed.proc.wait(5)
            time.sleep(0.5)
            recv = stop_probe(*probe)
        finally:
            seed.stop()
            probe[0].stop()
        with psycopg.connect(ctx.url) as conn:
            texts = [t for (t,) in conn.execute("SELECT text FROM bench_seed_item WHERE text LIKE 'b:%%'")]
        committed = {int(t.split(":")[1]) for t in texts}
        lost = len(committed - set(recv))
        per_round.append({"committed": len(committed), "lost": lost})
        total_committed += len(committed)
        total_lost += lost
    return {"rounds": per_round, "committed": total_committed, "lost": total_lost, "rate": rate}


def relay_kill(ctx: Ctx, *, rate: float = 1000, duration: float = 6.0, kill_at: float = 1.5,
               down_for: float = 1.0) -> dict:
    """kill -9 our relay mid-stream, restart it; count committed rows the websocket client never got."""
    import threading

    topic = ctx.topic(1)
    total = int(rate * duration)
    out = ctx.file("client-fault")
    client = procs.start("client-fault", procs.python_module(
        "bench.client", "--url", ctx.sync_url, "--transport", "websocket", "--token", ctx.token([topic]),
        "--topic", topic, "--origin", ctx.origin, "--since", str(topic_tpos(ctx.url, topic)),
        "--count", str(total), "--timeout", str(duration + 40), "--out", str(out)))
    events: list[str] = []
    written: dict = {}

    def writer() -> None:
        written.update(paced_write(ctx.url, checklist_id=ctx.checklists[1], rate=rate, duration=duration))

    try:
        client.wait_for_line("ready", 20)
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(kill_at)
        ctx.stack.kill("relay-1")
        events.append(f"killed relay (SIGKILL) at {kill_at}s")
        time.sleep(down_for)
        ctx.stack.restart("relay-1")
        events.append(f"relay restarted after {down_for}s")
        t.join(duration + 60)
        w = written
        client.wait_for_line("done", 60)
        data = read_json(out)
    finally:
        client.stop()
    recv = int_keys(data["recv"])
    lost = len(set(w["commits"]) - set(recv))
    return {"committed": len(w["commits"]), "lost": lost, "in_order": data.get("order_ok"),
            "events": events, "client_error": data.get("error"), "rate": rate}
