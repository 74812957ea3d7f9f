"""Peer: a polling relay with an `id > last_seen` cursor, every 300 ms (what DESIGN.md says
never to do). Ids are assigned at INSERT but become visible at COMMIT, so a transaction
that got a lower id and commits after a higher one is behind the cursor: skipped forever.

    python -m bench.peers.polling_relay --db URL --pub tcp://127.0.0.1:PORT --out seen.json [--interval 0.3]
Prints "ready"; on SIGTERM writes {"seen": [outbox ids published]}.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import psycopg
import zmq

from outbox_relay.config import relay_keys

QUERY = ("SELECT id, topic, entity, entity_id, op, data FROM outbox WHERE id > %s ORDER BY id LIMIT 10000")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--pub", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.3)
    args = p.parse_args(argv)
    stopping = False

    def on_term(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    sock = zmq.Context.instance().socket(zmq.PUB)
    relay_keys(os.environ).apply(sock)  # our broker admits publisher keys only
    sock.connect(args.pub)
    seen: list[int] = []
    with psycopg.connect(args.db, autocommit=True) as conn:
        last = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        print("ready", flush=True)
        while not stopping:
            started = time.monotonic()
            rows = conn.execute(QUERY, (last,)).fetchall()
            for oid, topic, entity, entity_id, op, data in rows:
                sock.send_multipart([topic.encode(), json.dumps(
                    {"id": oid, "topic": topic, "entity": entity, "entity_id": entity_id, "op": op, "data": data}
                ).encode()])
                seen.append(oid)
            if rows:
                last = rows[-1][0]
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    time.sleep(0.2)
    with open(args.out, "w") as f:
        json.dump({"seen": seen}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
