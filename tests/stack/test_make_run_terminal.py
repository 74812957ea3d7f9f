"""`make run` in a real terminal: Ctrl-C (the terminal's SIGINT to its foreground process
group) stops the stack, and make reports no error.

GNU make, when it gets a SIGINT itself, waits for its child and then says "Interrupt" and
exits 130 even though the child stopped cleanly with 0. The stack takes the terminal's
foreground for a process group of its own while it runs (stack.run.own_terminal), so Ctrl-C
reaches only the stack."""
from __future__ import annotations

import os
import pty
import select
import shutil
import time

import pytest

from stack.processes import ROOT
from tests.stack.test_run import stack_env

pytestmark = pytest.mark.django_db(transaction=True)


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_ctrl_c_in_a_terminal_stops_make_run_with_exit_0(db_url):
    env = {**os.environ, **stack_env(db_url), "ARGS": "--services broker --no-seed"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: make run, with the pty as its controlling terminal
        os.chdir(ROOT)
        os.execvpe("make", ["make", "--no-print-directory", "run"], env)
    try:
        out = read_until(fd, b"is running", 120)
        assert b"is running" in out, out.decode(errors="replace")
        os.write(fd, b"\x03")  # Ctrl-C, as typed: the line discipline sends SIGINT
        out += read_until(fd, b"\x00never", 30)
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)
    text = out.decode(errors="replace")
    assert "all services stopped" in text, text[-2000:]
    assert "Interrupt" not in text and "Error 130" not in text, text[-2000:]
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
