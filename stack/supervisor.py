"""Run a handful of child processes as one unit: start them in order, wait until each is
ready, prefix their output with their name, and stop all of them when one dies.

A supervisor that limps on with a dead relay or broker would show a UI that silently stops
updating, so any unexpected exit ends the whole stack with a one-line reason instead.
The pure helpers (prefixing, colours, exit descriptions, port parsing) have no I/O.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, TextIO
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# ANSI colours cycled over the services; bold off, so the prefix stays readable on dark
# and light terminals alike.
COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")
RESET = "\x1b[0m"

STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
READY_TIMEOUT = 60.0


# ---------------------------------------------------------------- pure helpers

def color_for(index: int) -> str:
    """The ANSI colour code of the index-th service (cycles)."""
    return COLORS[index % len(COLORS)]


def prefix_line(name: str, line: str, width: int, color: str | None = None) -> str:
    """`name | line`, the name padded to width, coloured when a colour is given.

    >>> prefix_line("relay", "hello", 7)
    'relay   | hello'
    """
    label = name.ljust(width)
    if color:
        label = f"\x1b[{color}m{label}{RESET}"
    return f"{label} | {line}"


def describe_exit(returncode: int | None) -> str:
    """A human description of a Popen return code (negative = killed by a signal).

    >>> describe_exit(3)
    'exited with code 3'
    >>> describe_exit(-9)
    'was killed by SIGKILL'
    """
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


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


def last_meaningful_line(lines: Iterable[str]) -> str:
    """The last non-blank line of a child's output (its error, usually), or ''."""
    for line in reversed(list(lines)):
        if line.strip():
            return line.strip()
    return ""


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


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: orphans are possible, the normal stop path still works


# Looked up once here: the pre-exec hook runs in a freshly forked child and should do
# as little as possible there.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM if the supervisor itself dies, so a SIGKILLed
    `make run` leaves no orphan holding the ports. (Linux ties this to the thread that
    started the child: start services from a thread that outlives them, e.g. the main one.)"""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServiceFailed(RuntimeError):
    """A service could not start or died; str() is the one-line reason."""


class Child:
    """One running service: the process, its output pump and its recent lines."""

    def __init__(self, spec: ServiceSpec, emit: Callable[[str, str], None], base_env: dict[str, str]):
        self.spec = spec
        self.name = spec.name
        self._emit = emit
        self.lines: deque[str] = deque(maxlen=200)
        self.ready_line_seen = threading.Event()
        env = {**base_env, **spec.env, "PYTHONUNBUFFERED": "1"}
        # A session of its own: a terminal's Ctrl-C reaches only the supervisor, which
        # then stops the children in order instead of all of them dying at once.
        self.proc = subprocess.Popen(
            spec.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.pump = threading.Thread(target=self._pump, daemon=True, name=f"pump-{self.name}")
        self.pump.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.lines.append(line)
            if self.spec.ready_line and self.spec.ready_line in line:
                self.ready_line_seen.set()
            self._emit(self.name, line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, should_stop: Callable[[], bool]) -> None:
        """Block until the spec's readiness signal; ServiceFailed if it exits or times out."""
        deadline = time.monotonic() + self.spec.ready_timeout
        if self.spec.ready_line:
            while not self.ready_line_seen.wait(0.1):
                self._check_progress(deadline, should_stop, f"print {self.spec.ready_line!r}")
        if self.spec.ready_port:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", self.spec.ready_port), timeout=0.5):
                        break
                except OSError:
                    time.sleep(0.1)
                self._check_progress(deadline, should_stop, f"listen on port {self.spec.ready_port}")

    def _check_progress(self, deadline: float, should_stop: Callable[[], bool], what: str) -> None:
        if should_stop():
            raise ServiceFailed(f"{self.name}: start interrupted")
        if not self.alive():
            self.pump.join(2)  # let the last lines (the error) arrive
            reason = last_meaningful_line(self.lines)
            raise ServiceFailed(
                f"{self.name} {describe_exit(self.proc.returncode)} before it was ready"
                + (f": {reason}" if reason else "")
            )
        if time.monotonic() > deadline:
            raise ServiceFailed(f"{self.name} did not {what} within {self.spec.ready_timeout:.0f}s")

    def signal(self, sig: int) -> None:
        """Signal the child's whole process group (gunicorn workers and the like too)."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self, timeout: float) -> int:
        """Wait for the exit after a SIGTERM; SIGKILL at the deadline. Returns the code."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        # Reap the rest of the group too: a worker left behind would keep the port.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.pump.join(2)
        return self.proc.returncode


