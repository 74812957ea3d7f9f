"""Child processes for everything that runs the stack: `make run`'s supervisor, the test
suites, chaos and bench. One child is a `Process`: its output captured line by line (and
passed on, prefixed, when asked), readiness by a log line or a listening port, stopped with
SIGTERM then SIGKILL (its whole process group), and dying with the process that started it.

Invariants:
- A child runs in a session (process group) of its own: a terminal's Ctrl-C reaches only
  the parent, which stops the children in order; signals go to the whole group, so a
  child's own children (gunicorn workers, node clients) never outlive it.
- Children are forked by one long-lived spawner thread. Linux ties PR_SET_PDEATHSIG to
  the *thread* that forked the child, so a child started from a short-lived thread (an
  asyncio.to_thread worker, a test's helper thread) would get SIGTERM when that thread
  ends; the spawner lives as long as the process, so children die with the process and
  only then.
- `free_port` never hands out the same port twice in one process.

The pure helpers (exit descriptions, prefixing) have no I/O.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent  # the checkout: children run here
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
READY_TIMEOUT = 60.0
KEEP_LINES = 400     # lines of output kept per child, for failure messages


# ---------------------------------------------------------------- pure helpers

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


def last_meaningful_line(lines: Iterable[str]) -> str:
    """The last non-blank line of a child's output (its error, usually), or ''."""
    for line in reversed(list(lines)):
        if line.strip():
            return line.strip()
    return ""


def prefix_line(name: str, line: str, width: int, color: str | None = None) -> str:
    """`name | line`, the name padded to width, coloured (an ANSI code) when given.

    >>> prefix_line("relay", "hello", 7)
    'relay   | hello'
    """
    label = name.ljust(width)
    if color:
        label = f"\x1b[{color}m{label}\x1b[0m"
    return f"{label} | {line}"


COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")  # ANSI; bold off, readable on dark and light


def color_for(index: int) -> str:
    """The ANSI colour code of the index-th name (cycles)."""
    return COLORS[index % len(COLORS)]


def python_module(module: str, *args: str) -> list[str]:
    """The argv of `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


# ---------------------------------------------------------------- ports

_GIVEN: set[int] = set()
_GIVEN_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process
    has not handed out before: the kernel may return the port it just released, and two
    calls in a row (a broker's frontend and backend) must not get the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _GIVEN_LOCK:
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Until host:port accepts connections; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not port_open(port, host, 0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")
        time.sleep(0.05)


# ---------------------------------------------------------------- output

class PrefixedOutput:
    """Lines of several children written to one stream as `name | line`, never
    interleaved mid-line; the names padded to one width, optionally coloured."""

    def __init__(self, out: TextIO, names: Iterable[str] = (), *, color: bool = False, width: int = 5):
        self.out = out
        self.color = color
        self._lock = threading.Lock()
        self._colors: dict[str, str] = {}
        self.width = width
        for name in names:
            self.add(name)

    def add(self, name: str) -> None:
        """Reserve a colour and room for a name (in the order of the calls)."""
        if name not in self._colors:
            self._colors[name] = color_for(len(self._colors))
            self.width = max(self.width, len(name))

    def emit(self, name: str, line: str) -> None:
        self.write(prefix_line(name, line, self.width, self._colors.get(name, "37") if self.color else None))

    def write(self, text: str) -> None:
        """Unprefixed text (a banner), never interleaved with a child's line."""
        with self._lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass  # our reader went away (or the file was closed): keep running


