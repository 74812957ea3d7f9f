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
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from bench import relay_bench
from bench.claim_cost import _as_postgres, _bindir, _instructions

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # name -> (statements before the inserts, table inserted into)
    "no_capture": ("ALTER TABLE bench_item DISABLE TRIGGER outbox_capture;\n"
                   "ALTER TABLE bench_item DISABLE TRIGGER outbox_version;\n", "bench_item"),
    "ours": ("", "bench_item"),
    "reference_trigger": ("", "ref_item"),
}


def _cluster(bindir: Path, work: Path) -> Path:
    """A new cluster holding relay_bench's database (every migration, bench_item tracked)."""
    data = work / "data"
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "--locale=C.UTF-8"]),
                   check=True, capture_output=True)
    port = 22000 + os.getpid() % 20000
    ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-w"]
    subprocess.run(_as_postgres(ctl + ["-o", f"-p {port} -k {work} -c listen_addresses=''", "-l",
                                       str(work / "server.log"), "start"]), check=True, capture_output=True)
    try:
        url = relay_bench.make_db(f"postgresql://postgres@/postgres?host={work}&port={port}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT outbox_set_doorbell(false)")
            conn.execute("CHECKPOINT")
    finally:
        subprocess.run(_as_postgres(ctl + ["-m", "fast", "stop"]), check=True, capture_output=True)
    return data


def _count(bindir: Path, work: Path, data: Path, script: str) -> int:
    """Instructions of one `postgres --single` run of `script` on a fresh copy of the cluster."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(data, run, symlinks=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres", str(run)], check=True)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out",
           str(bindir / "postgres"), "--single", "-D", str(run), "-c", "fsync=off", relay_bench.DBNAME]
    done = subprocess.run(_as_postgres(cmd), input=script, capture_output=True, text=True, check=True)
    if "ERROR" in done.stderr:
        raise RuntimeError(done.stderr[-2000:])
    return _instructions(done.stdout + done.stderr)


def measure(inserts: int) -> dict:
    bindir = _bindir()
    work = Path(tempfile.mkdtemp(prefix="writer_cost_"))
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
    try:
        data = _cluster(bindir, work)
        per_tx = {}
        for name, (setup, table) in VARIANTS.items():
            # Each line of a --single script is its own transaction: one insert, one commit.
            writes = "".join(f"INSERT INTO {table} (checklist_id, text) VALUES ({k % 32}, 'x');\n"
                             for k in range(inserts))
            base = _count(bindir, work, data, "SELECT 1;\n" + setup)
            per_tx[name] = round((_count(bindir, work, data, "SELECT 1;\n" + setup + writes) - base) / inserts)
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
