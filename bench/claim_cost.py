"""What the claim costs PostgreSQL: this checkout's schema and relay against another revision's.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.claim_cost \
        --base REV [--rows 30000] [--rounds 6] [--instructions]

The claim (outbox_claim, migrations/) is the relay's only expensive step: a drain is as fast
as it, and every event waits for one. This measures it alone, with no relay, broker or
subscriber sharing the cores, for two schemas side by side: REV's migrations/ (read with
git show) and this checkout's. Each side is claimed the way its own relay claims: with the
session setting of that revision's outbox_relay/relay.py (GENERIC_PLANS_SQL, if it has one).

Paired (always): two scratch databases on DATABASE_URL's server, measured in alternating
rounds so that a machine whose speed drifts (a shared VM) skews both alike. A round fills
`rows` rows (10 per transaction, 50 topics, as bench.relay_bench), vacuums, drains them with
outbox_claim(2000, ...) and reports rows/s, the claiming backend's CPU per row (from /proc,
when PostgreSQL runs on this machine) and WAL bytes per row; then 300 one-row claims, each
right after a one-row write (the latency path), executed with synchronous_commit off so the
disk's fsync time, the same for both, does not blur the difference. Medians over rounds.

--instructions: the same two workloads counted in CPU instructions by valgrind (callgrind),
in a throwaway cluster per side run as `postgres --single`. Instruction counts do not depend
on what else the machine does, so they settle what a noisy machine cannot. Needs initdb,
postgres (pg_config --bindir) and valgrind; as root it runs them as the postgres user.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import psycopg

from bench import pgsingle
from bench.relay_bench import fill_backlog
from outbox_relay.sequencer import CLAIM_SQL
from runtime.database import database_url, with_dbname

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "claim_cost.json"
BATCH = 2000
ONE_ROW_CLAIMS = 300
MAX_EVENT_BYTES = 1_000_000
EMIT_ONE = "SELECT outbox_emit('checklist:1', 'bench', jsonb_build_object('seq', {i}))"


# --- the two sides ------------------------------------------------------------------------

def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def side(rev: str | None) -> dict:
    """Migrations (name -> SQL) and the relay's session setup of a revision, or of this checkout."""
    # A revision with migrations/schema.sql is built from it; an older one (the numbered
    # history before the schema file) from its numbered files in order.
    if rev is None:
        names = [p.name for p in (ROOT / "migrations").glob("*.sql")]
        read = lambda name: (ROOT / "migrations" / name).read_text()  # noqa: E731
        relay = (ROOT / "outbox_relay" / "relay.py").read_text()
    else:
        names = [n.split("/")[-1] for n in _git("ls-tree", "--name-only", rev, "migrations/").split()]
        read = lambda name: _git("show", f"{rev}:migrations/{name}")  # noqa: E731
        relay = _git("show", f"{rev}:outbox_relay/relay.py")
    chosen = ["schema.sql"] if "schema.sql" in names else sorted(n for n in names if re.match(r"\d{4}_.*\.sql$", n))
    migrations = {name: read(name) for name in chosen}
    found = re.search(r'^GENERIC_PLANS_SQL = "(.*)"$', relay, re.M)
    return {"name": rev or "this checkout", "migrations": migrations, "session_sql": found.group(1) if found else None}


# --- paired wall-clock rounds ---------------------------------------------------------------

def _make_db(admin_url: str, dbname: str, s: dict) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = with_dbname(admin_url, dbname)
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in s["migrations"].values():
            conn.execute(sql)
    return url


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a local backend; None when PostgreSQL is not on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fill(url: str, rows: int) -> None:
    fill_backlog(url, rows)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE outbox")


def _claim(conn: psycopg.Connection, published: int) -> list:
    """The relay's own claim statement (outbox_relay.sequencer), as the relay calls it."""
    return conn.execute(CLAIM_SQL, (BATCH, published, MAX_EVENT_BYTES, True), prepare=True).fetchall()


def _claimer(url: str, s: dict) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    if s["session_sql"]:
        conn.execute(s["session_sql"])
    return conn


def drain_round(url: str, s: dict, rows: int) -> dict:
    _fill(url, rows)
    with _claimer(url, s) as conn:
        pid = conn.info.backend_pid
        published = conn.execute("SELECT published_pos FROM outbox_relay_state").fetchone()[0]
        lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        cpu0, t0, done = _cpu_seconds(pid), time.perf_counter(), 0
        while got := _claim(conn, published):
            done += len(got)
            published = got[-1][0]
        seconds, cpu1 = time.perf_counter() - t0, _cpu_seconds(pid)
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)).fetchone()[0]
    return {"rows": done, "rows_per_s": round(done / seconds),
            "cpu_us_per_row": round((cpu1 - cpu0) / done * 1e6, 1) if cpu0 is not None and cpu1 is not None else None,
            "wal_bytes_per_row": round(float(wal) / done)}


