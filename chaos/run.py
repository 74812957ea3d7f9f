"""`make chaos`: every fault, repeatedly, under load, against a private PostgreSQL cluster;
prints the table and writes it to bench/results/chaos.md.

    python -m chaos [--quick] [--trials N] [--only SUBSTRING] [--out PATH]

Exit code 0 when every trial lost, duplicated and reordered nothing; 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from stack.cluster import Cluster, migrate
from stack.processes import ROOT

from .checker import Totals
from .faults import FAULTS
from .postgres import PrivatePostgres
from .trial import Options, TrialResult, make_cluster, run_trial

log = logging.getLogger(__name__)

# Faults whose single trial is long by nature run fewer times.
LONG = {"slow client", "open transaction", "SIGSTOP broker"}


def table(rows: list[tuple[str, list[TrialResult]]]) -> str:
    head = ("| fault | trials | committed | missing | duplicates | reorders | mismatched | state diffs "
            "| rows out of order | resyncs | recovery max (s) | recovery mean (s) | ok |")
    lines = [head, "|" + "---|" * 13]
    for name, results in rows:
        t = Totals()
        for r in results:
            t.merge(r.totals)
        rec = [r.recovery for r in results if r.recovery is not None]
        failed_recovery = sum(1 for r in results if r.recovery is None)
        ok = all(r.ok for r in results)
        misordered = sum(r.db_misordered for r in results)
        lines.append(
            f"| {name} | {len(results)} | {t.committed} | {t.missing} | {t.duplicates} | {t.reorders} "
            f"| {t.mismatched} | {t.state_diff} | {misordered} | {t.resyncs} "
            f"| {max(rec):.2f}{' +' + str(failed_recovery) + ' timed out' if failed_recovery else ''} "
            f"| {sum(rec) / len(rec):.2f} | {'yes' if ok else 'NO'} |" if rec else
            f"| {name} | {len(results)} | {t.committed} | {t.missing} | {t.duplicates} | {t.reorders} "
            f"| {t.mismatched} | {t.state_diff} | {misordered} | {t.resyncs} | timed out | - | NO |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    opts = Options()
    if args.quick:
        opts = replace(opts, slow_seconds=8.0, open_tx_seconds=10.0, pause_seconds=4.0)
    pg = PrivatePostgres()
    cluster: Cluster | None = None
    rows: list[tuple[str, list[TrialResult]]] = []
    details: list[str] = []
    started = time.monotonic()
    try:
        dsn = pg.url("chaos")
        await asyncio.to_thread(migrate, dsn)
        cluster = await asyncio.to_thread(make_cluster(dsn).start)
        for name, fault in FAULTS.items():
            if args.only and args.only.lower() not in name.lower():
                continue
            trials = args.trials if name not in LONG else max(1, args.trials // 2)
            if name == "open transaction" and not args.quick:
                trials = 1
            results = []
            for i in range(trials):
                try:
                    r = await run_trial(cluster, name, fault, opts, pg=pg)
                except Exception as exc:  # noqa: BLE001 - a broken trial is a finding, not the end of the run
                    log.exception("trial %s #%d failed", name, i + 1)
                    r = TrialResult(fault=name, committed=0, totals=Totals(missing=-1), recovery=None,
                                    db_holes=0, notes=[f"trial crashed: {type(exc).__name__}: {exc}"])
                results.append(r)
                status = "ok" if r.ok else "FAIL"
                print(f"{name} #{i + 1}: {status} committed={r.committed} missing={r.totals.missing} "
                      f"dup={r.totals.duplicates} reorder={r.totals.reorders} mismatch={r.totals.mismatched} "
                      f"state={r.totals.state_diff} rows_out_of_order={r.db_misordered} recovery={r.recovery}",
                      flush=True)
                if r.ok and r.notes:
                    print("   " + "; ".join(r.notes)[:500], flush=True)  # what the fault measured
                if not r.ok:
                    details.append(f"- {name} #{i + 1}: " + "; ".join(r.notes + r.totals.examples)[:2000])
                    await asyncio.to_thread(_heal, cluster)
            rows.append((name, results))
    finally:
        if cluster is not None:
            if args.logs:
                print(cluster.outputs())
            cluster.stop()
        pg.cleanup()
    elapsed = time.monotonic() - started
    text = table(rows)
    command = "make chaos" + (f" ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
    report = (f"# Chaos results\n\nCommand: `{command}` ({'quick' if args.quick else 'full'} mode), "
              f"{elapsed:.0f} s on {platform.node()} ({platform.machine()}, Python {platform.python_version()}).\n"
              f"Per trial: {opts.clients} clients ({', '.join(opts.transports)}), {opts.writers} writers at "
              f"{opts.rate:g} tx/s each, {opts.warm:g} s of load before the fault and {opts.after:g} s after "
              f"the repair. Recovery = seconds from the fault until every client applied every change "
              f"committed before the repair (it includes the fault's own length: 10 s pause, 30 s slow "
              f"client, 60 s open transaction in full mode).\n\n{text}\n")
    if details:
        report += "\nFailures:\n" + "\n".join(details) + "\n"
    print("\n" + text)
    if details:
        print("\nFailures:\n" + "\n".join(details))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"\nwritten to {out}")
    return 0 if all(r.ok for _, rs in rows for r in rs) else 1


def _heal(cluster: Cluster) -> None:
    """After a failed trial, bring every process back so the next trial starts healthy."""
    if cluster.broker is None or not cluster.broker.alive():
        cluster.start_broker()
    for name, d in list(cluster.relays.items()):
        if not d.alive():
            cluster.start_relay(name)
    if cluster.sync is None or not cluster.sync.alive():
        cluster.start_sync()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per fault (the long ones run half as many)")
    parser.add_argument("--quick", action="store_true", help="shorter slow-client/open-transaction/pause faults")
    parser.add_argument("--only", help="run only faults whose name contains this")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.md"))
    parser.add_argument("--logs", action="store_true", help="print the daemons' output at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
