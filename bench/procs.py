"""Processes the benchmarks start (stack.processes): every one is registered and stopped
at exit, whatever happens, and a few facts about them (/proc, no psutil needed)."""
from __future__ import annotations

import atexit
import json
import signal
import sys
from pathlib import Path

from stack.processes import ROOT, Process, ProcessGroup, free_port, python_module  # noqa: F401 (re-exported)

NODE_DIR = ROOT / "bench" / "peers" / "sockjs_node"
_started = ProcessGroup()


def start(name: str, argv: list[str], env: dict[str, str] | None = None, **kwargs) -> Process:
    return _started.start(name, argv, env, **kwargs)


def stop_all() -> None:
    _started.stop_all(timeout=5)


atexit.register(stop_all)


def _on_term(signum, frame):  # noqa: ARG001
    stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def node_clients(name: str, options: dict) -> Process:
    """bench/peers/sockjs_node/clients.js: many websocket clients in one process, driven
    line by line (send("report"), ask_json(...), expect("connected"))."""
    return start(name, ["node", str(NODE_DIR / "clients.js"), json.dumps(options)], cwd=NODE_DIR, interactive=True,
                 keep=20)  # its report lines are large; expect() reads them, nothing keeps them


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
