"""`make run`: the whole stack from one command.

Resolves the database (embedded PostgreSQL under .pgdata unless DATABASE_URL is set),
loads the broker's CURVE keys from .curve/ (created on the first start), migrates, seeds
the demo, then runs broker, relay, sync server and portal as children of this process,
each ready before the next, with their output prefixed by name. Ctrl-C or
SIGTERM stops them all and exits 0; a child that dies stops them all and exits 1.
With --sync-servers N (N > 1) the sync servers are syncserver-1..N on SYNC_PORT + 1..N
behind HAProxy ("balancer", stack/balancer.py) on SYNC_PORT, so browsers and the portal
see one URL either way.

`Stack` is the same thing as a class, for tests that need the whole stack as `make run`
starts it (on other ports, against another database).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Mapping, TextIO
from urllib.parse import urlsplit, urlunsplit

from runtime import values
from runtime.settings import RUN, SettingError, given, is_set, read, setting, value
from stack.balancer import DRAIN_SECONDS, INSTALL_HINT, Backend, haproxy_argv, haproxy_binary, haproxy_config
from stack.keys import KeyFileError, KeySet
from stack.supervisor import ServiceFailed, ServiceSpec, Supervisor, duplicate_ports, taken_ports

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
KEYS_DIR = ROOT / ".curve"  # make run's CURVE keys (git-ignored)
SERVICES = ("broker", "relay", "syncserver", "portal")  # start order; stopped in reverse

# Module each service runs (python -m ...); checked up front so a missing daemon is named.
MODULES = {
    "broker": "outbox_relay.broker",
    "relay": "outbox_relay",
    "syncserver": "syncserver",
}
READY_LINES = {"broker": "broker ready", "relay": "relay started", "syncserver": "syncserver ready"}


class StackError(RuntimeError):
    """The stack cannot start or had to stop; str() is the one-line reason."""


class ConfigError(StackError):
    """The command line or the key directory is unusable (exit code 2, as a SettingError)."""


# ---------------------------------------------------------------- configuration (pure)

@dataclass(frozen=True)
class Ports:
    """The ports `make run` binds, checks, waits on and prints. It refuses port 0 even where a
    daemon accepts it (it must know every port; the relay's standbys take metrics port + 1,
    + 2, ...), and takes a bare port for a broker address."""
    COMPONENT: ClassVar[str] = RUN
    ALSO_READS: ClassVar[tuple[str, ...]] = ("DATABASE_URL",)  # resolve_database

    portal: int = setting("PORTAL_PORT", parse=values.port())
    sync: int = setting("SYNC_PORT", parse=values.port())
    broker_frontend: int = setting("OUTBOX_BROKER_FRONTEND", parse=values.address_port)  # XSUB: relays publish
    broker_backend: int = setting("OUTBOX_BROKER_BACKEND", parse=values.address_port)    # XPUB: sync servers read
    relay_metrics: int = setting("OUTBOX_RELAY_METRICS_PORT", parse=values.port())

    def bound_by(self, services: tuple[str, ...], relays: int = 1, sync_servers: int = 1) -> list[tuple[str, int]]:
        """(what, port) for every port the given services bind, for the up-front check.
        Several sync servers: HAProxy on SYNC_PORT, the servers on the ports after it."""
        table = [
            ("portal", "portal (PORTAL_PORT)", self.portal),
            ("syncserver", "sync server (SYNC_PORT)" if sync_servers == 1 else "balancer (SYNC_PORT)", self.sync),
            ("broker", "broker frontend (OUTBOX_BROKER_FRONTEND)", self.broker_frontend),
            ("broker", "broker backend (OUTBOX_BROKER_BACKEND)", self.broker_backend),
            ("relay", "relay metrics (OUTBOX_RELAY_METRICS_PORT)", self.relay_metrics),
        ]
        table += [("relay", f"relay-{i + 1} metrics", self.relay_metrics + i) for i in range(1, relays)]
        if sync_servers > 1:
            table += [("syncserver", f"syncserver-{i} (SYNC_PORT + {i})", self.sync + i)
                      for i in range(1, sync_servers + 1)]
        return [(what, port) for service, what, port in table if service in services]


def ports_from_env(env: Mapping[str, str]) -> Ports:
    """The stack's ports from PORTAL_PORT, SYNC_PORT, OUTBOX_BROKER_FRONTEND/BACKEND
    (tcp://host:port or a bare port) and OUTBOX_RELAY_METRICS_PORT; SettingError if bad."""
    return read(Ports, env)


def _unless_set(env: Mapping[str, str], derived: dict[str, str]) -> dict[str, str]:
    """derived without the settings the user gave, as a value or as a _FILE."""
    return {k: v for k, v in derived.items() if not is_set(env, k)}


def service_specs(ports: Ports, database_url: str, env: Mapping[str, str], *,
                  services: tuple[str, ...] = SERVICES, relays: int = 1, keys: KeySet | None = None,
                  python: str = sys.executable, sync_servers: int = 1, haproxy: str = "haproxy",
                  balancer_config: Path | None = None) -> list[ServiceSpec]:
    """What to run for each service, in start order. Values the user set in env win over
    the ones derived from the ports (e.g. SYNC_PUBLIC_URL behind a proxy) and over the
    CURVE keys in `keys` (None: the user's environment must give them all).

    sync_servers > 1: syncserver-1..N on SYNC_PORT + 1..N, then "balancer", HAProxy on
    SYNC_PORT with the configuration at balancer_config (write it with
    stack.balancer.haproxy_config(ports.sync, balanced_backends(ports, N)))."""
    frontend = f"tcp://127.0.0.1:{ports.broker_frontend}"
    backend = f"tcp://127.0.0.1:{ports.broker_backend}"
    portal_origins = f"http://127.0.0.1:{ports.portal},http://localhost:{ports.portal}"

    def derived(**urls: str) -> dict[str, str]:
        # A URL the user set (tcp://0.0.0.0:6557, https://sync.example.com/sync) is passed
        # on as written; a bare port (OUTBOX_BROKER_FRONTEND=6557) only picks the port.
        chosen = {k: mine if "://" in (mine := given(env, k) or "") else v for k, v in urls.items()}
        return {"DATABASE_URL": database_url, **chosen}

    def keyed(role_env: Callable[[KeySet], dict[str, str]]) -> dict[str, str]:
        return _unless_set(env, role_env(keys)) if keys is not None else {}

    specs: list[ServiceSpec] = []
    if "broker" in services:
        specs.append(ServiceSpec(
            "broker", [python, "-m", MODULES["broker"]],
            {**derived(OUTBOX_BROKER_FRONTEND=frontend, OUTBOX_BROKER_BACKEND=backend),
             **keyed(KeySet.broker_env)},
            ready_line=READY_LINES["broker"],
        ))
    if "relay" in services:
        for i in range(relays):
            specs.append(ServiceSpec(
                "relay" if i == 0 else f"relay-{i + 1}", [python, "-m", MODULES["relay"]],
                {**derived(OUTBOX_RELAY_BROKER_URL=frontend), **keyed(KeySet.relay_env),
                 "OUTBOX_RELAY_METRICS_PORT": str(ports.relay_metrics + i)},
                ready_line=READY_LINES["relay"],
            ))
    if "syncserver" in services:
        sync_env = {**derived(SYNC_BROKER_URL=backend, SYNC_ALLOWED_ORIGINS=portal_origins,
                              # A development stack: the sync server accepts the development
                              # token secret (it refuses it otherwise, see syncserver/config.py).
                              SYNC_DEVELOPMENT="1"),
                    **keyed(KeySet.sync_env), "SYNC_HOST": "127.0.0.1"}
        if sync_servers == 1:
            specs.append(ServiceSpec("syncserver", [python, "-m", MODULES["syncserver"]],
                                     {**sync_env, "SYNC_PORT": str(ports.sync)},
                                     ready_line=READY_LINES["syncserver"], ready_port=ports.sync))
        else:
            # Behind HAProxy on this host: its X-Forwarded-For names the browser a polling
            # session is bound to; on SIGTERM each fails /healthz long enough for HAProxy to notice.
            balanced = {**sync_env, **_unless_set(env, {"SYNC_TRUSTED_PROXIES": "127.0.0.1",
                                                        "SYNC_DRAIN_SECONDS": str(DRAIN_SECONDS)})}
            for backend_ in balanced_backends(ports, sync_servers):
                specs.append(ServiceSpec(backend_.name, [python, "-m", MODULES["syncserver"]],
                                         {**balanced, "SYNC_PORT": str(backend_.port)},
                                         ready_line=READY_LINES["syncserver"], ready_port=backend_.port))
            specs.append(ServiceSpec("balancer", haproxy_argv(haproxy, str(balancer_config or "haproxy.cfg")),
                                     {}, ready_port=ports.sync))
    if "portal" in services:
        # runserver, not gunicorn: one process to supervise, DEBUG error pages, and static
        # files served straight from the sources (no collectstatic step, edits show at
        # once). compose.yaml runs gunicorn + whitenoise for deployment.
        # In development the portal gets the relay's publisher key, for the admin's
        # "Replay" action; compose gives a deployed portal none (docs/security.md).
        specs.append(ServiceSpec(
            "portal",
            [python, str(ROOT / "manage.py"), "runserver", "--noreload", f"127.0.0.1:{ports.portal}"],
            {**derived(SYNC_PUBLIC_URL=f"http://127.0.0.1:{ports.sync}/sync", OUTBOX_RELAY_BROKER_URL=frontend),
             **keyed(KeySet.relay_env)},
            ready_port=ports.portal,
        ))
    return specs


def balanced_backends(ports: Ports, sync_servers: int) -> list[Backend]:
    """The sync servers behind the balancer: syncserver-i on SYNC_PORT + i."""
    return [Backend(f"syncserver-{i}", "127.0.0.1", ports.sync + i) for i in range(1, sync_servers + 1)]


def missing_modules(services: tuple[str, ...]) -> list[str]:
    """The services whose daemon module does not exist (not written, not installed)."""
    missing = []
    for name in services:
        module = MODULES.get(name)
        if module is None:
            continue
        target = module if "." in module else module + ".__main__"
        try:
            found = importlib.util.find_spec(target) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(f"{name} (python -m {module}: no module {target})")
    return missing


def seed_command_exists() -> bool:
    return any(ROOT.glob("portal/**/management/commands/seed_demo.py"))


def parse_demo_users(lines: list[str]) -> list[tuple[str, str]]:
    """(username, password) pairs from seed_demo's output, which lists them as indented
    `username / password` lines.

    >>> parse_demo_users(["Demo data ready.", "  alice / alice-demo", "  bob / bob-demo"])
    [('alice', 'alice-demo'), ('bob', 'bob-demo')]
    """
    users = []
    for line in lines:
        match = re.fullmatch(r"\s+(\S+) / (\S+)\s*", line)
        if match:
            users.append((match[1], match[2]))
    return users


def banner(portal_url: str, users: list[tuple[str, str]], *, sync_url: str | None, database: str,
           metrics_url: str | None) -> str:
    """The block printed once everything is ready (None: that service is not running)."""
    width = 72
    lines = ["=" * width, f"  Cloud Checklist is running:  {portal_url}", ""]
    if users:
        lines.append("  Demo users (username / password):")
        lines += [f"    {name} / {password}" for name, password in users]
    else:
        lines.append("  No demo users were seeded: create one with")
        lines.append("    .venv/bin/python manage.py createsuperuser")
    lines.append("")
    if sync_url:
        lines.append(f"  Sync server:   {sync_url}")
    if metrics_url:
        lines.append(f"  Relay metrics: {metrics_url}")
    lines += [
        f"  Database:      {database}",
        "  Ctrl-C stops everything; PostgreSQL keeps running (make stop-db).",
        "=" * width,
    ]
    return "\n".join(lines)


def redact(url: str) -> str:
    """The database URL without its password, for messages and the banner.

    >>> redact("postgresql://app:s3cret@db:5432/checklist")
    'postgresql://app:***@db:5432/checklist'
    """
    parts = urlsplit(url)
    if parts.scheme and parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return re.sub(r"password=\S+", "password=***", url)


# ---------------------------------------------------------------- the stack

def resolve_database(env: Mapping[str, str]) -> str:
    """DATABASE_URL from env, else the embedded server; StackError when it does not answer
    (SettingError when DATABASE_URL is malformed)."""
    import psycopg

    url = value(env, "DATABASE_URL")
    if not url:
        from runtime import database

        # pgserver logs its whole server log on failure; our one line names the file instead.
        logging.getLogger("pgserver").setLevel(logging.CRITICAL)
        try:
            url = database.embedded_url()
        except Exception as exc:  # noqa: BLE001 - pgserver raises many kinds; all are fatal here
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise StackError(
                f"embedded PostgreSQL could not start: {type(exc).__name__}"
                f"{': ' + detail if detail else ''} (server log: {database.EMBEDDED_PGDATA / 'log'})"
            ) from exc
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            built_earlier = conn.execute(EARLIER_HISTORY_SQL).fetchone()[0] and not conn.execute(
                "SELECT EXISTS (SELECT 1 FROM django_migrations WHERE app = 'outbox' AND name = '0001_schema')"
            ).fetchone()[0]
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StackError(f"PostgreSQL is not reachable at {redact(url)}: {first}") from exc
    if built_earlier:
        hint = "make stop-db && rm -rf .pgdata" if given(env, "DATABASE_URL") is None else "drop and create it"
        raise StackError(f"the database at {redact(url)} was built by an earlier, unreleased history of the outbox"
                         f" schema and cannot be migrated; make it again: {hint}")
    return url


# A database that has an outbox Django did not build from migrations/schema.sql (outbox
# 0001_schema): an earlier, unreleased migration history made it, and nothing moves it forward.
EARLIER_HISTORY_SQL = ("SELECT to_regclass('outbox') IS NOT NULL AND to_regclass('django_migrations') IS NOT NULL")


class Stack:
    """The whole stack as `make run` runs it.

        stack = Stack(env={"PORTAL_PORT": "18000", "DATABASE_URL": url})
        stack.start()          # checks, migrate, seed, every service ready; StackError if not
        stack.kill("relay")    # fault injection; restart("relay") brings it back
        stack.stop()
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, services: tuple[str, ...] = SERVICES,
                 relays: int = 1, seed: bool = True, out: TextIO | None = None, color: bool = False,
                 keys: KeySet | None = None, keys_dir: Path = KEYS_DIR, sync_servers: int = 1):
        self.env = dict(os.environ if env is None else {**os.environ, **env})
        unknown = [s for s in services if s not in SERVICES]
        if unknown:
            raise ConfigError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
        if relays < 1:
            raise ConfigError("relays must be at least 1")
        if sync_servers < 1:
            raise ConfigError("sync servers must be at least 1")
        self.sync_servers = sync_servers
        self.haproxy: str | None = None
        self._config_dir: tempfile.TemporaryDirectory | None = None
        if sync_servers > 1 and "syncserver" in services:
            self.haproxy = haproxy_binary()
            if self.haproxy is None:
                raise ConfigError(INSTALL_HINT)
        self.services = tuple(s for s in SERVICES if s in services)
        self.relays = relays
        self.seed = seed
        self.ports = ports_from_env(self.env)
        self.out = out if out is not None else sys.stdout
        self.color = color
        self.database_url = ""
        self.users: list[tuple[str, str]] = []
        self.supervisor: Supervisor | None = None
        self.keys = keys  # None: the set in keys_dir, made on the first start (tests pass a throwaway one)
        self.keys_dir = keys_dir
        self._stop_requested = threading.Event()

    @property
    def portal_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.portal}/"

    @property
    def sync_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sync}/sync"

    def check(self) -> None:
        """The up-front checks: ports free, daemons present. StackError naming the problem."""
        wanted = self.ports.bound_by(self.services, self.relays, self.sync_servers)
        dups = duplicate_ports(wanted)
        if dups:
            first, second, port = dups[0]
            raise SettingError(f"{first} and {second} are both set to port {port}")
        taken = taken_ports(wanted)
        if taken:
            listed = ", ".join(f"{port} ({what})" for what, port in taken)
            raise StackError(f"port already in use: {listed}; stop what uses it or choose another port")
        missing = missing_modules(self.services)
        if missing:
            raise StackError(f"cannot start {'; '.join(missing)}")

    def start(self) -> None:
        """Checks, database, migrate, seed, then every service; StackError on any failure
        (nothing is left running then)."""
        self.check()
        if self.keys is None:
            try:
                self.keys = KeySet.load_or_create(self.keys_dir)
            except KeyFileError as exc:
                raise ConfigError(str(exc)) from None
        self.database_url = resolve_database(self.env)
        balancer_config = None
        if self.haproxy is not None:
            # Generated for these ports at every start; nothing to keep between runs.
            self._config_dir = tempfile.TemporaryDirectory(prefix="haproxy-")
            balancer_config = Path(self._config_dir.name) / "haproxy.cfg"
            balancer_config.write_text(haproxy_config(
                self.ports.sync, balanced_backends(self.ports, self.sync_servers)))
        specs = service_specs(self.ports, self.database_url, self.env, services=self.services, relays=self.relays,
                              keys=self.keys, sync_servers=self.sync_servers, haproxy=self.haproxy or "haproxy",
                              balancer_config=balancer_config)
        self.supervisor = Supervisor(specs, out=self.out, color=self.color, base_env=self.env)
        if self._stop_requested.is_set():
            self.supervisor.stopping.set()
        manage = [sys.executable, str(ROOT / "manage.py")]
        db_env = {"DATABASE_URL": self.database_url}
        try:
            self.supervisor.run_once(ServiceSpec("migrate", [*manage, "migrate", "--noinput"], db_env))
            if self.seed:
                if seed_command_exists():
                    seeded = self.supervisor.run_once(ServiceSpec("seed", [*manage, "seed_demo"], db_env))
                    self.users = parse_demo_users(seeded)
                else:
                    self.supervisor.say("manage.py seed_demo does not exist yet: no demo data")
            self.supervisor.start()
        except ServiceFailed as exc:
            self.supervisor.stop()
            raise StackError(str(exc)) from exc

    def banner(self) -> str:
        return banner(
            self.portal_url, self.users,
            sync_url=(None if "syncserver" not in self.services else self.sync_url if self.sync_servers == 1
                      else f"{self.sync_url}  (HAProxy in front of {self.sync_servers} sync servers)"),
            database=redact(self.database_url),
            metrics_url=f"http://127.0.0.1:{self.ports.relay_metrics}/metrics" if "relay" in self.services else None,
        )

    def wait(self) -> str | None:
        """Block until stop is requested (None) or a service dies (the one-line reason)."""
        assert self.supervisor is not None
        return self.supervisor.watch()

    def request_stop(self) -> None:
        """Safe from a signal handler: wait() returns and a start in progress gives up."""
        self._stop_requested.set()
        if self.supervisor is not None:
            self.supervisor.stopping.set()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        assert self.supervisor is not None
        self.supervisor.kill(name, sig)

    def restart(self, name: str) -> None:
        assert self.supervisor is not None
        try:
            self.supervisor.restart(name)
        except ServiceFailed as exc:
            raise StackError(str(exc)) from exc

    def pids(self) -> dict[str, int]:
        return self.supervisor.pids() if self.supervisor else {}


# ---------------------------------------------------------------- entry point

@contextmanager
def own_terminal() -> Iterator[None]:
    """While the stack runs, be the terminal's foreground process group, alone.

    Ctrl-C makes the terminal send SIGINT to its foreground process group: under `make run`
    that is make and this process. This process stops the stack and exits 0, but GNU make,
    on a SIGINT of its own, waits for its child, then reports "Interrupt" and kills itself
    with SIGINT (130). In a group of our own in the foreground (what a shell does for a job),
    Ctrl-C reaches only us, and make sees a child that exited 0. Afterwards the terminal
    goes back to the group that had it. Without a terminal (CI, tests) nothing changes.
    """
    try:
        fd = sys.stdin.fileno()
        previous = os.tcgetpgrp(fd) if os.isatty(fd) else None
    except (OSError, ValueError):
        previous = None
    if previous is None or previous != os.getpgrp():  # no terminal, or we run in the background
        yield
        return
    ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not tcsetpgrp otherwise
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
    except OSError:
        signal.signal(signal.SIGTTOU, ttou)
        yield
        return
    try:
        yield
    finally:
        try:
            os.tcsetpgrp(fd, previous)
        except OSError:
            pass  # the terminal is gone
        signal.signal(signal.SIGTTOU, ttou)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.run", description=__doc__.splitlines()[0])
    parser.add_argument("--services", default=",".join(SERVICES),
                        help=f"comma-separated subset of {','.join(SERVICES)} (default: all)")
    parser.add_argument("--relays", type=int, default=1, help="relay processes: 1 leader + N-1 standbys")
    parser.add_argument("--sync-servers", type=int, default=1,
                        help="sync server processes; 2 or more run behind HAProxy on SYNC_PORT (default: 1)")
    parser.add_argument("--no-seed", action="store_true", help="do not run manage.py seed_demo")
    parser.add_argument("--keys-dir", type=Path, default=KEYS_DIR,
                        help="the broker's CURVE keys, created there on the first start (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="stack: %(message)s", stream=sys.stderr)

    try:
        stack = Stack(services=tuple(s.strip() for s in args.services.split(",") if s.strip()),
                      relays=args.relays, sync_servers=args.sync_servers, seed=not args.no_seed, color=sys.stdout.isatty(), keys_dir=args.keys_dir)
    except (ConfigError, SettingError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2

    signals_seen = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            stack.request_stop()
        elif stack.supervisor is not None:
            # A second Ctrl-C: the user does not want to wait for graceful shutdown.
            for child in stack.supervisor.children.values():
                child.signal(signal.SIGKILL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        stack.start()
    except (ConfigError, SettingError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    except StackError as exc:
        if signals_seen:
            return 0  # stopped by the user while starting: not a failure
        print(f"make run: {exc}", file=sys.stderr)
        return 1

    stack.supervisor.write_block(stack.banner())
    reason = stack.wait()
    if reason:
        stack.supervisor.say(f"stopping everything: {reason}")
    stack.stop()
    if reason:
        print(f"make run: {reason}", file=sys.stderr)
        return 1
    stack.supervisor.say("all services stopped")
    return 0


if __name__ == "__main__":
    with own_terminal():
        code = main()
    sys.exit(code)
