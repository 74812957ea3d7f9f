"""The benchmark database: its own database on the stack's server, migrated, with one
user and a few checklists to write to. Never the dev database: the bench truncates tables."""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from typing import Iterator

import psycopg

from stack.processes import ROOT

log = logging.getLogger(__name__)

DEFAULT_DBNAME = "bench"


def bench_url(env: dict[str, str] | None = None) -> str:
    """BENCH_DATABASE_URL if set, else the stack's server (DATABASE_URL or embedded) with dbname "bench"."""
    env = dict(os.environ if env is None else env)
    explicit = env.get("BENCH_DATABASE_URL", "").strip()
    if explicit:
        return explicit
    from runtime.database import database_url, with_dbname

    return with_dbname(database_url(), DEFAULT_DBNAME)


def prepare(url: str, checklists: int = 4) -> dict:
    """Create (if missing) and migrate the database, empty the bench tables, and return
    {"user_id", "checklists": [ids]}."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    dbname = params.get("dbname")
    if not dbname or dbname in ("postgres", "checklist"):
        raise SystemExit(f"refusing to benchmark in database {dbname!r}: set BENCH_DATABASE_URL to a scratch database")
    admin = make_conninfo(**{**params, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(f'CREATE DATABASE "{dbname}"')
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   env={**os.environ, "DATABASE_URL": url}, check=True, timeout=300)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE checklists_item, checklists_membership, checklists_checklist, outbox CASCADE")
        conn.execute("DROP TABLE IF EXISTS bench_seed_item")
        conn.execute("CREATE TABLE bench_seed_item (id bigserial PRIMARY KEY, checklist_id bigint NOT NULL,"
                     " text text NOT NULL, done boolean NOT NULL DEFAULT false, position int NOT NULL DEFAULT 0,"
                     " version bigint NOT NULL DEFAULT 1)")
        row = conn.execute("SELECT id FROM auth_user WHERE username = 'bench'").fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO auth_user (username, password, is_superuser, first_name, last_name, email, is_staff,"
                " is_active, date_joined) VALUES ('bench', '!', false, '', '', '', false, true, now()) RETURNING id"
            ).fetchone()
        user_id = row[0]
        ids = [conn.execute("INSERT INTO checklists_checklist (title, owner_id, created_at, version)"
                            " VALUES (%s, %s, now(), 1) RETURNING id", (f"bench {i}", user_id)).fetchone()[0]
               for i in range(checklists)]
        # The sync server asks the database whether the bench user may watch each list.
        for cid in ids:
            conn.execute("INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                         " VALUES (%s, %s, 'owner', 1)", (cid, user_id))
    return {"user_id": user_id, "checklists": ids}


def reset_outbox(url: str) -> None:
    """Drop captured rows between scenarios (positions keep counting up: pos never restarts)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox, checklists_item, bench_seed_item")


def topic_tpos(url: str, topic: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT tpos FROM outbox_topic WHERE topic = %s", (topic,)).fetchone()
    return row[0] if row else 0


@contextlib.contextmanager
def scratch_database(name: str, server: str | None = None) -> Iterator[str]:
    """An empty database `name` on the server of the URL `server` (default: DATABASE_URL's,
    or the embedded one), made anew and dropped afterwards; yields its URL."""
    from runtime.database import database_url, with_dbname

    server = server or database_url()
    admin_url = with_dbname(server, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(server, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
