"""Throwaway PostgreSQL clusters for counting CPU instructions: initdb one, prepare it
through a normal server on a private socket, stop it, then run SQL scripts through
`postgres --single` under valgrind (callgrind) on fresh copies of it. Instruction counts do
not depend on what else the machine is doing (they repeat to within about 0.1%), so they
settle what a noisy shared VM cannot. Used by bench.claim_cost and bench.writer_cost.

Needs initdb, pg_ctl and postgres (pg_config --bindir) and valgrind; as root, PostgreSQL
runs as the postgres user.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import psycopg


def work_dir(prefix: str) -> Path:
    """A new temporary directory that PostgreSQL (run as postgres when we are root) can use."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
    return work


def server_bindir() -> Path:
    """Where PostgreSQL's server programs are (pg_config --bindir)."""
    return Path(subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout.strip())


def as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def single(bindir: Path, datadir: Path, script: str, valgrind_out: Path | None = None,
           dbname: str = "postgres") -> str:
    """Run SQL lines through `postgres --single` (each line one statement); returns its output."""
    cmd = [str(bindir / "postgres"), "--single", "-D", str(datadir), "-c", "fsync=off", dbname]
    if valgrind_out:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind_out}"] + cmd
    done = subprocess.run(as_postgres(cmd), input=script, capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def instructions(output: str) -> int:
    """The instruction total that valgrind printed in `output`."""
    return int(re.search(r"refs:\s+([\d,]+)", output).group(1).replace(",", ""))


def fresh_copy(data: Path, run: Path) -> Path:
    """A copy of a stopped cluster to run once (`postgres --single` changes it), owned by postgres."""
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(data, run, symlinks=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres", str(run)], check=True)
    return run


def new_cluster(bindir: Path, work: Path, data: Path, prepare: Callable[[str], None]) -> None:
    """initdb a cluster in `data`, start it on a socket in `work` only, call prepare(url of
    its postgres database), then checkpoint and stop it."""
    subprocess.run(as_postgres([str(bindir / "initdb"), "-D", str(data), "--locale=C.UTF-8"]),
                   check=True, capture_output=True)
    port = 20000 + os.getpid() % 20000
    ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-w"]
    subprocess.run(as_postgres(ctl + ["-o", f"-p {port} -k {work} -c listen_addresses=''", "-l",
                                      str(work / "server.log"), "start"]), check=True, capture_output=True)
    try:
        url = f"postgresql://postgres@/postgres?host={work}&port={port}"
        prepare(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    finally:
        subprocess.run(as_postgres(ctl + ["-m", "fast", "stop"]), check=True, capture_output=True)
