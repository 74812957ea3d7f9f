"""Figure 7: a client that missed N events on its topic resubscribes `since` its last tpos;
time from sending subscribe until it has all N, and whether they came in order."""
from __future__ import annotations

import logging
import time

import psycopg

from bench import procs
from bench.context import Ctx, int_keys, read_json
from bench.dbsetup import topic_tpos

log = logging.getLogger(__name__)


def run(ctx: Ctx, missed: int = 10_000, timeout: float = 60) -> dict:
    topic = ctx.topic(2)
    since = topic_tpos(ctx.url, topic)
    with psycopg.connect(ctx.url) as conn:
        for start in range(0, missed, 1000):
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                                " VALUES (%s, %s, false, 0, 1)",
                                [(ctx.checklists[2], f"b:{s}:{time.time() * 1000:.3f}")
                                 for s in range(start + 1, min(missed, start + 1000) + 1)])
            conn.commit()
    deadline = time.monotonic() + timeout
    while topic_tpos(ctx.url, topic) < since + missed:  # the relay must have sequenced them
        if time.monotonic() > deadline:
            raise TimeoutError("relay did not sequence the missed events in time")
        time.sleep(0.1)
    out = ctx.file("client-resume")
    client = procs.start("client-resume", procs.python_module(
        "bench.client", "--url", ctx.sync_url, "--transport", "websocket", "--token", ctx.token([topic]),
        "--topic", topic, "--origin", ctx.origin, "--since", str(since), "--count", str(missed),
        "--timeout", str(timeout), "--out", str(out)))
    try:
        client.wait_for_line("done", timeout + 20)
        data = read_json(out)
    finally:
        client.stop()
    recv = int_keys(data["recv"])
    complete = len(recv) == missed
    seconds = (data["last"] - data["t_subscribe"]) if complete and data.get("last") else None
    return {"missed": missed, "received": len(recv), "in_order": bool(data.get("order_ok")) and complete,
            "seconds": round(seconds, 4) if seconds is not None else None, "kinds": data.get("kinds"),
            "error": data.get("error")}