def one_row_round(url: str, s: dict) -> dict:
    with psycopg.connect(url, autocommit=True) as writer, _claimer(url, s) as conn:
        writer.execute("SET synchronous_commit = off")
        conn.execute("SET synchronous_commit = off")
        published = conn.execute("SELECT published_pos FROM outbox_relay_state").fetchone()[0]
        times = []
        for i in range(ONE_ROW_CLAIMS):
            writer.execute(EMIT_ONE.format(i=i))
            t0 = time.perf_counter()
            got = _claim(conn, published)
            times.append(time.perf_counter() - t0)
            published = got[-1][0]
    steady = sorted(times[20:])  # past the first plans
    return {"claim_ms_p50": round(statistics.median(steady) * 1000, 3),
            "claim_ms_p90": round(steady[int(len(steady) * 0.9)] * 1000, 3)}


def paired(sides: list[dict], rows: int, rounds: int) -> dict:
    admin = database_url()
    urls = [_make_db(admin, f"claim_cost_{i}", s) for i, s in enumerate(sides)]
    runs: list[list[dict]] = [[] for _ in sides]
    for r in range(rounds):
        order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
        for i in order:
            runs[i].append({**drain_round(urls[i], sides[i], rows), **one_row_round(urls[i], sides[i])})
            print(f"  round {r + 1} {sides[i]['name']}: {runs[i][-1]}", flush=True)
    with psycopg.connect(admin, autocommit=True) as conn:
        for i in range(len(sides)):
            conn.execute(f'DROP DATABASE IF EXISTS "claim_cost_{i}" WITH (FORCE)')
    keys = [k for k in runs[0][0] if k != "rows"]
    summary = {s["name"]: {k: statistics.median(x[k] for x in run if x[k] is not None) if run[0][k] is not None else None
                           for k in keys} for s, run in zip(sides, runs)}
    base, new = runs
    summary["new/base drain rows/s, per round"] = [round(n["rows_per_s"] / b["rows_per_s"], 2) for b, n in zip(base, new)]
    return {"rows": rows, "rounds": rounds, "median": summary}


# --- instruction counts -----------------------------------------------------------------------

def instructions(sides: list[dict], rows: int) -> dict:
    bindir = pgsingle.server_bindir()
    work = pgsingle.work_dir("claim_cost_")
    result = {}
    try:
        for i, s in enumerate(sides):
            data = work / f"side{i}"
            _prepare_cluster(bindir, work, data, s, rows)
            session = (s["session_sql"] + ";\n") if s["session_sql"] else ""

            def count(script: str, tag: str, claimed: int | None = None) -> int:
                out = pgsingle.single(bindir, pgsingle.fresh_copy(data, work / "run"), script, work / f"callgrind.{i}.{tag}")
                got = sum(int(n) for n in re.findall(r'count = "(\d+)"', out))
                if claimed is not None and got != claimed:
                    raise RuntimeError(f"{tag}: claimed {got} rows, expected {claimed}:\n{out[-2000:]}")
                return pgsingle.instructions(out)

            claims = rows // BATCH
            claim = f"SELECT count(*) FROM outbox_claim({BATCH}, 0, {MAX_EVENT_BYTES}, true);\n"
            base = count("SELECT 1;\n", "base")
            drain = count(session + claim * claims, "drain", claims * BATCH)
            # One-row claims on an empty backlog: drain first, then (write, claim) x N minus (write) x N.
            empty = f"SELECT count(*) FROM outbox_claim({rows}, 0, {MAX_EVENT_BYTES}, true);\nVACUUM ANALYZE outbox;\n"
            writes = [EMIT_ONE.format(i=k) + ";\n" for k in range(ONE_ROW_CLAIMS)]
            only_writes = count(empty + session + "".join(writes), "writes", rows)
            with_claims = count(empty + session + "".join(w + claim for w in writes), "pairs", rows + ONE_ROW_CLAIMS)
            result[s["name"]] = {"drain_instructions_per_row": round((drain - base) / (claims * BATCH)),
                                 "one_row_claim_instructions": round((with_claims - only_writes) / ONE_ROW_CLAIMS)}
            print(f"  {s['name']}: {result[s['name']]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _prepare_cluster(bindir: Path, work: Path, data: Path, s: dict, rows: int) -> None:
    """A new cluster with the side's schema and `rows` unsequenced rows, checkpointed."""

    def prepare(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for sql in s["migrations"].values():
                conn.execute(sql)
        _fill(url, rows)

    pgsingle.new_cluster(bindir, work, data, prepare)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare with (e.g. a commit before a claim change)")
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=6, help="paired rounds (0: instructions only)")
    ap.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    args = ap.parse_args()
    sides = [side(args.base), side(None)]
    print(f"claim cost: {sides[0]['name']} (base) vs {sides[1]['name']}, {args.rows} rows, {args.rounds} rounds")
    result: dict = {"base": args.base}
    if args.rounds:
        result["paired"] = paired(sides, args.rows, args.rounds)
        print(json.dumps(result["paired"]["median"], indent=1))
    if args.instructions:
        result["instructions"] = instructions(sides, 20000)
        print(json.dumps(result["instructions"], indent=1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
