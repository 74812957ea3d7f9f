"""The acceptance fixtures (tests/acceptance/conftest.py) against a balanced stack: `make
run --sync-servers 3` (stack.run.Stack with sync_servers=3: syncserver-1..3 behind HAProxy,
named "balancer", on SYNC_PORT). A package of its own, so its package-scoped fixtures
(the stack, the database, the logins) are this stack's, not the single-server one's."""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from stack.keys import KeySet
from stack.processes import free_port
from stack.run import Stack
from stack.supervisor import port_taken
from tests.acceptance.conftest import (  # noqa: F401 - fixtures and the report hook, re-registered here
    CHROMIUM, DEMO_PASSWORDS, STACK_OVERRIDES, SYNC_TOKEN_TTL, acc_database_url, api, artifacts, base_url, browser,
    browsers, db, faults, login_states, make_checklist, pytest_runtest_makereport, sessions, stack_running,
)

SYNC_SERVERS = 3


@pytest.fixture(scope="package")
def stack(acc_database_url, artifacts, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
        pytest.skip("apt-get install haproxy")
    # The servers take SYNC_PORT + 1..N (stack.run.balanced_backends): a run of free ports.
    sync_port = next(p for p in iter(free_port, None)
                     if not any(port_taken(p + i) for i in range(1, SYNC_SERVERS + 1)))
    env = {
        "DATABASE_URL": acc_database_url,
        "PORTAL_PORT": str(free_port()),
        "SYNC_PORT": str(sync_port),
        "OUTBOX_BROKER_FRONTEND": str(free_port()),
        "OUTBOX_BROKER_BACKEND": str(free_port()),
        "OUTBOX_RELAY_METRICS_PORT": str(free_port()),
        "SYNC_TOKEN_TTL": str(SYNC_TOKEN_TTL),
        "PORTAL_RATELIMIT_DIR": str(tmp_path_factory.mktemp("ratelimit")),
        **{name: "" for name in STACK_OVERRIDES if name in os.environ},
    }
    log = open(artifacts / "balanced-stack.log", "w", encoding="utf-8")
    s = Stack(env=env, out=log, keys=KeySet.generate(), sync_servers=SYNC_SERVERS)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        log.close()


@pytest.fixture
def servers(stack):
    """The sync servers as the tests see them: names, and who holds how many sessions."""
    class Servers:
        names = [f"syncserver-{i}" for i in range(1, SYNC_SERVERS + 1)]

        @staticmethod
        def connections() -> dict[str, int]:
            counts = {}
            for i, name in enumerate(Servers.names, start=1):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.sync + i}/healthz", timeout=5) as r:
                        counts[name] = json.loads(r.read())["connections"]
                except (urllib.error.URLError, OSError):
                    continue
            return counts

    return Servers()
