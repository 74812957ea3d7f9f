"""The supervisor: pure helpers, and its process handling with tiny real Python children
(no database, no daemons) so start order, readiness, failure and stop are pinned down fast."""
from __future__ import annotations

import io
import os
import signal
import socket
import sys
import time

import pytest

from stack.processes import ROOT, color_for, describe_exit, free_port, last_meaningful_line, prefix_line
from stack.supervisor import ServiceFailed, ServiceSpec, Supervisor, duplicate_ports, port_of, port_taken, taken_ports

PY = sys.executable


def script(code: str) -> list[str]:
    return [PY, "-c", code]


SLEEPER = "import time; print('{line}', flush=True); time.sleep(600)"


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once pid has died (exited, or a zombie not yet reaped by its parent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- pure helpers

def test_prefix_pads_and_colours():
    assert prefix_line("relay", "x", 10) == "relay      | x"
    coloured = prefix_line("relay", "x", 5, color_for(0))
    assert coloured.startswith("\x1b[36mrelay\x1b[0m") and coloured.endswith(" | x")
    assert color_for(0) != color_for(1)
    assert color_for(8) == color_for(0)


def test_describe_exit():
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(2) == "exited with code 2"
    assert describe_exit(-signal.SIGTERM) == "was killed by SIGTERM"
    assert describe_exit(None) == "is still running"


def test_port_of():
    assert port_of("tcp://127.0.0.1:5557") == ("127.0.0.1", 5557)
    assert port_of("tcp://*:5558") == ("0.0.0.0", 5558)
    assert port_of("tcp://broker:5557") == ("broker", 5557)
    assert port_of("localhost:80") == ("localhost", 80)
    with pytest.raises(ValueError):
        port_of("tcp://broker")


def test_last_meaningful_line():
    assert last_meaningful_line(["a", "ModuleNotFoundError: x", "", "  "]) == "ModuleNotFoundError: x"
    assert last_meaningful_line([]) == ""


def test_duplicate_ports():
    assert duplicate_ports([("a", 1), ("b", 2), ("c", 1)]) == [("a", "c", 1)]
    assert duplicate_ports([("a", 1), ("b", 2)]) == []


def test_port_taken_sees_a_listener_and_a_free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        free = free_port()
        assert port_taken(busy)
        assert not port_taken(free)
        assert taken_ports([("x", free), ("y", busy)]) == [("y", busy)]


# ---------------------------------------------------------------- processes

def test_starts_in_order_prefixes_output_and_stops_everything():
    out = io.StringIO()
    port = free_port()
    server = (
        "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', %d)); s.listen();"
        "print('listening', flush=True); time.sleep(600)" % port
    )
    sup = Supervisor([
        ServiceSpec("first", script(SLEEPER.format(line="first ready")), ready_line="first ready"),
        ServiceSpec("second", script(server), ready_port=port),
    ], out=out)
    sup.start()
    pids = sup.pids()
    assert set(pids) == {"first", "second"}
    assert sup.failed() is None
    text = out.getvalue()
    assert "first  | first ready" in text
    assert text.index("first is ready") < text.index("started second")
    codes = sup.stop()
    assert codes == {"first": -signal.SIGTERM, "second": -signal.SIGTERM}
    assert all(gone(pid) for pid in pids.values())


def test_child_environment_is_passed():
    out = io.StringIO()
    sup = Supervisor([ServiceSpec(
        "env", script("import os, time; print('X=' + os.environ['X'], flush=True); time.sleep(600)"),
        env={"X": "42"}, ready_line="X=",
    )], out=out, base_env={**os.environ, "X": "0"})
    sup.start()
    sup.stop()
    assert "X=42" in out.getvalue()


def test_a_child_that_exits_before_ready_fails_with_its_last_line_and_nothing_stays():
    out = io.StringIO()
    sup = Supervisor([
        ServiceSpec("ok", script(SLEEPER.format(line="up")), ready_line="up"),
        ServiceSpec("bad", script("import sys; print('boom: no config', file=sys.stderr); sys.exit(2)"),
                    ready_line="never"),
    ], out=out)
    with pytest.raises(ServiceFailed) as info:
        sup.start()
    assert str(info.value) == "bad exited with code 2 before it was ready: boom: no config"
    assert gone(sup.children["ok"].pid), "the service started before the failure must be stopped"


def test_ready_timeout_is_a_failure():
    sup = Supervisor([ServiceSpec("mute", script("import time; time.sleep(600)"), ready_line="hello",
                                  ready_timeout=0.5)], out=io.StringIO())
    with pytest.raises(ServiceFailed, match="mute did not print 'hello' within"):
        sup.start()
    assert gone(sup.children["mute"].pid)


def test_watch_reports_a_child_that_dies():
    sup = Supervisor([
        ServiceSpec("steady", script(SLEEPER.format(line="up")), ready_line="up"),
        ServiceSpec("victim", script(SLEEPER.format(line="up")), ready_line="up"),
    ], out=io.StringIO())
    sup.start()
    try:
        os.kill(sup.children["victim"].pid, signal.SIGKILL)
        reason = sup.watch(poll=0.05)
        assert reason is not None and reason.startswith("victim was killed by SIGKILL")
    finally:
        sup.stop()
    assert gone(sup.children["steady"].pid)


def test_watch_returns_none_when_stopped():
    sup = Supervisor([ServiceSpec("s", script(SLEEPER.format(line="up")), ready_line="up")], out=io.StringIO())
    sup.start()
    sup.stopping.set()
    assert sup.watch(poll=0.05) is None
    sup.stop()


def test_stop_kills_a_child_that_ignores_sigterm():
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
    sup = Supervisor([ServiceSpec("stubborn", script(stubborn), ready_line="up")], out=io.StringIO(),
                     stop_timeout=0.5)
    sup.start()
    assert sup.stop() == {"stubborn": -signal.SIGKILL}


def test_stop_reaches_grandchildren():
    # Like gunicorn's workers: the child's own children must not survive it.
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        "print('grandchild', p.pid, flush=True); time.sleep(600)"
    )
    sup = Supervisor([ServiceSpec("parent", script(code), ready_line="grandchild")], out=io.StringIO())
    sup.start()
    line = next(l for l in sup.children["parent"].lines if l.startswith("grandchild"))
    grandchild = int(line.split()[1])
    sup.stop()
    assert gone(grandchild)


