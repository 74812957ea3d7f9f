"""Fixtures shared by every suite: the test database as a URL for real daemons, and
process management that cleans up after itself."""
from __future__ import annotations

import pytest

from stack.database import database_url, with_dbname
from tests.support.processes import Daemon


@pytest.fixture
def db_url(transactional_db, django_db_blocker) -> str:
    """A libpq URL of the test database, for daemons that run as separate processes.

    Depends on transactional_db: the daemons see only committed data, so tests that use
    them commit for real and Django flushes the tables afterwards.
    """
    from django.db import connection

    return with_dbname(database_url(), connection.settings_dict["NAME"])


@pytest.fixture
def daemons():
    """Start processes with daemons.start(name, argv, env); all are stopped at teardown."""
    started: list[Daemon] = []

    class Starter:
        def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Daemon:
            d = Daemon(name, argv, env).start()
            started.append(d)
            return d

    yield Starter()
    for d in reversed(started):
        d.stop()
