"""`make bench`: our pipeline's figures next to the peers', in one bounded run.

    python -m bench.run [--quick] [--only NAME,...] [--out bench/results]

Every load is loopback-only and bounded; every process started is stopped at exit.
Writes latest.json, latest.md and latest.png to --out. Exit code 0 even when a target is
missed (the table says so); 1 if the run itself failed before writing results.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

from bench import procs, report
from bench.context import Ctx, stack_tail, start_broker, start_stack, stop_stack
from bench.dbsetup import bench_url, prepare

log = logging.getLogger("bench")

OUT = Path(__file__).resolve().parent / "results"
CAVEAT = ("Measured on a shared 2-CPU machine: PostgreSQL, the daemons, the load clients and the peers all share "
          "the same 2 cores, and other engineers' test runs may have overlapped this run; treat the figures as "
          "noisy lower bounds for our components, and compare ours with the peers only within this run.")
# The last revision before issue 16's capture work: the "before" of the capture figures.
CAPTURE_BASE = "dc207c9"
# Fan-out at saturation: offered deliveries/s, stepped until a server misses (bench.fanout).
FANOUT_LEVELS = [50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 600_000]
FANOUT_LEVELS_QUICK = [50_000, 100_000, 200_000]
FANOUT_BUDGET_S = 150  # per server and size
SCALEOUT_OFFERED = 120_000  # deliveries/s offered to every balanced stack size (figure 8)
PHASES = ("capture", "relay_bench", "peers", "latency", "page", "api", "throughput", "faults", "resume", "fanout",
          "connections", "sockjs_peer", "scaleout")


class Run:
    def __init__(self, quick: bool, only: set[str] | None, merge: dict | None = None):
        self.quick = quick
        self.only = only
        self.results: dict = {"figures": {}, "errors": {}, "raw": dict((merge or {}).get("raw", {}))}
        self.raw = self.results["raw"]
        self.ctx: Ctx | None = None

    def wanted(self, phase: str) -> bool:
        return self.only is None or phase in self.only

    def phase(self, name: str, fn) -> None:
        if not self.wanted(name):
            return
        t0 = time.monotonic()
        log.info("== %s", name)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one failed phase must not lose the others' figures
            log.error("phase %s failed: %s", name, exc)
            self.results["errors"][name] = f"{type(exc).__name__}: {exc}".strip()[:600]
            self.raw.setdefault("tracebacks", {})[name] = traceback.format_exc()[-3000:]
            if self.ctx and self.ctx.stack is not None:
                self.raw.setdefault("stack_log", {})[name] = stack_tail(self.ctx, 40)
        finally:
            self.raw.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)
            log.info("   %s took %.1f s", name, time.monotonic() - t0)

    # ------------------------------------------------------------- phases

    def capture(self) -> None:
        """What capture costs a writer, in instructions (valgrind: the machine's load does not
        matter), this code against CAPTURE_BASE's when the clone has that revision."""
        import shutil
        import subprocess

        from bench import writer_cost

        if shutil.which("valgrind") is None:
            raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
        known = subprocess.run(["git", "cat-file", "-e", f"{CAPTURE_BASE}^{{commit}}"], cwd=OUT.parent.parent,
                               capture_output=True).returncode == 0
        self.raw["capture"] = writer_cost.measure(inserts=int(self.ctx.scale(2000, 300)),
                                                  rows=int(self.ctx.scale(10_000, 2000)),
                                                  base=CAPTURE_BASE if known else None)

    def relay_bench(self) -> None:
        from psycopg.conninfo import conninfo_to_dict

        from bench import relay_bench  # the relay engineer's drain and writer-overhead measurements
        from runtime.database import with_dbname

        # Its scratch database is dropped and recreated: name it after ours, never theirs.
        relay_bench.DBNAME = f"{conninfo_to_dict(self.ctx.url).get('dbname', 'bench')}_relay"
        url = relay_bench.make_db(with_dbname(self.ctx.url, "postgres"))
        stack = relay_bench.Stack(url)
        try:
            drain = relay_bench.bench_drain(stack, 20_000 if self.quick else 100_000)
            writers = relay_bench.bench_writers(stack, [1, 8, 32], self.ctx.scale(2, 1))
        finally:
            stack.stop()
        self.raw["relay_bench"] = {
            "drain": {"events_per_s": drain["drain_events_per_s"], "insert_commit_per_s": drain["insert_commit_rows_per_s"],
                      **drain},
            "writer_overhead": {str(w["writers"]): {"plain_tps": w["no_capture_tps"],
                                                    "capture_tps": w["capture_relay_running_tps"],
                                                    "loss_pct": w["capture_relay_running_loss_pct"], **w}
                                for w in writers},
        }

    def api(self) -> None:
        """Writes through the portal as deployed (gunicorn), capture on against off, beside
        the relay and sync server of the run's stack (bench.api_bench). After the peers:
        they run without our stack."""
        from bench import api_bench

        self.ensure_stack()
        self.raw["api"] = api_bench.measure(self.ctx.url, quick=self.quick, daemons=self.ctx.stack.pids())

    def peers(self) -> None:
        from bench import latency, race
        from bench.peers import seed_direct

        ctx = self.ctx
        broker = start_broker(ctx)
        try:
            dur = ctx.scale(10, 2)
            self.raw["seed_latency"] = {str(r): latency.seed_direct(ctx, rate=r, duration=dur if r <= 100 else dur / 2)
                                        for r in (100, 1000)}
            self.raw["polling_latency"] = {"100": latency.polling_relay(ctx, rate=100, duration=dur)}
            cost = {}
            for writers in (1, 8, 32):
                d = ctx.scale(2, 1)
                # Alternate and keep the best of two: a shared machine's noise only ever slows a round.
                plain = pub = 0.0
                for _ in range(2):
                    plain = max(plain, seed_direct.writer_cost(ctx.url, pub_url=None, checklist_id=ctx.checklists[1],
                                                               writers=writers, duration=d))
                    pub = max(pub, seed_direct.writer_cost(ctx.url, pub_url=ctx.broker_frontend,
                                                           checklist_id=ctx.checklists[1], writers=writers, duration=d,
                                                           curve=ctx.keys.publisher()))
                cost[str(writers)] = {"plain_tps": round(plain, 1), "publish_tps": round(pub, 1)}
            self.raw["seed_writer_cost"] = cost
            from bench import faults

            self.raw["seed_kill"] = faults.seed_kill(ctx, rounds=int(ctx.scale(3, 1)))
            self.raw["polling_race"] = race.run(ctx, who="polling_relay", writers=8, duration=ctx.scale(8, 3))
        finally:
            broker.stop()

    def ensure_stack(self) -> None:
        if self.ctx.stack is None:
            start_stack(self.ctx)

    def latency(self) -> None:
        from bench import latency

        self.ensure_stack()
        ctx = self.ctx
        out = {}
        for transport in ("websocket", "xhr-streaming", "eventsource", "xhr-polling"):
            for rate, dur in ((100, ctx.scale(20, 3)), (1000, ctx.scale(10, 2))):
                out[f"{transport}@{rate}"] = latency.ours(ctx, rate=rate, duration=dur, transport=transport,
                                                          with_probe=(transport == "websocket"))
        self.raw["latency"] = out
        self.raw["claim_interval"] = latency.claim_interval_trade(ctx, duration=ctx.scale(10, 2))

    def page(self) -> None:
        from bench import page

        # The page runs on a whole stack of its own (portal included): ours stops meanwhile,
        # so the two do not share the cores (the next phase starts it again).
        stop_stack(self.ctx)
        # eventsource: the page's own first fallback (syncclient.js); xhr-streaming: sockjs-client's.
        self.raw["page_latency"] = page.run(self.ctx.url, rates=[100, 1000],
                                            transports=["websocket", "eventsource", "xhr-streaming"],
                                            duration=self.ctx.scale(10, 3), tmp=self.ctx.tmp)

    def throughput(self) -> None:
        from bench import latency

        self.ensure_stack()
        rates = [500, 2000] if self.quick else [1000, 2500, 5000, 7500, 10000, 15000, 20000]
        self.raw["throughput"] = latency.ramp(self.ctx, rates, duration=self.ctx.scale(5, 2))

    def faults(self) -> None:
        from bench import faults, race

        self.ensure_stack()
        self.raw["ours_race"] = race.run(self.ctx, who="ours", writers=8, duration=self.ctx.scale(8, 3))
        self.raw["relay_kill"] = faults.relay_kill(self.ctx, duration=self.ctx.scale(6, 4))

    def resume(self) -> None:
        from bench import resume

        self.ensure_stack()
        self.raw["resume"] = resume.run(self.ctx, missed=10_000)

    def fanout(self) -> None:
        from bench import fanout

        self.ensure_stack()
        out = {}
        for n in self.sizes_fanout():
            out[str(n)] = fanout.ours_saturation(self.ctx, subscribers=n, levels=self.fanout_levels(),
                                                 duration=self.ctx.scale(4, 2), budget_s=FANOUT_BUDGET_S)
        self.raw["fanout_ours"] = out

    def sizes_fanout(self) -> list[int]:
        return [1000] if self.quick else [1000, 5000]

    def fanout_levels(self) -> list[float]:
        return FANOUT_LEVELS_QUICK if self.quick else FANOUT_LEVELS

    def sizes_conn(self) -> list[int]:
        from bench.connections import fd_limit

        top = max(100, fd_limit() - 1000)  # headroom for the server's other fds
        return [500, 1000] if self.quick else sorted({min(5000, top), top})

    def connections(self) -> None:
        from bench import connections

        self.ensure_stack()
        # A fresh sync server process, as the peer gets: after the fan-out phase its RSS
        # holds freed-but-kept memory that new connections would reuse, hiding their cost.
        self.ctx.stack.restart("syncserver")
        self.raw["connections_ours"] = {str(n): connections.ours(self.ctx, n) for n in self.sizes_conn()}
        self.raw["fd_limit"] = connections.fd_limit()

    def sockjs_peer(self) -> None:
        from bench import connections, fanout

        stop_stack(self.ctx)  # the peer gets the machine to itself, as ours did
        d, port = fanout.start_peer()
        try:
            first = (self.raw.get("fanout_ours", {}).get(str(self.sizes_fanout()[0])) or {}).get("steps") or [{}]
            size = int(first[0].get("bytes_per_event") or 200)  # the peer's messages as large as ours
            self.raw["fanout_peer"] = {str(n): fanout.peer_saturation(port, subscribers=n, levels=self.fanout_levels(),
                                                                      duration=self.ctx.scale(4, 2), size=size,
                                                                      budget_s=FANOUT_BUDGET_S, pid=d.pid)
                                       for n in self.sizes_fanout()}
            d.stop()
            d, port = fanout.start_peer()  # fresh process: its RSS baseline is not inflated by fan-out
            self.raw["connections_peer"] = {str(n): connections.peer(d.pid, port, n) for n in self.sizes_conn()}
        finally:
            d.stop()

    def scaleout(self) -> None:
        from bench import scaleout

        stop_stack(self.ctx)  # each size runs a balanced stack of its own
        if self.ctx.stack_log is None:
            self.ctx.stack_log = open(self.ctx.tmp / "stack.log", "a", buffering=1)
        n = 600 if self.quick else 3000
        idle = 1500 if self.quick else 6000
        self.raw["scaleout"] = {str(k): scaleout.run(self.ctx, servers=k, subscribers=n, rate=round(SCALEOUT_OFFERED / n, 1),
                                                     duration=self.ctx.scale(4, 2), idle=idle) for k in (1, 2, 3)}

    # ------------------------------------------------------------- main

    def execute(self) -> dict:
        started = datetime.datetime.now(datetime.timezone.utc)
        t0 = time.monotonic()
        load_before = procs.loadavg()
        url = bench_url()
        setup = prepare(url)
        self.ctx = Ctx(url=url, user_id=setup["user_id"], checklists=setup["checklists"], quick=self.quick)
        try:
            for name in PHASES:
                self.phase(name, getattr(self, name))
        finally:
            stop_stack(self.ctx)
            procs.stop_all()
        from bench.figures import build

        self.results["meta"] = {
            "started": started.strftime("%Y-%m-%d %H:%M UTC"), "duration_s": round(time.monotonic() - t0, 1),
            "mode": "quick" if self.quick else "full", "cpus": os.cpu_count(), "python": platform.python_version(),
            "loadavg_before": load_before, "loadavg_after": procs.loadavg(), "caveat": CAVEAT, "noisy": True,
            "fd_limit": self.raw.get("fd_limit"),
        }
        self.results["figures"] = build(self.raw, quick=self.quick)
        return self.results


