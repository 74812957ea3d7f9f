"""What one doorbell ring costs the relay's process: the listener's read and the wait it wakes.

    .venv/bin/python -m bench.listener_cost [--base REV] [--rings 4000] [--rate 1000] [--rounds 3]

A quiet relay claims each ring (docs/relay.md), so every event it carries at 200-500
events/s pays one wake-up on top of its claim. This measures that wake-up alone: a separate
process NOTIFYs `outbox` --rate times a second (one transaction each, as ringing writers
do), and this process runs outbox_relay.listener.Listener as the relay does, waiting with
Listener.wait() for each ring; the figure is this process's CPU time per ring
(time.process_time, so what other processes do on the machine counts little). With --base,
REV's outbox_relay/listener.py (read with git show) is measured in the same run, rounds
alternating. Needs DATABASE_URL's server (or the embedded one); writes
bench/results/listener_cost.json.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.database import database_url

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "listener_cost.json"
LISTENER = "outbox_relay/listener.py"

# Run as its own process: the rings must not cost the measured process anything.
RINGER = """
import sys, time, psycopg
url, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with psycopg.connect(url, autocommit=True) as conn:
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        conn.execute("NOTIFY outbox")
"""


def load(rev: str | None, tmp: Path):
    """The Listener class of a revision (None: this checkout)."""
    if rev is None:
        from outbox_relay.listener import Listener
        return Listener
    path = tmp / f"listener_{rev}.py"
    path.write_text(subprocess.run(["git", "show", f"{rev}:{LISTENER}"], cwd=ROOT, check=True,
                                   capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location(f"listener_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Listener


async def one_round(listener_class, url: str, rings: int, rate: float) -> float:
    """CPU microseconds of this process per ring, waiting for `rings` rings."""
    listener = listener_class(url, {})
    stop = asyncio.Event()
    await listener.start()
    try:
        ringer = await asyncio.create_subprocess_exec(sys.executable, "-c", RINGER, url, str(rings), str(rate))
        started = time.process_time()
        while listener.rings < rings:
            if await listener.wait(5.0, stop) == "listener-lost":
                raise RuntimeError(f"the listener's connection was lost: {listener.error()}")
        spent = time.process_time() - started
        await ringer.wait()
    finally:
        await listener.close()
    return 1e6 * spent / rings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="git revision to compare with")
    ap.add_argument("--rings", type=int, default=4000)
    ap.add_argument("--rate", type=float, default=1000.0, help="rings/s")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    url = database_url()
    with tempfile.TemporaryDirectory(prefix="listener_cost_") as tmp:
        sides = {"this checkout": load(None, Path(tmp))}
        if args.base:
            sides[args.base] = load(args.base, Path(tmp))
        runs: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.rounds):
            for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                runs[name].append(round(asyncio.run(one_round(sides[name], url, args.rings, args.rate)), 1))
                print(f"  round {r + 1} {name}: {runs[name][-1]} us of CPU per ring", flush=True)
    medians = {name: statistics.median(got) for name, got in runs.items()}
    for name, value in medians.items():
        print(f"{name}: median {value:.1f} us of CPU per ring over {len(runs[name])} rounds")
    OUT.write_text(json.dumps({"args": vars(args), "us_per_ring": runs, "median": medians}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
