"""What the sync authority's bookkeeping costs a membership write, in CPU instructions: a
single-row INSERT into checklists_membership with the sync_membership_start triggers
(portal/checklists/sql/schema.sql) and with them switched off. Item and
checklist writes do not fire them (bench.writer_cost measures those).

    .venv/bin/python -m bench.membership_cost [--inserts 500]

Like bench.writer_cost: valgrind (callgrind) in a throwaway cluster run as
`postgres --single`, migrated by `manage.py migrate`, each line its own transaction.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg

from bench import pgsingle

ROOT = Path(__file__).resolve().parent.parent
DBNAME = "membership_cost"
VARIANTS = {  # name -> statements before the inserts
    "without_sync_triggers": ("ALTER TABLE checklists_membership DISABLE TRIGGER sync_membership_start;\n"
                              "ALTER TABLE checklists_membership DISABLE TRIGGER sync_membership_start_moved;\n"),
    "with_sync_triggers": "",
}


def _prepare(inserts: int):
    def prepare(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DBNAME}"')
        db = url.replace("/postgres?", f"/{DBNAME}?")
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                       env={**os.environ, "DATABASE_URL": db}, check=True, timeout=600)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT outbox_set_doorbell(false)")
            conn.execute("INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email,"
                         " is_staff, is_active, date_joined) SELECT g, '!', false, 'u' || g, '', '', '', false, true,"
                         " now() FROM generate_series(1, %s) g", (inserts,))
            conn.execute("INSERT INTO checklists_checklist (id, title, owner_id, created_at, version)"
                         " VALUES (1, 'l', 1, now(), 1)")
    return prepare


def measure(inserts: int) -> dict:
    bindir = pgsingle.server_bindir()
    work = pgsingle.work_dir("membership_cost_")
    try:
        data = work / "data"
        pgsingle.new_cluster(bindir, work, data, _prepare(inserts))
        per_tx = {}
        for name, setup in VARIANTS.items():
            writes = "".join(f"INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                             f" VALUES (1, {k}, 'editor', 1);\n" for k in range(1, inserts + 1))
            counts = []
            for script in ("SELECT 1;\n" + setup, "SELECT 1;\n" + setup + writes):
                out = pgsingle.single(bindir, pgsingle.fresh_copy(data, work / "run"), script, work / "callgrind.out",
                                      DBNAME)
                if "ERROR" in out:
                    raise RuntimeError(out[-2000:])
                counts.append(pgsingle.instructions(out))
            per_tx[name] = round((counts[1] - counts[0]) / inserts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"inserts": inserts, "instructions_per_tx": per_tx,
            "sync_triggers_instructions_per_tx": per_tx["with_sync_triggers"] - per_tx["without_sync_triggers"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inserts", type=int, default=500)
    print(json.dumps(measure(ap.parse_args().inserts), indent=1))


if __name__ == "__main__":
    main()
