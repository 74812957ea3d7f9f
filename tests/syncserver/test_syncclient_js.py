"""The browser client's logic under Node with a fake SockJS (the real-browser run is the
Playwright suite's job)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_syncclient_resumes_dedupes_groups_and_resyncs():
    script = Path(__file__).with_name("syncclient_smoke.mjs")
    proc = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.stdout.startswith("OK"), proc.stdout + proc.stderr
