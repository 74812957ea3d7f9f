"""`make stop-db` against a real embedded PostgreSQL (pgserver) in a temporary folder."""
from __future__ import annotations

import subprocess
import sys

from stack.processes import ROOT
from tests.stack.test_supervisor import gone

START = (
    "import sys, pgserver; s = pgserver.get_server(sys.argv[1], cleanup_mode=None);"
    "print(s.get_pid()); print(s.get_uri('postgres'))"
)


def stop_db(pgdata) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stack.stop_db", "--pgdata", str(pgdata)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_stops_a_running_embedded_server_and_says_so(tmp_path):
    pgdata = tmp_path / "pgdata"
    started = subprocess.run([sys.executable, "-c", START, str(pgdata)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split()[0])
    try:
        assert not gone(pid, timeout=0.2), "cleanup_mode=None: the server outlives the process that started it"
        result = stop_db(pgdata)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"embedded PostgreSQL ({pgdata}) stopped"
        assert gone(pid)
        again = stop_db(pgdata)
        assert again.returncode == 0
        assert again.stdout.strip() == f"embedded PostgreSQL ({pgdata}) is not running"
    finally:
        if not gone(pid, timeout=0):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_no_data_folder_is_not_an_error(tmp_path):
    result = stop_db(tmp_path / "nothing-here")
    assert result.returncode == 0
    assert "is not running" in result.stdout
