"""What a new WAL segment costs the commits that reach it, on this PostgreSQL server.

    .venv/bin/python -m bench.wal_segments [--seconds 8] [--rate 1000] [--bytes 7000]

A commit flushes WAL; when the WAL enters a segment file that does not exist yet, the
flushing backend creates it first, and with wal_init_zero=on (PostgreSQL's default) that is
16 MB of zeros written and fsynced while every commit waits: the writers', and the relay's
claim, which every event waits for. On the development machine that is a 55-75 ms stall.
A segment recycled at a checkpoint (an old
file renamed ahead, kept while the WAL stays under min_wal_size) is there already and costs
nothing. How often a pipeline meets a new segment depends on its WAL rate: a captured event
writes about 1.3-1.5 KB of WAL in all (the row, its outbox row, the claim; pg_stat_wal over
a latency run), so 16 MB is about 12,000 events. docs/operations.md says what to set.

This measures it on DATABASE_URL's server (or the embedded one), in a scratch database,
with wal_init_zero on and off (SET in the writing session: the backend that creates a
segment is the one committing), each twice: first with every segment ahead of the WAL
used up (pg_switch_wal() until none is left, so the run creates each segment it enters),
then after a CHECKPOINT (which recycles segments ahead for the run to use). Each run is
single-row UPDATE transactions with synchronous commit, paced at --rate, each writing
--bytes of incompressible text (by default about five captured events' WAL, so that a run
of a few seconds crosses a few segments); for every segment boundary it crosses: whether
the segment's file was there before the run (recycled) or was created by it, and the
longest commit around the boundary. Needs a superuser (CHECKPOINT, pg_switch_wal,
pg_ls_waldir; the embedded server's and the development server's user is one).
Writes bench/results/wal_segments.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import psycopg

from bench.dbsetup import scratch_database
from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "wal_segments.json"
SCRATCH_DB = "bench_wal_segments"
ROWS = 20
SETTINGS = ("wal_init_zero", "wal_recycle", "min_wal_size", "max_wal_size", "wal_segment_size", "synchronous_commit",
            "checkpoint_timeout", "wal_sync_method")
UPDATE_SQL = "UPDATE wal_probe SET v = %s WHERE id = %s RETURNING pg_walfile_name(pg_current_wal_insert_lsn())"


def boundaries(files: list[str], seconds: list[float], existed: set[str]) -> list[dict]:
    """Each segment boundary in a run of commits: the segment entered, whether its file
    existed before the run, and the longest of the commits on either side of it (the one
    whose flush reached the new segment may be either: the LSN is read before the commit).

    >>> boundaries(["A", "A", "B", "B"], [0.001, 0.002, 0.060, 0.001], {"B"})
    [{'segment': 'B', 'recycled': True, 'commit_ms': 60.0}]
    """
    out = []
    for i in range(1, len(files)):
        if files[i] != files[i - 1]:
            around = seconds[max(0, i - 1):i + 2]
            out.append({"segment": files[i], "recycled": files[i] in existed,
                        "commit_ms": round(1000 * max(around), 2)})
    return out


def create_probe(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE wal_probe (id int PRIMARY KEY, v text NOT NULL)")
    conn.execute("INSERT INTO wal_probe SELECT g, '' FROM generate_series(1, %s) g", (ROWS,))


def use_up_segments_ahead(conn: psycopg.Connection) -> int:
    """Switch to a new segment until none is left ahead of the WAL; returns how many were
    used. pg_switch_wal() does nothing when no WAL was written since the last switch, so
    each switch follows a one-row write."""
    used = 0
    ahead_sql = ("SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'"
                 " AND name > pg_walfile_name(pg_current_wal_insert_lsn())")
    while conn.execute(ahead_sql).fetchone()[0] > 0:
        conn.execute("UPDATE wal_probe SET v = '' WHERE id = 1")
        conn.execute("SELECT pg_switch_wal()")
        used += 1
    return used


def measure(url: str, *, seconds: float, rate: float, size: int, init_zero: str | None) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        if init_zero:
            conn.execute(f"SET wal_init_zero = {'on' if init_zero == 'on' else 'off'}")
        conn.execute("SET synchronous_commit = on")
        settings = dict(conn.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings"
                                     " WHERE name = ANY(%s)", (list(SETTINGS),)).fetchall())
        existed = {r[0] for r in conn.execute("SELECT name FROM pg_ls_waldir()")}
        total = int(rate * seconds)
        durations: list[float] = []
        files: list[str] = []
        t0 = time.monotonic()
        for n in range(total):
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            text = os.urandom(size // 2).hex()  # incompressible: TOAST cannot shrink the WAL
            started = time.perf_counter()
            files.append(conn.execute(UPDATE_SQL, (text, n % ROWS + 1)).fetchone()[0])
            durations.append(time.perf_counter() - started)
        elapsed = time.monotonic() - t0
    crossed = boundaries(files, durations, existed)
    ms = [1000 * d for d in durations]

    def stalls(recycled: bool) -> dict:
        got = [b["commit_ms"] for b in crossed if b["recycled"] is recycled]
        median = percentile(got, 50)
        return {"n": len(got), "median_ms": round(median, 2) if got else None, "max_ms": max(got) if got else None}

    return {
        "settings": settings, "commits": total, "achieved_rate": round(total / elapsed, 1),
        "commit_p50_ms": round(percentile(ms, 50), 3), "commit_p99_ms": round(percentile(ms, 99), 3),
        "commit_max_ms": round(max(ms), 2), "boundaries": crossed,
        "created": stalls(False), "recycled": stalls(True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="commits/s, from one connection")
    ap.add_argument("--bytes", type=int, default=7000, help="WAL-sized payload per commit")
    args = ap.parse_args()
    with scratch_database(SCRATCH_DB) as url:
        runs = {}
        with psycopg.connect(url, autocommit=True) as conn:
            create_probe(conn)
        for zero in ("on", "off"):
            with psycopg.connect(url, autocommit=True) as conn:
                used = use_up_segments_ahead(conn)
            runs[f"wal_init_zero={zero}, none ahead"] = {
                **measure(url, seconds=args.seconds, rate=args.rate, size=args.bytes, init_zero=zero),
                "used_up_first": used}
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            runs[f"wal_init_zero={zero}, after a checkpoint"] = measure(
                url, seconds=args.seconds, rate=args.rate, size=args.bytes, init_zero=zero)
    print(f"settings: {next(iter(runs.values()))['settings']}")
    for label, result in runs.items():
        print(f"{label}: {result['commits']} commits at {result['achieved_rate']}/s: p50 {result['commit_p50_ms']} ms,"
              f" p99 {result['commit_p99_ms']} ms, max {result['commit_max_ms']} ms")
        for kind in ("created", "recycled"):
            s = result[kind]
            if s["n"]:
                print(f"  {s['n']} segment(s) {kind}: the longest commit at each boundary, median {s['median_ms']} ms,"
                      f" max {s['max_ms']} ms")
    OUT.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
