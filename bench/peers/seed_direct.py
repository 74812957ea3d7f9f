"""Peer: the seed's design, without an outbox. A Django-like writer saves a row, commits,
then publishes the row to ZeroMQ itself (the seed's post-save publish to the FORWARDER).

Nothing records what was published, so whatever dies between COMMIT and the send (or
with messages still queued in the ZeroMQ I/O thread) is lost for good: the fault run
kill -9s this process mid-stream and counts committed rows that never reached a subscriber.

    python -m bench.peers.seed_direct --db URL --pub tcp://127.0.0.1:PORT --checklist ID \
        --rate R --duration D --out commits.json [--start-seq N]
Prints "started" when its first row commits; writes {"commits": {seq: epoch s}} at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import psycopg
import zmq

from bench.writer import paced_write
from outbox_relay.config import relay_keys
from runtime.curve import ClientKeys

TABLE = "bench_seed_item"


def publisher(pub_url: str, checklist_id: int, curve: ClientKeys | None = None):
    """A PUB socket on our broker's frontend; the broker admits publisher keys only, so the
    peer publishes with the relay's (from OUTBOX_RELAY_* unless given)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    (curve or relay_keys(os.environ)).apply(sock)
    sock.connect(pub_url)
    topic = f"checklist:{checklist_id}".encode()

    def publish(seqs: list[int], texts: list[str]) -> None:
        for text in texts:
            sock.send_multipart([topic, json.dumps({"topic": topic.decode(), "op": "insert", "entity": "item",
                                                    "data": {"checklist_id": checklist_id, "text": text}}).encode()])
    return sock, publish


def writer_cost(url: str, *, pub_url: str | None, checklist_id: int, writers: int, duration: float,
                curve: ClientKeys | None = None) -> float:
    """Transactions/s of `writers` threads saving one row each as fast as they can, each
    publishing after its commit when pub_url is given (the seed's writer cost)."""
    counts = [0] * writers
    stop = threading.Event()
    barrier = threading.Barrier(writers + 1)

    def one(i: int) -> None:
        publish = None
        if pub_url:
            _, publish = publisher(pub_url, checklist_id, curve)
        with psycopg.connect(url) as conn:
            barrier.wait()
            n = 0
            while not stop.is_set():
                text = f"w:{i}:{n}"
                conn.execute(f"INSERT INTO {TABLE} (checklist_id, text) VALUES (%s, %s)", (checklist_id, text))
                conn.commit()
                if publish:
                    publish([n], [text])
                n += 1
            counts[i] = n

    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--pub", required=True)
    p.add_argument("--checklist", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--start-seq", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    _, publish = publisher(args.pub, args.checklist)
    time.sleep(0.3)  # PUB connect: let the connection to the broker settle (slow joiner)
    announced = False

    def after_commit(seqs: list[int], texts: list[str]) -> None:
        nonlocal announced
        publish(seqs, texts)
        if not announced:
            print("started", flush=True)
            announced = True

    result = paced_write(args.db, checklist_id=args.checklist, rate=args.rate, duration=args.duration,
                         table=TABLE, start_seq=args.start_seq, after_commit=after_commit)
    time.sleep(0.2)  # let ZeroMQ flush before the context goes away
    with open(args.out, "w") as f:
        json.dump({"commits": result["commits"], "achieved_rate": result["achieved_rate"]}, f)
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
