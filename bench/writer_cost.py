"""What capture costs one writer, in CPU instructions: a single-row INSERT transaction into
a tracked table, with capture, with capture switched off, and into issue 3's reference
table (a row trigger inserting the outbox row, bench/reference.py).

    .venv/bin/python -m bench.writer_cost [--inserts 2000]

Counted by valgrind (callgrind) in a throwaway cluster run as `postgres --single`, so other
load on the machine does not change the figures (they repeat to within about 0.1%); the
doorbell is disarmed (a busy relay's writers). Needs valgrind and PostgreSQL's server
binaries (pg_config --bindir); run as root, it runs PostgreSQL as the postgres user.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import psycopg

from bench import pgsingle, relay_bench

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # name -> (statements before the inserts, table inserted into)
    "no_capture": ("ALTER TABLE bench_item DISABLE TRIGGER USER;\n", "bench_item"),  # every capture trigger
    "ours": ("", "bench_item"),
    "reference_trigger": ("", "ref_item"),
}


def _prepare(url: str) -> None:
    """relay_bench's database (every migration, bench_item tracked), the doorbell disarmed."""
    with psycopg.connect(relay_bench.make_db(url), autocommit=True) as conn:
        conn.execute("SELECT outbox_set_doorbell(false)")


def _count(bindir: Path, work: Path, data: Path, script: str) -> int:
    """Instructions of one `postgres --single` run of `script` on a fresh copy of the cluster."""
    out = pgsingle.single(bindir, pgsingle.fresh_copy(data, work / "run"), script, work / "callgrind.out",
                          relay_bench.DBNAME)
    if "ERROR" in out:
        raise RuntimeError(out[-2000:])
    return pgsingle.instructions(out)


def measure(inserts: int) -> dict:
    bindir = pgsingle.server_bindir()
    work = pgsingle.work_dir("writer_cost_")
    try:
        data = work / "data"
        pgsingle.new_cluster(bindir, work, data, _prepare)
        per_tx, base = {}, {}
        for name, (setup, table) in VARIANTS.items():
            # Each line of a --single script is its own transaction: one insert, one commit.
            writes = "".join(f"INSERT INTO {table} (checklist_id, text) VALUES ({k % 32}, 'x');\n"
                             for k in range(inserts))
            if setup not in base:  # start-up and setup alone, counted once per distinct setup
                base[setup] = _count(bindir, work, data, "SELECT 1;\n" + setup)
            per_tx[name] = round((_count(bindir, work, data, "SELECT 1;\n" + setup + writes) - base[setup]) / inserts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"inserts": inserts, "instructions_per_tx": per_tx,
            "capture_instructions_per_tx": {k: v - per_tx["no_capture"] for k, v in per_tx.items() if k != "no_capture"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inserts", type=int, default=2000)
    result = measure(ap.parse_args().inserts)
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / "writer_cost.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
