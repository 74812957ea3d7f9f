"""Where the database is: DATABASE_URL when set, else an embedded PostgreSQL (pgserver).

Every entry point (settings, `make run`, `make test`) asks this one function, so the
whole stack agrees on one server.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Mapping

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_PGDATA = ROOT / ".pgdata"
EMBEDDED_DBNAME = "checklist"

_embedded = None  # the pgserver handle; kept alive for the life of this process


def database_url(env: Mapping[str, str] | None = None) -> str:
    """The PostgreSQL URL to use, starting the embedded server if DATABASE_URL is unset.

    SettingError (runtime/settings.py) for a malformed DATABASE_URL.
    """
    from runtime.settings import value  # settings imports this module for its parser

    return value(os.environ if env is None else env, "DATABASE_URL") or embedded_url()


def load_pgserver() -> ModuleType:
    """The pgserver module (imported lazily: only needed without DATABASE_URL).

    pgserver asks platformdirs for the user's runtime directory while it is imported (for
    its start-up lock and a socket directory). Without a login session (CI, containers, su)
    XDG_RUNTIME_DIR is unset: platformdirs then warns, on every command, and uses a private
    directory of its own that it has checked (mode 0700, ours: /run/user/<uid> or
    <tmp>/runtime-<uid>), which is where that lock belongs. Nothing for the user to do, so
    that one warning, and only while pgserver is imported, is not shown.
    """
    import platformdirs

    with warnings.catch_warnings():
        category = getattr(platformdirs, "RuntimeDirWarning", None)  # older platformdirs have no such warning
        if category is not None:
            warnings.simplefilter("ignore", category)
        import pgserver
    return pgserver


def embedded_url() -> str:
    global _embedded
    import psycopg

    pgserver = load_pgserver()
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


def postgres_url(url: str) -> str:
    """`url` if it is a usable libpq connection string (URL or key=value), else ValueError.
    The settings reader parses DATABASE_URL with it, so a typo is a one-line error at start,
    not a traceback on the first query. The message does not repeat the URL (a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise ValueError(f"not a valid PostgreSQL URL: {str(exc).strip()}") from None
    return url