class Supervisor:
    """Starts services in order, watches them, stops them all (reverse order)."""

    def __init__(self, specs: list[ServiceSpec], *, out: TextIO, color: bool = False,
                 base_env: dict[str, str] | None = None, stop_timeout: float = STOP_TIMEOUT):
        self.specs = {spec.name: spec for spec in specs}
        self.order = [spec.name for spec in specs]
        self.children: dict[str, Child] = {}
        self.out = out
        self.color = color
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stop_timeout = stop_timeout
        self.stopping = threading.Event()
        self._write_lock = threading.Lock()
        self._width = max([len(n) for n in self.order] + [5])
        self._colors = {name: color_for(i) for i, name in enumerate(self.order)}
        # Names restarted or killed on purpose: their exit is not a failure.
        self._expected_exit: set[str] = set()

    # -- output
    def emit(self, name: str, line: str) -> None:
        text = prefix_line(name, line, self._width, self._colors.get(name, "37") if self.color else None)
        with self._write_lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass  # our reader went away; keep supervising

    def write_block(self, text: str) -> None:
        """Unprefixed text (the banner), never interleaved with a child's line."""
        with self._write_lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass

    def say(self, line: str) -> None:
        """A line of the supervisor's own, under the name 'stack'."""
        self.emit("stack", line)

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

    def start_one(self, name: str) -> Child:
        spec = self.specs[name]
        try:
            child = Child(spec, self.emit, self.base_env)
        except OSError as exc:
            raise ServiceFailed(f"{name} could not be started: {exc}") from exc
        self.children[name] = child
        self.say(f"started {name} (pid {child.pid})")
        child.wait_ready(self.stopping.is_set)
        self.say(f"{name} is ready")
        return child

    def run_once(self, spec: ServiceSpec, timeout: float = 300.0) -> list[str]:
        """Run a one-shot step (migrate, seed) to completion with its output prefixed and
        return its last lines; ServiceFailed if it fails, times out, or stop() is requested
        meanwhile."""
        try:
            child = Child(spec, self.emit, self.base_env)
        except OSError as exc:
            raise ServiceFailed(f"{spec.name} could not be started: {exc}") from exc
        deadline = time.monotonic() + timeout
        try:
            while child.alive():
                if self.stopping.is_set():
                    raise ServiceFailed(f"{spec.name}: interrupted")
                if time.monotonic() > deadline:
                    raise ServiceFailed(f"{spec.name} did not finish within {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            child.signal(signal.SIGTERM)
            child.finish(self.stop_timeout)
        if child.proc.returncode != 0:
            last = last_meaningful_line(child.lines)
            raise ServiceFailed(f"{spec.name} {describe_exit(child.proc.returncode)}" + (f": {last}" if last else ""))
        return list(child.lines)

    def failed(self) -> tuple[str, str] | None:
        """(name, reason) of the first child that exited unexpectedly, else None."""
        for name in self.order:
            child = self.children.get(name)
            if child is not None and name not in self._expected_exit and not child.alive():
                child.pump.join(1)
                last = last_meaningful_line(child.lines)
                reason = f"{name} {describe_exit(child.proc.returncode)}" + (f": {last}" if last else "")
                return name, reason
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

    def restart(self, name: str) -> Child:
        """Stop one service (SIGTERM, then SIGKILL) and start it again, waiting until ready."""
        self._expected_exit.add(name)
        old = self.children[name]
        old.signal(signal.SIGTERM)
        old.finish(self.stop_timeout)
        child = self.start_one(name)
        self._expected_exit.discard(name)
        return child

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}
