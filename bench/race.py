"""The out-of-order commit race: concurrent writers where a transaction that got a lower
outbox id commits after one with a higher id. An `id > last_seen` poller skips the late
ones for good; our relay claims `pos IS NULL` rows and must skip none.

Both are measured the same way: which committed rows' events reached a ZeroMQ subscriber.
"""
from __future__ import annotations

import logging
import random
import signal
import threading
import time

import psycopg

from bench import procs
from bench.context import Ctx
from bench.dbsetup import reset_outbox
from bench.latency import start_probe, stop_probe

log = logging.getLogger(__name__)


def racing_writes(url: str, checklist_id: int, *, writers: int, duration: float, hold_max: float,
                  hold_share: float = 0.3, seed: int = 7) -> set[int]:
    """Writers that each hold some transactions open for up to hold_max s after the INSERT
    (so others' higher ids commit first). Returns the committed seqs."""
    committed: set[int] = set()
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def one(i: int) -> None:
        rnd = random.Random(seed + i)
        seq = 1 + i * 10_000_000
        with psycopg.connect(url) as conn:
            while time.monotonic() < deadline:
                conn.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                             " VALUES (%s, %s, false, 0, 1)", (checklist_id, f"b:{seq}:{time.time() * 1000:.3f}"))
                if rnd.random() < hold_share:
                    time.sleep(rnd.uniform(0, hold_max))
                conn.commit()
                with lock:
                    committed.add(seq)
                seq += 1
                time.sleep(rnd.uniform(0, 0.01))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return committed


def run(ctx: Ctx, *, who: str, writers: int, duration: float, hold_max: float = 0.6) -> dict:
    """who = "polling_relay" (starts the peer) or "ours" (the stack's relay must be running)."""
    reset_outbox(ctx.url)
    topic = ctx.topic(3)
    probe = start_probe(ctx, topic)
    poller = None
    if who == "polling_relay":
        poller = procs.start("poller", procs.python_module(
            "bench.peers.polling_relay", "--db", ctx.url, "--pub", ctx.broker_frontend,
            "--out", str(ctx.file("race-seen"))), ctx.keys.relay_env())
        poller.wait_for_line("ready", 15)
    try:
        committed = racing_writes(ctx.url, ctx.checklists[3], writers=writers, duration=duration, hold_max=hold_max)
        time.sleep(2.0)  # several poll intervals / relay cycles to catch up
        recv = stop_probe(*probe)
    finally:
        if poller:
            poller.kill(signal.SIGTERM)
            poller.stop()
        probe[0].stop()
    skipped = len(committed - set(recv))
    return {"who": who, "writers": writers, "duration_s": duration, "hold_max_s": hold_max,
            "committed": len(committed), "delivered": len(committed & set(recv)), "skipped": skipped}
