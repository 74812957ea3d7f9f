"""The processes under test: broker, relays, sync server (and optionally a private PostgreSQL),
each killable and restartable on the same ports, as the faults need. The broker runs with
CURVE on, with a throwaway key set (stack.keys.KeySet)."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from stack.keys import KeySet
from tests.support.processes import Daemon, free_port, wait_for_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://127.0.0.1:8000"
SECRET = "chaos-sync-secret"


class Cluster:
    def __init__(self, dsn: str, *, relays: int = 2, python: str = sys.executable, keys: KeySet | None = None):
        self.dsn = dsn
        self.python = python
        self.keys = keys or KeySet.generate()
        self.frontend_port, self.backend_port, self.sync_port = free_port(), free_port(), free_port()
        self.frontend = f"tcp://127.0.0.1:{self.frontend_port}"
        self.backend = f"tcp://127.0.0.1:{self.backend_port}"
        self.sockjs_url = f"http://127.0.0.1:{self.sync_port}/sync"
        self.n_relays = relays
        self.broker: Daemon | None = None
        self.relays: dict[str, Daemon] = {}
        self.sync: Daemon | None = None

    # --- processes ---------------------------------------------------------------------
    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OUTBOX_RELAY_", "OUTBOX_BROKER_", "SYNC_"))}
        return {**env, "DATABASE_URL": self.dsn, **extra}

    def start_broker(self) -> Daemon:
        self.broker = Daemon("broker", [self.python, "-m", "outbox_relay.broker"], self._env(
            OUTBOX_BROKER_FRONTEND=self.frontend, OUTBOX_BROKER_BACKEND=self.backend,
            **self.keys.broker_env())).start()
        self.broker.wait_for_line("broker ready", 45)
        return self.broker

    def start_relay(self, name: str, wait: bool = True) -> Daemon:
        d = Daemon(name, [self.python, "-m", "outbox_relay"], self._env(
            OUTBOX_RELAY_BROKER_URL=self.frontend, OUTBOX_RELAY_METRICS_PORT="0", OUTBOX_RELAY_NAME=name,
            OUTBOX_RELAY_POLL_INTERVAL="0.5", OUTBOX_RELAY_LOCK_RETRY="0.3", **self.keys.relay_env())).start()
        self.relays[name] = d
        if wait:
            d.wait_for_line("relay started", 45)
        return d

    def start_sync(self) -> Daemon:
        self.sync = Daemon("syncserver", [self.python, "-m", "syncserver"], self._env(
            SYNC_HOST="127.0.0.1", SYNC_PORT=str(self.sync_port), SYNC_BROKER_URL=self.backend,
            SYNC_ALLOWED_ORIGINS=ORIGIN, SYNC_TOKEN_SECRET=SECRET, **self.keys.sync_env())).start()
        wait_for_port(self.sync_port, 45)
        self.sync.wait_for_line("syncserver ready", 45)
        return self.sync

    def start(self) -> "Cluster":
        self.start_broker()
        for i in range(self.n_relays):
            self.start_relay(f"relay-{i + 1}")
        self.start_sync()
        return self

    def stop(self) -> None:
        for d in [self.sync, *self.relays.values(), self.broker]:
            if d is not None:
                d.stop()

    def outputs(self) -> str:
        return "\n".join(f"--- {d.name}\n{d.output()}" for d in [self.broker, *self.relays.values(), self.sync] if d)

    # --- facts -------------------------------------------------------------------------
    def leader(self, timeout: float = 15.0) -> str:
        """The name of the relay holding leadership (outbox_relay_state.leader), waiting for one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    row = conn.execute("SELECT leader FROM outbox_relay_state WHERE id = 1").fetchone()
                    holder = conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()[0]
            except psycopg.OperationalError:
                row, holder = None, 0
            if row and row[0] and holder:
                for name, d in self.relays.items():
                    if d.alive() and name in row[0]:
                        return name
            time.sleep(0.1)
        raise TimeoutError(f"no live relay leads after {timeout}s")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (pgserver's binaries, initdb'd in a temp dir) that the
    chaos run may restart: never the machine's shared server."""

    def __init__(self) -> None:
        import pgserver

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


def migrate(dsn: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
                   env={**os.environ, "DATABASE_URL": dsn}, cwd=ROOT, check=True, timeout=300)
