"""What capture costs a writer, in CPU instructions: a single-row INSERT transaction into a
tracked table, with capture, with capture switched off, and into issue 3's reference table
(a row trigger inserting the outbox row, bench/reference.py); and per row of one 10,000-row
INSERT and UPDATE statement (multi-row writers: bulk_create, QuerySet.update, raw SQL).
With --base REV, the same for the capture of an older revision (built from its schema
files by git show, in a database of its own in the same cluster): before and after.

    .venv/bin/python -m bench.writer_cost [--inserts 2000] [--rows 10000] [--base REV]

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
from runtime.database import with_dbname

ROOT = Path(__file__).resolve().parent.parent
BASE_DB = "writer_cost_base"
# name -> (statements before the writes, table written to, database)
VARIANTS = {
    "no_capture": ("ALTER TABLE bench_item DISABLE TRIGGER USER;\n", "bench_item", relay_bench.DBNAME),
    "ours": ("", "bench_item", relay_bench.DBNAME),
    "reference_trigger": ("", "ref_item", relay_bench.DBNAME),
}
BASE_VARIANT = ("", "bench_item", BASE_DB)  # "ours_before", with --base


def _prepare(url: str, base: dict | None) -> None:
    """relay_bench's database (the schema as it stands, bench_item tracked) and, with a
    base, one built from that revision's schema files; the doorbell disarmed in both."""
    with psycopg.connect(relay_bench.make_db(url), autocommit=True) as conn:
        conn.execute("SELECT outbox_set_doorbell(false)")
    if base is None:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{BASE_DB}"')
    with psycopg.connect(with_dbname(url, BASE_DB), autocommit=True) as conn:
        for sql in base["migrations"].values():
            conn.execute(sql)
        conn.execute("CREATE TABLE bench_item (id bigserial PRIMARY KEY, checklist_id int NOT NULL,"
                     " text text NOT NULL, version bigint NOT NULL DEFAULT 0)")
        conn.execute("SELECT outbox_track('bench_item', 'item', 'checklist_id', 'checklist')")
        conn.execute("SELECT outbox_set_doorbell(false)")


def _count(bindir: Path, work: Path, data: Path, script: str, dbname: str) -> int:
    """Instructions of one `postgres --single` run of `script` on a fresh copy of the cluster."""
    out = pgsingle.single(bindir, pgsingle.fresh_copy(data, work / "run"), script, work / "callgrind.out", dbname)
    if "ERROR" in out:
        raise RuntimeError(out[-2000:])
    return pgsingle.instructions(out)


def measure(inserts: int, rows: int = 10_000, base: str | None = None) -> dict:
    """Instructions per single-row insert transaction, and per row of a `rows`-row INSERT and
    UPDATE, for each variant; the capture's share is the difference with no_capture."""
    from bench.claim_cost import side  # a revision's schema files

    variants = dict(VARIANTS)
    if base:
        variants["ours_before"] = BASE_VARIANT
    bindir = pgsingle.server_bindir()
    work = pgsingle.work_dir("writer_cost_")
    try:
        data = work / "data"
        base_side = side(base) if base else None
        pgsingle.new_cluster(bindir, work, data, lambda url: _prepare(url, base_side))
        per_tx, bulk_insert, bulk_update, start = {}, {}, {}, {}
        for name, (setup, table, db) in variants.items():
            key = (setup, db)
            if key not in start:  # start-up and setup alone, counted once per distinct setup
                start[key] = _count(bindir, work, data, "SELECT 1;\n" + setup, db)
            # Each line of a --single script is its own transaction: one insert, one commit.
            writes = "".join(f"INSERT INTO {table} (checklist_id, text) VALUES ({k % 32}, 'x');\n"
                             for k in range(inserts))
            per_tx[name] = round((_count(bindir, work, data, "SELECT 1;\n" + setup + writes, db) - start[key]) / inserts)
            insert = (f"INSERT INTO {table} (checklist_id, text) SELECT g % 32, 'x' FROM generate_series(1, {rows}) g;\n")
            update = f"UPDATE {table} SET text = text || 'y';\n"
            inserted = _count(bindir, work, data, "SELECT 1;\n" + setup + insert, db)
            updated = _count(bindir, work, data, "SELECT 1;\n" + setup + insert + update, db)
            bulk_insert[name] = round((inserted - start[key]) / rows)
            bulk_update[name] = round((updated - inserted) / rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def added(d: dict) -> dict:
        return {k: v - d["no_capture"] for k, v in d.items() if k != "no_capture"}

    return {"inserts": inserts, "rows": rows, "base": base, "instructions_per_tx": per_tx,
            "capture_instructions_per_tx": added(per_tx),
            "bulk_insert_per_row": bulk_insert, "bulk_update_per_row": bulk_update}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inserts", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=10_000, help="rows of the multi-row INSERT and UPDATE")
    ap.add_argument("--base", help="git revision whose capture to measure too (before)")
    args = ap.parse_args()
    result = measure(args.inserts, args.rows, args.base)
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / "writer_cost.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
