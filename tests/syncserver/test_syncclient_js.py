"""The browser client's logic under Node with a fake SockJS (the real-browser run is the
Playwright suite's job)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def _run(script: str) -> str:
    proc = subprocess.run(["node", str(Path(__file__).with_name(script))], capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


@needs_node
def test_syncclient_resumes_dedupes_groups_and_resyncs():
    out = _run("syncclient_smoke.mjs")
    assert out.startswith("OK"), out


@needs_node
def test_syncclient_samples_live_latency_by_the_servers_clock_and_batches_reports():
    out = _run("syncclient_latency.mjs")
    assert out.startswith("OK"), out


@needs_node
@pytest.mark.parametrize("scenario", ["gap", "renew", "reuse", "refused", "backoff"])
def test_syncclient_authority(scenario):
    out = _run("syncclient_authority.mjs")
    lines = {line.split(" ")[1]: line for line in out.splitlines() if line.startswith(("ok ", "FAIL "))}
    line = lines.get(scenario) or f"no result for {scenario}: {out}"
    if not line.startswith("ok "):
        pytest.fail(line, pytrace=False)
