"""Run a handful of child processes as one unit: start them in order, wait until each is
ready, prefix their output with their name, and stop all of them when one dies.

A supervisor that limps on with a dead relay or broker would show a UI that silently stops
updating, so any unexpected exit ends the whole stack with a one-line reason instead.
Each child is a stack.processes.Process (its own process group, death with the parent,
SIGTERM then SIGKILL); this module adds the order, the policy and `make run`'s up-front
port checks (pure helpers, no I/O, apart from the bind test).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, TextIO
from urllib.parse import urlsplit

from stack.processes import (
    READY_TIMEOUT, STOP_TIMEOUT, NotReady, PrefixedOutput, Process,
)

log = logging.getLogger(__name__)


def port_of(address: str) -> tuple[str, int]:
    """(host, port) of `tcp://host:port` or `host:port`; a `*` host means every interface.

    >>> port_of("tcp://127.0.0.1:5557")
    ('127.0.0.1', 5557)
    >>> port_of("tcp://*:5558")
    ('0.0.0.0', 5558)
    """
    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    # urlsplit refuses '*' as a hostname, so parse the netloc by hand.
    host, sep, port = parts.netloc.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"no port in address {address!r}")
    host = host.strip("[]")
    if host in ("*", ""):
        host = "0.0.0.0"
    return host, int(port)


# ---------------------------------------------------------------- port checks

def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already binds host:port (a server would fail to start there).

    SO_REUSEADDR mirrors what our servers set, so a port in TIME_WAIT from a previous run
    counts as free, as it is for them.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def taken_ports(wanted: Iterable[tuple[str, int]], host: str = "127.0.0.1") -> list[tuple[str, int]]:
    """The (label, port) pairs whose port is already taken, in the given order."""
    return [(label, port) for label, port in wanted if port_taken(port, host)]


def duplicate_ports(wanted: Iterable[tuple[str, int]]) -> list[tuple[str, str, int]]:
    """Pairs of labels configured on the same port: (first, second, port)."""
    seen: dict[int, str] = {}
    dups = []
    for label, port in wanted:
        if port in seen:
            dups.append((seen[port], label, port))
        else:
            seen[port] = label
    return dups


# ---------------------------------------------------------------- processes

@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and how to know it is ready.

    ready_line: a substring its output prints once it serves; ready_port: a TCP port on
    127.0.0.1 that accepts connections once it serves. Either, both (line first) or none.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_line: str | None = None
    ready_port: int | None = None
    ready_timeout: float = READY_TIMEOUT


class ServiceFailed(RuntimeError):
    """A service could not start or died; str() is the one-line reason."""


class Supervisor:
    """Starts services in order, watches them, stops them all (reverse order)."""

    def __init__(self, specs: list[ServiceSpec], *, out: TextIO, color: bool = False,
                 base_env: dict[str, str] | None = None, stop_timeout: float = STOP_TIMEOUT):
        self.specs = {spec.name: spec for spec in specs}
        self.order = [spec.name for spec in specs]
        self.children: dict[str, Process] = {}
        self.output = PrefixedOutput(out, self.order, color=color)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stop_timeout = stop_timeout
        self.stopping = threading.Event()
        # Names restarted or killed on purpose: their exit is not a failure.
        self._expected_exit: set[str] = set()

    # -- output
    def emit(self, name: str, line: str) -> None:
        self.output.emit(name, line)

    def write_block(self, text: str) -> None:
        """Unprefixed text (the banner), never interleaved with a child's line."""
        self.output.write(text)

    def say(self, line: str) -> None:
        """A line of the supervisor's own, under the name 'stack'."""
        self.emit("stack", line)

    def _spawn(self, spec: ServiceSpec) -> Process:
        try:
            return Process(spec.name, spec.argv, spec.env, base_env=self.base_env, on_line=self.emit, keep=200).start()
        except OSError as exc:
            raise ServiceFailed(f"{spec.name} could not be started: {exc}") from exc

    # -- lifecycle
    def start(self) -> None:
        """Start every service in order, each ready before the next; ServiceFailed otherwise
        (the ones already started are stopped first)."""
        try:
            for name in self.order:
                self.start_one(name)
        except BaseException:
            self.stop()
            raise

    def start_one(self, name: str) -> Process:
        spec = self.specs[name]
        child = self._spawn(spec)
        self.children[name] = child
        self.say(f"started {name} (pid {child.pid})")
        try:
            child.wait_ready(line=spec.ready_line, port=spec.ready_port, timeout=spec.ready_timeout,
                             should_stop=self.stopping.is_set)
        except NotReady as exc:
            raise ServiceFailed(exc.reason) from None
        self.say(f"{name} is ready")
        return child

    def run_once(self, spec: ServiceSpec, timeout: float = 300.0) -> list[str]:
        """Run a one-shot step (migrate, seed) to completion with its output prefixed and
        return its last lines; ServiceFailed if it fails, times out, or stop() is requested
        meanwhile."""
        child = self._spawn(spec)
        deadline = time.monotonic() + timeout
        try:
            while child.alive():
                if self.stopping.is_set():
                    raise ServiceFailed(f"{spec.name}: interrupted")
                if time.monotonic() > deadline:
                    raise ServiceFailed(f"{spec.name} did not finish within {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            child.stop(self.stop_timeout)
        if child.returncode != 0:
            raise ServiceFailed(child.reason())
        return list(child.lines)

    def failed(self) -> tuple[str, str] | None:
        """(name, reason) of the first child that exited unexpectedly, else None."""
        for name in self.order:
            child = self.children.get(name)
            if child is not None and name not in self._expected_exit and not child.alive():
                return name, child.reason()
        return None

    def watch(self, poll: float = 0.2) -> str | None:
        """Block until stop() is requested (returns None) or a child dies (returns why)."""
        while not self.stopping.is_set():
            failure = self.failed()
            if failure:
                return failure[1]
            self.stopping.wait(poll)
        return None

    def stop(self) -> dict[str, int]:
        """SIGTERM every child (last started first), wait, SIGKILL stragglers. Idempotent."""
        self.stopping.set()
        running = [self.children[n] for n in reversed(self.order) if n in self.children]
        for child in running:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        codes = {}
        for child in running:
            codes[child.name] = child.finish(max(0.1, deadline - time.monotonic()))
        return codes

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send sig to a service without it counting as a failure (fault-injection tests)."""
        self._expected_exit.add(name)
        self.children[name].signal(sig)

    def restart(self, name: str) -> Process:
        """Stop one service (SIGTERM, then SIGKILL) and start it again, waiting until ready."""
        self._expected_exit.add(name)
        self.children[name].stop(self.stop_timeout)
        child = self.start_one(name)
        self._expected_exit.discard(name)
        return child

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}