def test_restart_and_kill_are_not_failures():
    sup = Supervisor([ServiceSpec("svc", script(SLEEPER.format(line="up")), ready_line="up")], out=io.StringIO())
    sup.start()
    try:
        first = sup.pids()["svc"]
        sup.restart("svc")
        second = sup.pids()["svc"]
        assert second != first and gone(first)
        assert sup.failed() is None
        sup.kill("svc")
        assert gone(second)
        assert sup.failed() is None
    finally:
        sup.stop()


def test_run_once_returns_output_and_fails_on_nonzero_exit():
    sup = Supervisor([], out=io.StringIO())
    assert sup.run_once(ServiceSpec("step", script("print('  alice / pw')"))) == ["  alice / pw"]
    with pytest.raises(ServiceFailed, match="step exited with code 3: nope"):
        sup.run_once(ServiceSpec("step", script("import sys; print('nope'); sys.exit(3)")))


def test_children_die_with_a_killed_supervisor(tmp_path):
    # A SIGKILLed `make run` cannot clean up: the children must not linger holding ports.
    pidfile = tmp_path / "pid"
    code = (
        "import io, sys, time\n"
        "from stack.supervisor import Supervisor, ServiceSpec\n"
        "sup = Supervisor([ServiceSpec('c', [sys.executable, '-c', \"import time; print('up', flush=True); time.sleep(600)\"],"
        " ready_line='up')], out=io.StringIO())\n"
        "sup.start()\n"
        f"open({str(pidfile)!r}, 'w').write(str(sup.pids()['c']))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    import subprocess

    runner = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "started"
        child = int(pidfile.read_text())
        runner.kill()
        runner.wait(5)
        assert gone(child), "child outlived its SIGKILLed supervisor"
    finally:
        if runner.poll() is None:
            runner.kill()
