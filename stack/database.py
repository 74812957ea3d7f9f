"""Where the database is: DATABASE_URL when set, else an embedded PostgreSQL (pgserver).

Every entry point (settings, `make run`, `make test`) asks this one function, so the
whole stack agrees on one server.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_PGDATA = ROOT / ".pgdata"
EMBEDDED_DBNAME = "checklist"

_embedded = None  # the pgserver handle; kept alive for the life of this process


def database_url() -> str:
    """The PostgreSQL URL to use, starting the embedded server if DATABASE_URL is unset."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    return embedded_url()


def embedded_url() -> str:
    global _embedded
    import pgserver  # imported lazily: only needed without DATABASE_URL
    import psycopg

    if _embedded is None:
        # pgserver logs its handle bookkeeping at INFO from an atexit hook, after test
        # runners have closed their streams ("--- Logging error ---" noise at exit).
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        EMBEDDED_PGDATA.mkdir(exist_ok=True)
        # cleanup_mode=None: the server outlives this process, so the daemons that
        # `make run` starts (and a second `make run`) share it; stop with `make stop-db`.
        _embedded = pgserver.get_server(EMBEDDED_PGDATA, cleanup_mode=None)
    admin_url = _embedded.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DBNAME}"')
    return _embedded.get_uri(EMBEDDED_DBNAME)


def django_database(url: str) -> dict:
    """Django's DATABASES entry for a libpq URL (host may be a socket directory)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", "postgres"),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def with_dbname(url: str, dbname: str) -> str:
    """The same server, another database (tests run the daemons against the test database)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def url_problem(url: str) -> str | None:
    """Why `url` is not a usable libpq connection string, or None. Daemons call this at
    start so a typo is a one-line error, not a traceback on the first query."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        return f"DATABASE_URL is not a valid PostgreSQL URL: {str(exc).strip()}"
    return None
