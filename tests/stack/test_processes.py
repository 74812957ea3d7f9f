"""stack.processes, the one process runner of make run, the tests, chaos and bench: with tiny
real Python children (the supervisor's policy is in test_supervisor.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from stack.processes import NotReady, Process, ProcessGroup
from tests.stack.test_supervisor import gone

SLEEPER = "import time; print('up', flush=True); time.sleep(600)"


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_started_from_a_short_lived_thread_outlives_the_thread():
    # Chaos restarts relays from asyncio.to_thread workers: PR_SET_PDEATHSIG belongs to the
    # thread that forked, so a child forked there got SIGTERM when that thread ended.
    started: list[Process] = []
    helper = threading.Thread(target=lambda: started.append(Process("child", py(SLEEPER)).start()))
    helper.start()
    helper.join()
    child = started[0]
    try:
        child.wait_for_line("up")
        deadline = time.monotonic() + 10  # until the helper's OS thread is gone, not just joined
        while os.path.exists(f"/proc/self/task/{helper.native_id}") and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(subprocess.TimeoutExpired):
            child.proc.wait(1)
        assert child.alive()
    finally:
        child.stop()


def test_a_child_dies_with_the_process_that_started_it(tmp_path):
    pidfile = tmp_path / "pid"
    code = (
        "import sys, threading, time\n"
        "from stack.processes import Process\n"
        f"t = threading.Thread(target=lambda: open({str(pidfile)!r}, 'w').write(str(Process('c', {py(SLEEPER)!r}).start().pid)))\n"
        "t.start(); t.join()\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(py(code), stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "started"
        child = int(pidfile.read_text())
        assert not gone(child, 0.5)
        parent.kill()
        parent.wait(5)
        assert gone(child), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_wait_for_line_sees_lines_already_printed_and_lines_buried_in_a_flood():
    flood = ("import sys, time; print('early', flush=True); time.sleep(0.3); print('needle', flush=True);"
             "[print('filler', i) for i in range(5000)]; sys.stdout.flush(); time.sleep(600)")
    p = Process("flood", py(flood), keep=10).start()
    try:
        assert p.wait_for_line("needle", 30) == "needle"  # registered before it came, kept past the flood
        # The waiter may return before the flood is read: once it is, only the last 10
        # lines are kept, the needle not among them.
        p.wait_for_line("filler 4999", 30)
        assert "needle" not in p.output()
        p2 = Process("early", py(SLEEPER)).start()
        try:
            time.sleep(0.2)
            p2.wait_for_line("up", 30)
            assert p2.wait_for_line("up", 0.1) == "up"      # already printed: found at once
        finally:
            p2.stop()
    finally:
        p.stop()


def test_not_ready_gives_a_one_line_reason_and_the_output():
    p = Process("bad", py("import sys; print('hello'); print('boom: no config', file=sys.stderr); sys.exit(2)"))
    with pytest.raises(NotReady) as info:
        p.start().wait_ready(line="never", timeout=30)
    assert info.value.reason == "bad exited with code 2 before it was ready: boom: no config"
    assert "hello" in str(info.value)
    mute = Process("mute", py("import time; time.sleep(600)")).start()
    try:
        with pytest.raises(NotReady, match="mute did not print 'x' within 0s"):
            mute.wait_ready(line="x", timeout=0.3)
    finally:
        mute.stop()


def test_an_interactive_child_is_driven_line_by_line():
    echo = ("import json, sys\n"
            "print('noise', flush=True)\n"
            "for line in sys.stdin:\n"
            "    print(json.dumps({'got': line.strip()}), flush=True)\n")
    p = Process("echo", py(echo), interactive=True).start()
    try:
        assert p.ask_json("report") == {"got": "report"}  # 'noise' is skipped: not a JSON line
        p.send("again")
        assert p.expect('{"got"', 10) == '{"got": "again"}'
    finally:
        assert p.stop() is not None


def test_a_group_stops_everything_it_started_and_their_children():
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
            "print('child', c.pid, flush=True); time.sleep(600)")
    with ProcessGroup() as group:
        a = group.start("a", py(code))
        b = group.start("b", py(SLEEPER))
        grandchild = int(a.wait_for_line("child").split()[1])
        b.wait_for_line("up")
    assert gone(a.pid) and gone(b.pid) and gone(grandchild)