# ---------------------------------------------------------------- spawning

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
    """In the child before exec: SIGTERM when the thread that forked it (the spawner,
    which lives as long as the process) dies, so a SIGKILLed parent leaves no orphan
    holding ports."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Spawner:
    """One daemon thread that runs every Popen (see the module doc for why)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="process-spawner", daemon=True)
                self._thread.start()
        done = threading.Event()
        box: list = []
        self._jobs.put((argv, kwargs, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _run(self) -> None:
        while True:
            argv, kwargs, box, done = self._jobs.get()
            try:
                box.append(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                box.append(exc)
            done.set()


_SPAWNER = _Spawner()
# (Process has a method named `signal`, which hides the module in its class body.)
_SIGKILL = signal.SIGKILL


# ---------------------------------------------------------------- one child

class NotReady(RuntimeError):
    """A child did not become ready: it exited, timed out, or its start was interrupted.

    `reason` is one line (what `make run` prints); str() adds the child's output, for a
    test's failure message."""

    def __init__(self, reason: str, output: str = ""):
        super().__init__(reason + (f"\n{output}" if output else ""))
        self.reason = reason


class Process:
    """One child process.

        p = Process("relay", python_module("outbox_relay"), {"DATABASE_URL": url}).start()
        p.wait_for_line("relay started")
        p.kill(signal.SIGKILL)        # or SIGSTOP/SIGCONT: to the whole group
        p.stop()                      # SIGTERM, then SIGKILL; returns the exit code

    env is added to base_env (default: this process's environment). on_line(name, line)
    receives every line as it arrives (a PrefixedOutput's emit, say). interactive=True
    gives the child a stdin for send() and keeps its lines for expect() (a child driven
    line by line, like bench's node load clients).
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, *,
                 base_env: dict[str, str] | None = None, cwd: Path | str = ROOT,
                 on_line: Callable[[str, str], None] | None = None, keep: int = KEEP_LINES,
                 interactive: bool = False):
        self.name = name
        self.argv = list(argv)
        self.env = {**(os.environ if base_env is None else base_env), **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.cwd = cwd
        self.lines: deque[str] = deque(maxlen=keep)
        self.proc: subprocess.Popen | None = None
        self._on_line = on_line
        self._interactive = interactive
        self._unread: queue.Queue[str] | None = queue.Queue() if interactive else None
        self._lock = threading.Lock()
        self._watches: list[tuple[str, threading.Event, list[str]]] = []
        self._pump: threading.Thread | None = None

    # -- life
    def start(self) -> "Process":
        self.proc = _SPAWNER.popen(
            self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.PIPE if self._interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        self._pump = threading.Thread(target=self._read, daemon=True, name=f"pump-{self.name}")
        self._pump.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._lock:
                self.lines.append(line)
                for needle, seen, found in self._watches:
                    if not seen.is_set() and needle in line:
                        found.append(line)
                        seen.set()
            if self._unread is not None:
                self._unread.put(line)
            if self._on_line is not None:
                self._on_line(self.name, line)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def reason(self) -> str:
        """One line on how it ended: 'relay was killed by SIGKILL: <its last line>'."""
        if self._pump is not None:
            self._pump.join(2)  # let the last lines (the error, usually) arrive
        last = last_meaningful_line(self.lines)
        return f"{self.name} {describe_exit(self.returncode)}" + (f": {last}" if last else "")

    # -- readiness
    def wait_ready(self, *, line: str | None = None, port: int | None = None, timeout: float = READY_TIMEOUT,
                   should_stop: Callable[[], bool] | None = None) -> str | None:
        """Until the child printed `line` (returned) and then listens on `port`; NotReady
        if it exits first, takes longer than `timeout`, or should_stop() turns true."""
        deadline = time.monotonic() + timeout
        found = None
        if line is not None:
            watch = self._watch(line)
            try:
                while not watch[1].wait(0.05):
                    self._check(deadline, timeout, f"print {line!r}", should_stop)
            finally:
                with self._lock:
                    if watch in self._watches:
                        self._watches.remove(watch)
            found = watch[2][0]
        if port is not None:
            while not port_open(port):
                self._check(deadline, timeout, f"listen on port {port}", should_stop)
                time.sleep(0.05)
        return found

    def wait_for_line(self, needle: str, timeout: float = 30.0) -> str:
        """The first line (kept, or yet to come) that contains needle; NotReady otherwise."""
        return self.wait_ready(line=needle, timeout=timeout)  # type: ignore[return-value]

    def _watch(self, needle: str) -> tuple[str, threading.Event, list[str]]:
        """(needle, seen, [the line]): already seen among the kept lines, or registered so
        the pump catches it however fast the lines that follow it come."""
        watch: tuple[str, threading.Event, list[str]] = (needle, threading.Event(), [])
        with self._lock:
            for line in self.lines:
                if needle in line:
                    watch[2].append(line)
                    watch[1].set()
                    return watch
            self._watches.append(watch)
        return watch

    def _check(self, deadline: float, timeout: float, what: str, should_stop: Callable[[], bool] | None) -> None:
        if should_stop is not None and should_stop():
            raise NotReady(f"{self.name}: start interrupted")
        if not self.alive():
            if self._pump is not None:
                self._pump.join(2)  # let the last lines (the error, usually) arrive
            last = last_meaningful_line(self.lines)
            raise NotReady(f"{self.name} {describe_exit(self.returncode)} before it was ready"
                           + (f": {last}" if last else ""), self.output())
        if time.monotonic() > deadline:
            raise NotReady(f"{self.name} did not {what} within {timeout:.0f}s", self.output())

    # -- signals and stopping
    def signal(self, sig: int) -> None:
        """Send sig to the child's whole process group, if it still runs."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, sig: int = _SIGKILL) -> None:
        """signal(), SIGKILL unless told: reads better at fault-injection sites."""
        self.signal(sig)

    def finish(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait for the exit (after a SIGTERM); SIGKILL at the deadline; then reap what is
        left of the group, so no grandchild keeps a port. Returns the exit code."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._pump is not None:
            self._pump.join(2)
        return self.proc.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL. Returns the exit code (None if never started)."""
        self.signal(signal.SIGTERM)
        return self.finish(timeout)

    # -- line by line (interactive children)
    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None, f"{self.name} is not interactive"
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        """The next unread line that starts with prefix (earlier unread lines are dropped)."""
        assert self._unread is not None, f"{self.name} is not interactive"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotReady(f"{self.name}: no line starting {prefix!r} in {timeout}s", self.output()[-2000:])
            try:
                line = self._unread.get(timeout=min(left, 0.5))
            except queue.Empty:
                if not self.alive():
                    raise NotReady(self.reason(), self.output()[-2000:]) from None
                continue
            if line.startswith(prefix):
                return line

    def ask_json(self, command: str, timeout: float = 30.0) -> Any:
        """Send a command line, return the next JSON object line it prints."""
        self.send(command)
        return json.loads(self.expect("{", timeout))


class ProcessGroup:
    """Processes started together and stopped together (last started first).

        group = ProcessGroup()
        relay = group.start("relay", python_module("outbox_relay"), env)
        ...
        group.stop_all()
    """

    def __init__(self, **defaults: Any):
        self.defaults = defaults  # Process keyword arguments for every start (base_env, on_line, ...)
        self.started: list[Process] = []
        self._lock = threading.Lock()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> Process:
        p = Process(name, argv, env, **{**self.defaults, **kwargs})
        with self._lock:
            self.started.append(p)
        return p.start()

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM everything still running (newest first), then wait for each, SIGKILL at
        the shared deadline. Returns the exit codes by name."""
        with self._lock:
            started, self.started = list(reversed(self.started)), []
        for p in started:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for p in started:
            try:
                codes[p.name] = p.finish(max(0.1, deadline - time.monotonic()))
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("could not stop %s: %s", p.name, exc)
        return codes

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
