"""A throwaway stack of real daemons for tests, chaos and bench: a broker, any number of
relays and sync servers as processes on free ports, against a given database, with a
throwaway CURVE key set (stack.keys.KeySet). Every service can be killed (any signal),
restarted on the same ports with the same settings, or stopped; `outputs()` gathers what
they printed, for failure messages.

    cluster = Cluster(db_url, relays=2).start()   # broker, relay-1, relay-2, syncserver
    cluster.kill("relay-1")                       # SIGKILL; cluster.restart("relay-1") brings it back
    cluster.sockjs_url                            # http://127.0.0.1:<port>/sync
    cluster.stop()

    Cluster(db_url, sync_servers=3, balancer=True)  # + HAProxy (stack/balancer.py) in front:
                                                    # sockjs_url is the balancer's

`make run` (stack/run.py) is the other way to run the daemons: fixed ports, the portal,
migrate and seed, the key set kept in .curve/. Both run the same modules and wait for the
same ready lines (stack.run.MODULES, READY_LINES).

Invariant: a service's settings are the cluster's (ports, keys, database, origin, token
secret), then the cluster-wide extras, then the ones given at its start; nothing of ours
is inherited from the caller's environment (variables with our prefixes are dropped), so
a developer's shell cannot change what a test or a benchmark measures.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Mapping, TextIO

import psycopg

from outbox_relay.leader import LEADER_ALIVE_SQL
from stack.balancer import DRAIN_SECONDS, INSTALL_HINT, Backend, haproxy_argv, haproxy_binary, haproxy_config
from stack.keys import KeySet
from stack.processes import ROOT, STOP_TIMEOUT, PrefixedOutput, Process, free_port
from stack.run import MODULES, READY_LINES

log = logging.getLogger(__name__)

ORIGIN = "http://127.0.0.1:8000"     # the browser origin the sync servers allow
TOKEN_SECRET = "cluster-token-secret"  # what the sync servers verify tokens with (mint with it)
READY_TIMEOUT = 45.0
OUR_PREFIXES = ("OUTBOX_", "SYNC_", "PORTAL_")


def isolated_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """env (default: ours) without the variables our daemons read by prefix.

    >>> isolated_env({"PATH": "/bin", "SYNC_PORT": "1", "OUTBOX_RELAY_NAME": "x"})
    {'PATH': '/bin'}
    """
    return {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith(OUR_PREFIXES)}


@dataclass
class _Recipe:
    """How a service was started, to start it again the same way."""
    role: str                      # broker, relay, syncserver
    env: dict[str, str]
    wait: str | None
    port: int | None = None
    argv: list[str] = field(default_factory=list)


class Cluster:
    def __init__(self, database_url: str, *, relays: int = 1, sync_servers: int = 1, keys: KeySet | None = None,
                 origin: str = ORIGIN, token_secret: str = TOKEN_SECRET, broker_env: Mapping[str, str] | None = None,
                 relay_env: Mapping[str, str] | None = None, sync_env: Mapping[str, str] | None = None,
                 python: str = sys.executable, log_to: TextIO | None = None, ready_timeout: float = READY_TIMEOUT,
                 balancer: bool = False):
        self.database_url = database_url
        self.n_relays = relays
        self.n_sync = sync_servers
        self.keys = keys or KeySet.generate()
        self.origin = origin
        self.token_secret = token_secret
        self.python = python
        self.ready_timeout = ready_timeout
        self.frontend_port, self.backend_port = free_port(), free_port()
        self.frontend = f"tcp://127.0.0.1:{self.frontend_port}"  # XSUB: relays publish here
        self.backend = f"tcp://127.0.0.1:{self.backend_port}"    # XPUB: sync servers subscribe here
        self.sync_ports: dict[str, int] = {"syncserver": free_port()}
        self.balanced = balancer
        self.balancer_port = free_port() if balancer else None
        self._haproxy = haproxy_binary() if balancer else None
        if balancer and self._haproxy is None:
            raise RuntimeError(INSTALL_HINT)
        self._config_dir: tempfile.TemporaryDirectory | None = None
        # Behind the balancer: X-Forwarded-For names the client; SIGTERM drains first.
        behind = {"SYNC_TRUSTED_PROXIES": "127.0.0.1", "SYNC_DRAIN_SECONDS": str(DRAIN_SECONDS)} if balancer else {}
        self.extra = {"broker": dict(broker_env or {}), "relay": dict(relay_env or {}),
                      "syncserver": {**behind, **(sync_env or {})}}
        self.services: dict[str, Process] = {}  # by name, in the order they were first started
        self._recipes: dict[str, _Recipe] = {}
        self._base_env = isolated_env()
        self._out = PrefixedOutput(log_to) if log_to is not None else None

    # ------------------------------------------------------------ addresses
    @property
    def sync_port(self) -> int:
        return self.sync_ports["syncserver"]

    @property
    def sync_base(self) -> str:
        """http://127.0.0.1:<port> of the first sync server (/healthz, /metrics)."""
        return f"http://127.0.0.1:{self.sync_port}"

    @property
    def sockjs_url(self) -> str:
        """The SockJS endpoint browsers are given: the balancer's, else the first sync server's."""
        if self.balancer_port is not None:
            return f"http://127.0.0.1:{self.balancer_port}/sync"
        return f"{self.sync_base}/sync"

    def sync_url_of(self, name: str) -> str:
        """One sync server's own SockJS endpoint (bypassing the balancer)."""
        return f"http://127.0.0.1:{self.sync_ports[name]}/sync"

    # ------------------------------------------------------------ services
    @property
    def broker(self) -> Process | None:
        return self.services.get("broker")

    @property
    def relays(self) -> dict[str, Process]:
        return {n: p for n, p in self.services.items() if self._recipes[n].role == "relay"}

    @property
    def syncs(self) -> dict[str, Process]:
        return {n: p for n, p in self.services.items() if self._recipes[n].role == "syncserver"}

    @property
    def sync(self) -> Process | None:
        return self.services.get("syncserver")

    def start_broker(self, **env: str) -> Process:
        """The broker (named "broker"), ready."""
        return self._start("broker", _Recipe("broker", {
            "OUTBOX_BROKER_FRONTEND": self.frontend, "OUTBOX_BROKER_BACKEND": self.backend,
            **self.keys.broker_env(), **self.extra["broker"], **env}, READY_LINES["broker"]))

    def start_relay(self, name: str = "relay-1", wait: str | None = READY_LINES["relay"], **env: str) -> Process:
        """A relay named `name` (its OUTBOX_RELAY_NAME too); waits for the line `wait`
        ("relay started", "relay leader", "relay standby"; None: no wait)."""
        return self._start(name, _Recipe("relay", {
            "DATABASE_URL": self.database_url, "OUTBOX_RELAY_BROKER_URL": self.frontend,
            "OUTBOX_RELAY_NAME": name, "OUTBOX_RELAY_METRICS_PORT": "0",
            **self.keys.relay_env(), **self.extra["relay"], **env}, wait))

    def start_sync(self, name: str = "syncserver", **env: str) -> Process:
        """A sync server on a port of its own (the same one again on a restart), ready:
        listening and having printed its ready line."""
        port = self.sync_ports.setdefault(name, free_port())
        return self._start(name, _Recipe("syncserver", {
            "DATABASE_URL": self.database_url, "SYNC_HOST": "127.0.0.1", "SYNC_PORT": str(port),
            "SYNC_BROKER_URL": self.backend, "SYNC_ALLOWED_ORIGINS": self.origin,
            "SYNC_TOKEN_SECRET": self.token_secret, **self.keys.sync_env(), **self.extra["syncserver"], **env},
            READY_LINES["syncserver"], port=port))

    def start(self) -> "Cluster":
        """Broker, relay-1..N, then the sync servers (syncserver, syncserver-2, ...), each
        ready before the next; everything stopped again if one fails."""
        try:
            self.start_broker()
            for i in range(self.n_relays):
                self.start_relay(f"relay-{i + 1}")
            for i in range(self.n_sync):
                self.start_sync("syncserver" if i == 0 else f"syncserver-{i + 1}")
            if self.balanced:
                self.start_balancer()
        except BaseException:
            self.stop()
            raise
        return self

    def start_balancer(self) -> Process:
        """HAProxy (named "balancer") on balancer_port in front of every sync server started
        so far (its configuration names them), ready when it listens."""
        assert self.balancer_port is not None and self._haproxy is not None, "Cluster(balancer=True) only"
        if self._config_dir is None:
            self._config_dir = tempfile.TemporaryDirectory(prefix="cluster-haproxy-")
        path = os.path.join(self._config_dir.name, "haproxy.cfg")
        backends = [Backend(name, "127.0.0.1", self.sync_ports[name]) for name in self.syncs]
        with open(path, "w", encoding="utf-8") as f:
            f.write(haproxy_config(self.balancer_port, backends))
        return self._start("balancer", _Recipe("balancer", {}, None, port=self.balancer_port,
                                               argv=haproxy_argv(self._haproxy, path)))

    def _start(self, name: str, recipe: _Recipe) -> Process:
        old = self.services.get(name)
        if old is not None:
            old.stop()  # a dead one is only reaped; a live one must not hold the ports
        if recipe.role in MODULES:
            recipe.argv = [self.python, "-m", MODULES[recipe.role]]
        if self._out is not None:
            self._out.add(name)
        p = Process(name, recipe.argv, recipe.env, base_env=self._base_env, cwd=ROOT,
                    on_line=self._out.emit if self._out is not None else None)
        self.services[name] = p
        self._recipes[name] = recipe
        p.start()
        if recipe.wait is not None or recipe.port is not None:
            p.wait_ready(line=recipe.wait, port=recipe.port, timeout=self.ready_timeout)
        return p

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send sig to a service's process group (SIGKILL, SIGSTOP, SIGCONT...)."""
        self.services[name].signal(sig)

    def restart(self, name: str) -> Process:
        """Stop a service (if it still runs) and start it again, same ports and settings."""
        return self._start(name, self._recipes[name])

    def stop(self, name: str | None = None, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """Stop one service, or every one (last started first: nothing publishes into a
        stopped broker). Returns the exit codes."""
        names = [name] if name is not None else list(reversed(self.services))
        targets = [self.services[n] for n in names if n in self.services]
        for p in targets:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {p.name: p.finish(max(0.1, deadline - time.monotonic())) for p in targets}
        if name is None and self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None
        return codes

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.services.items() if p.alive()}

    def outputs(self) -> str:
        """Every service's kept output, for a failure message."""
        return "\n".join(f"--- {name}\n{p.output()}" for name, p in self.services.items())

    # ------------------------------------------------------------ facts
    def leader(self, timeout: float = 15.0) -> str:
        """The name of the relay that leads, waiting for one: outbox_relay_state.leader names
        exactly one of this cluster's relays, that process is alive, and some session holds
        the relays' leadership lock (outbox_relay.leader.LOCK_KEY) in this database. (Which
        session holds it is not checked: a relay killed a moment ago may still hold it until
        its process is reaped; callers that just killed the leader wait for that first.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                    row = conn.execute("SELECT leader FROM outbox_relay_state WHERE id = 1").fetchone()
                    locked = conn.execute(LEADER_ALIVE_SQL).fetchone()[0]
            except psycopg.OperationalError:
                row, locked = None, False
            name = row[0] if row else None
            if locked and name in self.relays and self.relays[name].alive():
                return name
            time.sleep(0.1)
        raise TimeoutError(f"no live relay leads after {timeout}s")

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def migrate(database_url: str, timeout: float = 300.0) -> None:
    """`manage.py migrate` against database_url (the outbox schema and the portal's)."""
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
                   env={**os.environ, "DATABASE_URL": database_url}, cwd=ROOT, check=True, timeout=timeout)
