"""A REST create through gunicorn, this checkout against another revision's portal, paired.

    .venv/bin/python -m bench.api_pair --base REV [--rounds 10] [--requests 300]

A change of a few tenths of a millisecond to a request is lost in a shared VM's drift
between two runs of `bench.run --only api`. This runs both portals at once, as the bench's
api phase runs one (gunicorn, 2 workers x 4 threads, DEBUG off), REV's from a git worktree
and this checkout's, against one scratch database on DATABASE_URL's server (or the
embedded one), and sends each in turn, round after round in alternating order, --requests
single-item creates from one keep-alive client with an API token: the p50 of each round,
their medians and the per-round ratio. The database is migrated by this checkout, with
capture on, so REV's models must agree with this checkout's. Writes
bench/results/api_pair.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.api_bench import start_portal
from bench.dbsetup import scratch_database

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "api_pair.json"
SCRATCH_DB = "bench_api_pair"
BODY = b'{"text": "bench item"}'

# Run in this checkout (manage.py): the schema, a user with a token and a checklist.
SETUP = """
import json
from django.contrib.auth import get_user_model
from portal.apitokens.services import create_token
from portal.checklists import services
user = get_user_model().objects.create_user("api-pair")
_, key = create_token(user, "pair")
print("SETUP " + json.dumps({"key": key, "checklist": services.create_checklist(user, "pair").pk}))
"""


def prepare(url: str) -> dict:
    env = {**os.environ, "DATABASE_URL": url}
    for argv in (["migrate", "--noinput", "-v0"], ["shell", "-c", SETUP]):
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"set-up failed: {done.stderr.strip()[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("SETUP "))
    return json.loads(line[len("SETUP "):])


def creates_p50_ms(port: int, setup: dict, n: int) -> float:
    """The median of n single-item creates from one keep-alive client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Token {setup['key']}", "Content-Type": "application/json"}
    took = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("POST", f"/api/checklists/{setup['checklist']}/items/", BODY, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                raise RuntimeError(f"a create answered {resp.status}")
            took.append(time.perf_counter() - started)
    finally:
        conn.close()
    return round(1000 * statistics.median(took), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=300, help="creates per portal per round")
    args = ap.parse_args()
    portals = []
    with scratch_database(SCRATCH_DB) as url, tempfile.TemporaryDirectory(prefix="api_pair_") as tmp:
        base_dir = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_dir), args.base], cwd=ROOT, check=True)
        try:
            setup = prepare(url)
            sides = {}
            for name, checkout in ((args.base, base_dir), ("this checkout", ROOT)):
                proc, port = start_portal(url, cwd=checkout)
                portals.append(proc)
                sides[name] = port
            runs: dict[str, list[float]] = {name: [] for name in sides}
            for port in sides.values():
                creates_p50_ms(port, setup, 50)  # warm: connections, imports, caches
            for r in range(args.rounds):
                for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                    runs[name].append(creates_p50_ms(sides[name], setup, args.requests))
                print(f"  round {r + 1}: " + ", ".join(f"{n} {v[-1]} ms" for n, v in runs.items()), flush=True)
        finally:
            for proc in portals:
                proc.stop()  # before the database is dropped
            subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=ROOT, check=False)
    base, ours = runs[args.base], runs["this checkout"]
    ratios = [round(o / b, 3) for o, b in zip(ours, base)]
    for name, got in runs.items():
        print(f"{name}: create p50, median over {len(got)} rounds: {statistics.median(got):.2f} ms")
    print(f"this checkout / {args.base}, per round: {ratios} (median {statistics.median(ratios):.3f})")
    OUT.write_text(json.dumps({"args": vars(args), "p50_ms": runs, "ratio_per_round": ratios,
                               "median_ms": {n: statistics.median(v) for n, v in runs.items()}}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
