"""Fixtures shared by every suite: the test database as a URL for real daemons, process
management that cleans up after itself, and the relay's own tables reset before every
test that uses the database."""
from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from psycopg import sql

from runtime.database import database_url, with_dbname
from stack.processes import ProcessGroup


def _test_database_url() -> str:
    from django.db import connection

    return with_dbname(database_url(), connection.settings_dict["NAME"])


@pytest.fixture
def db_url(transactional_db, django_db_blocker) -> str:
    """A libpq URL of the test database, for daemons that run as separate processes.

    Depends on transactional_db: the daemons see only committed data, so tests that use
    them commit for real and Django flushes the tables afterwards.
    """
    return _test_database_url()


@pytest.fixture
def scratch_db() -> str:
    """The URL of an empty database of its own on the test server, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin_url = with_dbname(database_url(), "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(database_url(), name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def daemons():
    """Start processes with daemons.start(name, argv, env) (stack.processes.Process); all
    are stopped at teardown."""
    with ProcessGroup() as group:
        yield group


# --- the relay's tables between tests ---------------------------------------------------
#
# Django's flush after a transactional test empties the tables of managed models only. The
# outbox is one (portal/outbox/models.py), but outbox_topic, outbox_relay_state and
# outbox_doorbell are unmanaged, on purpose: in a deployment positions must only grow
# (`manage.py flush` resetting last_pos under a running sync server would make it drop new
# events as duplicates). So without this reset a test inherits the positions of the tests
# before it: after tests/relay/test_daemons.py, which emits on "checklist:1", a new
# Checklist with pk 1 gets tpos 12 and a client subscribing since 0 is (rightly) told to
# resync. So every test that uses the database starts from the state of a freshly
# migrated one: no topic positions, relay positions and the retention watermark 0, no
# leader, the doorbell armed.

_RELAY_APPS = ("outbox-relay", "outbox-relay-listener")

_AT_REST = """
DELETE FROM outbox_topic;
UPDATE outbox_relay_state
   SET last_pos = 0, published_pos = 0, pruned_pos = 0, leader = NULL, leader_since = NULL, heartbeat_at = NULL
 WHERE id = 1 AND (last_pos, published_pos, pruned_pos, leader, leader_since, heartbeat_at)
       IS DISTINCT FROM (0::bigint, 0::bigint, 0::bigint, NULL::text, NULL::timestamptz, NULL::timestamptz);
SELECT outbox_set_doorbell(true);
"""


def _django_test_database(request: pytest.FixtureRequest) -> str | None:
    """The URL of Django's test database if this test set it up (django_db_setup is in its
    fixtures: db, transactional_db, live_server, the django_db marker), else None. The
    acceptance tests' own `db` fixture reads the stack's database instead, and a database
    whose name lacks Django's test_ prefix is never touched."""
    if "django_db_setup" not in request.fixturenames and request.node.get_closest_marker("django_db") is None:
        return None
    from django.db import connection

    return _test_database_url() if (connection.settings_dict["NAME"] or "").startswith("test_") else None


def _relay_sessions(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT pid, application_name, state FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = ANY(%s)", (list(_RELAY_APPS),)).fetchall()


def reset_relay_tables(url: str, wait: float = 5.0) -> None:
    """Put outbox_topic, outbox_relay_state and outbox_doorbell back as migrations leave
    them. Fails (rather than letting the test time out later) if that is not possible or
    not safe: a relay still connected, outbox rows left behind, the doorbell switched off."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + wait  # a stopped daemon's backend may linger a moment
        while (sessions := _relay_sessions(conn)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if sessions:
            pytest.fail(f"a relay from an earlier test is still connected to the test database: {sessions}",
                        pytrace=False)
        rows = conn.execute("SELECT count(*), max(pos) FROM outbox").fetchone()
        if rows[0]:
            pytest.fail(f"the outbox holds {rows[0]} rows (max pos {rows[1]}) before the test: Django's flush "
                        "did not run (an interrupted --reuse-db session? rerun with --create-db)", pytrace=False)
        rung = conn.execute("SELECT current_setting('outbox.rung', true)").fetchone()[0]
        if rung == "yes":  # (e.g. an ALTER DATABASE ... SET outbox.rung left behind)
            pytest.fail(f"writers cannot ring the doorbell (outbox.rung={rung!r}): an earlier test left it "
                        "silenced", pytrace=False)
        with conn.transaction():
            conn.execute(_AT_REST)


@pytest.fixture(autouse=True)
def relay_tables_at_rest(request):
    """See above. Before each test that uses Django's test database, once that database
    exists: this never creates it (the first test gets it freshly migrated anyway), since
    Django refuses to while a session fixture's event loop runs (Playwright's)."""
    url = _django_test_database(request)
    if url:
        reset_relay_tables(url)
