"""A PostgreSQL cluster of the chaos run's own, which the "restart PostgreSQL" fault may
restart: never the machine's shared server."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (pgserver's binaries, initdb'd in a temp dir) that the
    chaos run may restart: never the machine's shared server."""

    def __init__(self) -> None:
        from runtime.database import load_pgserver

        pgserver = load_pgserver()

        self.dir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.server = pgserver.get_server(self.dir / "data", cleanup_mode="delete")
        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"

    def url(self, dbname: str) -> str:
        with psycopg.connect(self.server.get_uri("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.server.get_uri(dbname)

    def restart(self, mode: str = "fast") -> None:
        argv = [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "-t", "60",
                "-l", str(self.dir / "data" / "log"), "restart"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.server.system_user or "pgserver", "--", *argv]
        # No pipes: the new postmaster would inherit them and keep them open.
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=90)

    def cleanup(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
