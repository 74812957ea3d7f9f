"""Capture overhead benchmark: writer transactions/s into a tracked table vs an untracked twin.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.capture_bench \
        [--writers 1,8,32] [--seconds 2] [--rounds 7] [--compare REV] [--sync-off] [--armed]

The product promises that capture costs writers at most 10% of their transactions/s. This
measures exactly that, with pgbench (a C client, so the client's own cost neither hides nor
inflates the server-side difference): single-row INSERT and single-row UPDATE transactions
(autocommit) into `bench_item` (tracked by outbox_track) and `plain_item` (same columns, no
triggers), back to back in each round, together with issue 3's two reference designs
(`ref_item`: a minimal row trigger inserting the outbox row; `refn_item`: the same plus a
pg_notify per transaction), so that ours is seen next to what any outbox row costs here. The overhead reported is the median over rounds of
1 - capture/no-capture, so a machine whose speed drifts (other load) skews it little. It also
reports the capture triggers' per-row time from EXPLAIN ANALYZE of a 10,000-row INSERT ... SELECT.

Scratch databases: capture_bench gets this checkout's schema (migrations/schema.sql); with
--compare REV, capture_bench_compare gets git revision REV's (its schema file, or before the
schema file its numbered migrations: bench.claim_cost.side) and is measured in the same rounds.
The doorbell is disarmed (a relay awake under load) unless --armed (a relay asleep:
every writer NOTIFYs). The outbox is truncated before each run so its size stays the same.
Needs pgbench on PATH. JSON to bench/results/capture[_syncoff].json.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from bench import reference
from runtime.database import database_url, with_dbname

ROOT = Path(__file__).resolve().parent.parent

TABLE_DDL = ("CREATE TABLE {t} (id bigserial PRIMARY KEY, checklist_id bigint NOT NULL, text varchar(500) NOT NULL,"
             " done boolean NOT NULL DEFAULT false, position int NOT NULL DEFAULT 0, version bigint NOT NULL DEFAULT 1)")
SCRIPTS = {
    "insert": "INSERT INTO {t} (checklist_id, text) VALUES (:client_id, 'Buy milk');\n",
    # Each client flips "done" on its own row: every transaction is a real change (one event), no lock waits.
    "update": "\\set id :client_id + 1\nUPDATE {t} SET done = NOT done WHERE id = :id;\n",
}
MAX_WRITERS = 64
# plain_item: no capture. bench_item: ours (outbox_track). ref_item / refn_item: issue 3's
# reference designs (bench/reference.py), without and with a NOTIFY per transaction.
TABLES = ("plain_item", "bench_item", "ref_item", "refn_item")
VARIANTS = {"bench_item": "ours", "ref_item": "reference", "refn_item": "reference+notify"}


def make_db(admin_url: str, name: str, rev: str | None) -> str:
    """A scratch database with the outbox schema of `rev` (None: this checkout) and the tables."""
    from bench.claim_cost import side  # a revision's schema files

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in side(rev)["migrations"].values():
            conn.execute(sql)
        for t in TABLES:
            conn.execute(TABLE_DDL.format(t=t))
            conn.execute(f"INSERT INTO {t} (checklist_id, text) SELECT g, 'row ' || g FROM generate_series(1, {MAX_WRITERS}) g")
        conn.execute("SELECT outbox_track('bench_item', 'item', 'checklist_id', 'checklist')")
        conn.execute(reference.DDL)
    return url


def pgbench(url: str, script: Path, writers: int, seconds: int, sync_off: bool) -> float:
    info = psycopg.conninfo.conninfo_to_dict(url)
    env = {"PATH": "/usr/bin:/bin", "PGOPTIONS": "-c synchronous_commit=off" if sync_off else ""}
    cmd = ["pgbench", "-n", "-M", "prepared", "-T", str(seconds), "-c", str(writers), "-j", str(min(writers, 4)),
           "-f", str(script), "-h", info.get("host", "127.0.0.1"), "-p", str(info.get("port", 5432)),
           "-U", info.get("user", "postgres"), info["dbname"]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^tps = ([0-9.]+)", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip() or out.stdout.strip()}")
    return float(m.group(1))


def trigger_time_per_row(url: str, rows: int = 10_000) -> dict:
    """EXPLAIN ANALYZE of a bulk INSERT ... SELECT into the tracked table (rolled back)."""
    with psycopg.connect(url) as conn:
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred doorbell trigger shows up in the plan too
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO bench_item (checklist_id, text)"
            " SELECT g %% 50, 'Buy milk' FROM generate_series(1, %s) g", (rows,)).fetchone()[0][0]
        conn.rollback()
        plain = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO plain_item (checklist_id, text)"
            " SELECT g %% 50, 'Buy milk' FROM generate_series(1, %s) g", (rows,)).fetchone()[0][0]
        conn.rollback()
    out = {"rows": rows, "plain_insert_us_per_row": round(plain["Execution Time"] * 1000 / rows, 2),
           "tracked_insert_us_per_row": round(plan["Execution Time"] * 1000 / rows, 2)}
    for trig in plan.get("Triggers", []):
        out[f"trigger {trig['Trigger Name']} us/row"] = round(trig["Time"] * 1000 / max(trig["Calls"], 1), 2)
    return out


def measure(url: str, scripts: dict[str, Path], n: int, seconds: int, sync_off: bool) -> dict[str, float]:
    """One round: tx/s per table, back to back, so all see the same machine."""
    out = {}
    for t, script in scripts.items():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE outbox")
            if t != "bench_item":
                conn.execute("TRUNCATE ref_outbox")
            conn.execute(f"DELETE FROM {t} WHERE id > {MAX_WRITERS}")
            conn.execute(f"VACUUM {t}")
        out[t] = pgbench(url, script, n, seconds, sync_off)
    return out


def run(schemas: dict[str, str], writers: list[int], seconds: int, rounds: int, sync_off: bool,
        armed: bool) -> list[dict]:
    """Every schema (label -> url) in each round, in rotating order; the overhead is the
    median of the rounds' paired ratios, robust to a machine whose speed drifts."""
    for url in schemas.values():
        with psycopg.connect(url, autocommit=True) as conn:
            # The switch since 0004 (0008 keeps the flag in a sequence); before 0004 a table row.
            has_switch = conn.execute("SELECT to_regprocedure('outbox_set_doorbell(boolean)') IS NOT NULL").fetchone()[0]
            conn.execute("SELECT outbox_set_doorbell(%s)" if has_switch else "UPDATE outbox_doorbell SET armed = %s",
                         (armed,))
    results = []
    labels = list(schemas)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, text in SCRIPTS.items():
            scripts = {}
            for t in TABLES:
                scripts[t] = Path(tmp) / f"{kind}_{t}.sql"
                scripts[t].write_text(text.format(t=t))
            for n in writers:
                rounds_of: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
                for r in range(rounds):
                    for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                        order = list(scripts)[r % len(scripts):] + list(scripts)[:r % len(scripts)]
                        rounds_of[label].append(measure(schemas[label], {t: scripts[t] for t in order}, n,
                                                        seconds, sync_off))
                for label in labels:
                    got = rounds_of[label]
                    row = {"schema": label, "workload": kind, "writers": n,
                           "no_capture_tps": round(statistics.median(g["plain_item"] for g in got))}
                    for t, name in VARIANTS.items():
                        key = "capture" if name == "ours" else name.replace("+", "_")
                        row[f"{key}_tps"] = round(statistics.median(g[t] for g in got))
                        row[f"{key}_overhead_pct"] = round(
                            100 * statistics.median(1 - g[t] / g["plain_item"] for g in got), 1)
                    row["overhead_pct"] = row["capture_overhead_pct"]
                    row["rounds"] = [{t: round(v) for t, v in g.items()} for g in got]
                    print(f"{label:>8} {kind:>6} writers={n:>2}  no capture {row['no_capture_tps']:>6} tx/s"
                          f"  ours {row['capture_tps']:>6} ({row['overhead_pct']:>5}%)"
                          f"  reference {row['reference_tps']:>6} ({row['reference_overhead_pct']:>5}%)"
                          f"  reference+notify {row['reference_notify_tps']:>6}"
                          f" ({row['reference_notify_overhead_pct']:>5}%)", flush=True)
                    results.append(row)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writers", default="1,8,32", help="comma-separated concurrent writer counts")
    ap.add_argument("--seconds", type=int, default=2, help="length of one pgbench run")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds per measurement (median)")
    ap.add_argument("--compare", metavar="REV",
                    help="also measure git revision REV's schema, interleaved")
    ap.add_argument("--sync-off", action="store_true", help="synchronous_commit=off: CPU cost only")
    ap.add_argument("--armed", action="store_true", help="doorbell armed (relay asleep): every writer rings")
    args = ap.parse_args()
    if shutil.which("pgbench") is None:
        print("capture_bench: pgbench not found on PATH", file=sys.stderr)
        return 2
    writers = [int(x) for x in args.writers.split(",")]
    if max(writers) > MAX_WRITERS:
        print(f"capture_bench: at most {MAX_WRITERS} writers", file=sys.stderr)
        return 2
    schemas = {"head": make_db(database_url(), "capture_bench", None)}
    if args.compare:
        schemas[args.compare] = make_db(database_url(), "capture_bench_compare", args.compare)
    bulk = {}
    for label, url in schemas.items():
        bulk[label] = trigger_time_per_row(url)
        print(f"{label:>8} bulk insert of 10,000 rows:", ", ".join(f"{k} {v}" for k, v in bulk[label].items()),
              flush=True)
    results = run(schemas, writers, args.seconds, args.rounds, args.sync_off, args.armed)
    out = ROOT / "bench" / "results" / f"capture{'_syncoff' if args.sync_off else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "bulk": bulk, "writers": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
