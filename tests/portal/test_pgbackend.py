"""portal.pgbackend: the health check of a persistent connection, against a real server.

Django's own check sends `SELECT 1`; ours reads the socket. Both must find a connection the
server ended, and ours must not send anything for one that is fine. What a backend ran last
is in pg_stat_activity.query, so the tests read it there instead of mocking the check.
"""
from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection, connections

from portal.pgbackend.base import has_input
from runtime.database import database_url, with_dbname

pytestmark = pytest.mark.django_db(transaction=True)


def _admin():
    return psycopg.connect(with_dbname(database_url(), connection.settings_dict["NAME"]), autocommit=True)


def _last_query(pid: int) -> str:
    with _admin() as conn:
        return conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]


def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _open() -> int:
    """The Django connection, idle, having just run a marker; returns its backend pid."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'marker', pg_backend_pid()")
        return cursor.fetchone()[1]


def test_the_portal_uses_this_backend_and_names_its_sessions():
    pid = _open()
    assert type(connections["default"]).__module__ == "portal.pgbackend.base"
    with _admin() as conn:
        assert conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone()[0] == "portal"


def test_an_idle_connection_is_usable_without_a_round_trip():
    pid = _open()
    assert not has_input(connection.connection.fileno())
    assert connection.is_usable()
    assert _last_query(pid) == "SELECT 'marker', pg_backend_pid()"  # nothing was sent


def test_a_connection_the_server_ended_is_not_usable_and_is_replaced():
    pid = _open()
    with _admin() as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    _until(lambda: has_input(connection.connection.fileno()), "the server's goodbye on the socket")
    assert not connection.is_usable()
    # What Django does at the start of a request: the failed check closes it, and the next
    # query runs on a new connection.
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_input_that_is_not_a_goodbye_is_left_to_djangos_check():
    pid = _open()
    with connection.cursor() as cursor:
        cursor.execute("LISTEN portal_health_test")
    with _admin() as conn:
        conn.execute("NOTIFY portal_health_test")
    _until(lambda: has_input(connection.connection.fileno()), "the notification on the socket")
    assert connection.is_usable()
    assert _last_query(pid) == "SELECT 1"  # Django's own check read it
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")


def test_through_gunicorn_sessions_the_server_ends_cost_no_request(db_url, tmp_path):
    """The portal as deployed (gunicorn, persistent connections): after PostgreSQL ends
    every one of its sessions, each request still gets its answer, on a new connection."""
    import sys

    import requests
    from django.contrib.auth import get_user_model

    from portal.apitokens.services import create_token
    from portal.checklists import services
    from stack.processes import Process, free_port

    user = get_user_model().objects.create_user("health-check")
    _, key = create_token(user, "health")
    checklist = services.create_checklist(user, "health")
    port = free_port()
    env = {"DATABASE_URL": db_url, "PORTAL_DEBUG": "0", "PORTAL_HTTPS": "0", "PORTAL_ALLOWED_HOSTS": "127.0.0.1",
           "PORTAL_SECRET_KEY": "health-check-secret-" + "k" * 40, "SYNC_TOKEN_SECRET": "health-check-sync-" + "s" * 40,
           "PORTAL_RATELIMIT_DIR": str(tmp_path / "ratelimit")}
    portal = Process("portal", [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--bind",
                                f"127.0.0.1:{port}", "--workers", "1", "--threads", "2"], env).start()
    try:
        portal.wait_ready(port=port, timeout=60)
        http = requests.Session()
        http.headers["Authorization"] = f"Token {key}"

        def add(n: int) -> list[int]:
            return [http.post(f"http://127.0.0.1:{port}/api/checklists/{checklist.pk}/items/",
                              json={"text": f"item {i}"}, timeout=15).status_code for i in range(n)]

        assert add(8) == [201] * 8
        mine = _open()  # this test's own session is the portal's too: not that one
        with _admin() as conn:
            # MATERIALIZED: the filter runs before anything is terminated.
            ended = [pid for (pid,) in conn.execute(
                "WITH portal AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = 'portal'"
                " AND datname = current_database() AND pid <> %s) SELECT pid FROM portal WHERE pg_terminate_backend(pid)",
                (mine,))]
            # pg_terminate_backend only signals: the sessions are over once their backends
            # have exited (a request racing the signal itself could fail with either check).
            _until(lambda: not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                                            (ended,)).fetchone()[0], "the portal's sessions to end")
        assert ended
        assert add(16) == [201] * 16
    finally:
        portal.stop()