def remeasured_phases(meta: dict) -> dict[str, str]:
    """phase -> when a --merge run last re-measured it, from an earlier run's meta (older
    files say it only in their "merged" sentence)."""
    if "remeasured" in meta:
        return dict(meta["remeasured"])
    found = {}
    for phases, when in re.findall(r"phases \[([^\]]*)\] re-measured at ([^;]+)", meta.get("merged", "")):
        found.update({p.strip().strip("'"): when.strip() for p in phases.split(",") if p.strip()})
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (about 2 minutes)")
    p.add_argument("--only", help=f"comma-separated phases among {','.join(PHASES)}")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--merge", action="store_true", help="with --only: keep the other phases' figures from --out/latest.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(PHASES):
        print(f"bench: unknown phase(s) {sorted(only - set(PHASES))}; known: {', '.join(PHASES)}", file=sys.stderr)
        return 2
    merge = None
    if args.merge:
        # Re-measure some phases and keep the other figures of an earlier run (recorded in meta).
        merge = json.loads((args.out / "latest.json").read_text())
    results = Run(args.quick, only, merge).execute()
    if merge:
        remeasured = {**remeasured_phases(merge["meta"]), **{p: results["meta"]["started"] for p in (only or PHASES)}}
        results["meta"]["remeasured"] = remeasured
        results["meta"]["merged"] = "; ".join(
            [f"phases {sorted(p for p in remeasured if remeasured[p] == when)} re-measured at {when}"
             for when in sorted(set(remeasured.values()), reverse=True)]
            + [f"the rest from the run of {merge['meta'].get('started')}"])
        results["meta"]["started"] = merge["meta"].get("started")
        results["meta"]["remeasure_s"] = results["meta"]["duration_s"]
        results["meta"]["duration_s"] = merge["meta"].get("duration_s")
        results["errors"] = {**{k: v for k, v in merge.get("errors", {}).items() if k not in (only or PHASES)},
                             **results["errors"]}
    paths = report.write_all(results, args.out)
    print(report.markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
