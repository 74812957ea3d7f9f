"""A ZeroMQ subscriber process that records when each benchmark event arrives (for peers
that end at the broker, and for our relay's commit-to-publish hop).

    python -m bench.zprobe --sub tcp://127.0.0.1:PORT --topic checklist:1 --out recv.json
Prints "ready" once subscribed; on SIGTERM writes {"recv": {seq: epoch s}, "messages": n}.
Accepts our envelope (data.text) and the peers' rows alike: both carry "b:<seq>:<ms>".
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import zmq

from runtime.curve import ClientKeys


def seq_of(doc: dict) -> int | None:
    text = (doc.get("data") or {}).get("text")
    if isinstance(text, str) and text.startswith("b:"):
        return int(text.split(":")[1])
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sub", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    stopping = False

    def on_term(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)  # never drop at the probe: losses must be the publisher's
    # A subscriber key (the sync server's, from SYNC_*): the broker admits no other.
    ClientKeys(secret=os.environ["SYNC_CURVE_SECRET_KEY"], server=os.environ["SYNC_BROKER_PUBLIC_KEY"]).apply(sock)
    sock.connect(args.sub)
    sock.setsockopt(zmq.SUBSCRIBE, args.topic.encode())
    time.sleep(0.3)  # XPUB subscription propagation (slow joiner)
    print("ready", flush=True)
    recv: dict[int, float] = {}
    messages = 0
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stopping:
        if not poller.poll(100):
            continue
        while True:
            try:
                _topic, body = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.time()
            messages += 1
            seq = seq_of(json.loads(body))
            if seq is not None and seq not in recv:
                recv[seq] = now
    with open(args.out, "w") as f:
        json.dump({"recv": recv, "messages": messages}, f)
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
