"""Processes the benchmarks start: every one is registered and stopped at exit, whatever happens."""
from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.processes import ROOT, Daemon, free_port, wait_for_port  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

NODE_DIR = ROOT / "bench" / "peers" / "sockjs_node"
_started: list["Daemon | LineProc"] = []


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> Daemon:
    d = Daemon(name, argv, env).start()
    _started.append(d)
    return d


def stop_all() -> None:
    while _started:
        p = _started.pop()
        try:
            p.stop(timeout=5)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not stop %s: %s", p.name, exc)


atexit.register(stop_all)


def _on_term(signum, frame):  # noqa: ARG001
    stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class LineProc:
    """A child we talk to line by line (stdin commands, stdout replies): the node load clients."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.name = name
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        _started.append(self)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            self.errors.append(line.rstrip("\n"))
            del self.errors[:-50]

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no line starting {prefix!r} in {timeout}s; stderr: {self.errors[-5:]}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.errors[-5:]}") from None
                continue
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def ask_json(self, command: str, timeout: float = 30.0) -> dict:
        self.send(command)
        return json.loads(self.expect("{", timeout))

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if self in _started:
            _started.remove(self)


def node_clients(name: str, options: dict) -> LineProc:
    return LineProc(name, ["node", str(NODE_DIR / "clients.js"), json.dumps(options)], cwd=NODE_DIR)


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (from /proc, no psutil needed)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
