"""Commit-to-subscriber latency of this checkout's relay against another revision's, paired.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.relay_pair \
        --base REV [--rounds 4] [--seconds 10] [--rate 100]

On a shared VM the latency of one run drifts with the machine (CPU steal moves p99 by
several times between runs), so comparing a figure with last week's says little. This runs
bench.relay_bench's latency phase (a real broker and relay, 100 events/s, latency from the
writer's COMMIT to a ZeroMQ subscriber) from a git worktree of REV and from this checkout,
alternately, each with its own relay, schema and bench code, and reports both per round and
their medians. --rate sets the events/s (100 by default: an isolated event's path; above
500 the relay drains on its claim timer, OUTBOX_RELAY_CLAIM_INTERVAL). REV must have bench/relay_bench.py (any commit since the relay bench).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime.database import database_url

ROOT = Path(__file__).resolve().parent.parent

# Run inside one checkout: its own relay_bench, migrations and relay daemon.
ONE_RUN = """
import json, sys
from bench import relay_bench as r
from runtime.database import database_url
stack = r.Stack(r.make_db(database_url()))
try:
    print("RESULT " + json.dumps(r.bench_latency(stack, float(sys.argv[2]), float(sys.argv[1]))))
finally:
    stack.stop()
"""


def one_run(checkout: Path, seconds: float, rate: float, server_url: str) -> dict:
    # Both sides on one server: left to itself, the worktree would start its own embedded
    # PostgreSQL when DATABASE_URL is unset, and the runs would compare two servers.
    done = subprocess.run([sys.executable, "-c", ONE_RUN, str(seconds), str(rate)], cwd=checkout,
                          env={**os.environ, "DATABASE_URL": server_url},
                          capture_output=True, text=True, timeout=120 + seconds)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"latency run in {checkout} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one latency run")
    ap.add_argument("--rate", type=float, default=100.0, help="events/s, from one writer")
    args = ap.parse_args()
    server_url = database_url()
    with tempfile.TemporaryDirectory(prefix="relay_pair_") as tmp:
        base_dir = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_dir), args.base], cwd=ROOT, check=True)
        try:
            sides = {args.base: base_dir, "this checkout": ROOT}
            runs: dict[str, list[dict]] = {name: [] for name in sides}
            for r in range(args.rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for name in order:
                    runs[name].append(one_run(sides[name], args.seconds, args.rate, server_url))
                    got = runs[name][-1]
                    print(f"  round {r + 1} {name}: p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms,"
                          f" received {got['received']}/{got['events']}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=ROOT, check=False)
    for name, got in runs.items():
        print(f"{name}: p50 median {statistics.median(x['p50_ms'] for x in got):.2f} ms,"
              f" p99 median {statistics.median(x['p99_ms'] for x in got):.2f} ms over {len(got)} runs")
    out = ROOT / "bench" / "results" / "relay_pair.json"
    out.write_text(json.dumps({"base": args.base, "rate": args.rate, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
