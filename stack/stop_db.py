"""`make stop-db`: stop the embedded PostgreSQL that `make run` left running.

runtime.database starts pgserver with cleanup_mode=None, so the server outlives `make run`
(data persists, the next start is instant). This stops it the way `pg_ctl stop -m fast`
does: SIGINT to the postmaster named in .pgdata/postmaster.pid (fast shutdown: active
sessions are ended, everything committed is on disk), then wait for it to exit. Signalling
directly works whoever owns the data folder (pgserver runs the server as user "pgserver"
when started by root, where pg_ctl would refuse to run).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from runtime.database import EMBEDDED_PGDATA


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid in postmaster.pid if that process is a running postgres, else None."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0].strip()
        pid = int(first)
    except (FileNotFoundError, IndexError, ValueError):
        return None
    if not _is_postgres(pid, pgdata):
        return None  # a stale file: the pid may now belong to an unrelated process
    return pid


def _is_postgres(pid: int, pgdata: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc (macOS): trust the pid file if the process exists.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    exe = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline and cmdline[0] else ""
    return exe in ("postgres", "postmaster") or any(str(pgdata.resolve()).encode() in part for part in cmdline)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pgdata: Path, timeout: float = 30.0) -> str:
    """Stop the server of pgdata; returns what happened, raises TimeoutError if it won't."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return f"embedded PostgreSQL ({pgdata}) is not running"
    os.kill(pid, signal.SIGINT)  # "fast shutdown"
    deadline = time.monotonic() + timeout
    while _exists(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    return f"embedded PostgreSQL ({pgdata}) stopped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.stop_db", description=__doc__.splitlines()[0])
    parser.add_argument("--pgdata", type=Path, default=EMBEDDED_PGDATA, help=f"data folder (default {EMBEDDED_PGDATA})")
    args = parser.parse_args(argv)
    try:
        print(stop(args.pgdata))
    except (TimeoutError, PermissionError) as exc:
        print(f"stop-db: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
