"""runtime/database.py: where the database is (DATABASE_URL, else the embedded server)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.database import database_url
from runtime.settings import SettingError
from stack.processes import ROOT


def test_database_url_is_read_through_the_settings_reader():
    assert database_url({"DATABASE_URL": " postgresql://u@h:5432/db "}) == "postgresql://u@h:5432/db"
    with pytest.raises(SettingError) as info:
        database_url({"DATABASE_URL": "not a url"})
    assert str(info.value).startswith("DATABASE_URL: not a valid PostgreSQL URL")


def test_the_embedded_server_loads_without_a_warning_when_xdg_runtime_dir_is_unset():
    """Issue 15: every command without DATABASE_URL warned "XDG_RUNTIME_DIR is not set".

    pgserver asks platformdirs for a runtime directory when it is imported; on a machine
    without a login session (CI, containers, su) platformdirs warns and falls back to a
    private directory of its own. Nothing for the user to do: no warning.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "DATABASE_URL")}
    proc = subprocess.run([sys.executable, "-c", "from runtime.database import load_pgserver; load_pgserver()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
