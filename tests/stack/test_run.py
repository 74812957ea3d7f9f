"""`make run` (python -m stack.run): configuration helpers, and the whole stack started
exactly as `make run` starts it, on free ports against the test database."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import psycopg
import pytest

from runtime.settings import SettingError
from stack import run
from stack.keys import KeySet
from stack.processes import ROOT, Process, free_port
from stack.run import Ports, parse_demo_users, ports_from_env, redact, service_specs
from tests.stack.test_supervisor import gone

START_TIMEOUT = 120.0  # migrate + seed + four services on a loaded 2-core CI machine


# ---------------------------------------------------------------- configuration (pure)

def test_ports_default_and_from_env():
    assert ports_from_env({}) == Ports(8000, 8001, 5557, 5558, 9101)
    assert ports_from_env({
        "PORTAL_PORT": "18000", "SYNC_PORT": "18001", "OUTBOX_BROKER_FRONTEND": "tcp://0.0.0.0:15557",
        "OUTBOX_BROKER_BACKEND": "15558", "OUTBOX_RELAY_METRICS_PORT": "19101",
    }) == Ports(18000, 18001, 15557, 15558, 19101)


@pytest.mark.parametrize("name,value", [
    ("PORTAL_PORT", "abc"), ("SYNC_PORT", "70000"), ("OUTBOX_BROKER_FRONTEND", "tcp://nohost"),
    ("OUTBOX_BROKER_BACKEND", "tcp://127.0.0.1:70000"), ("OUTBOX_BROKER_FRONTEND", "tcp://127.0.0.1:0"),
    ("OUTBOX_RELAY_METRICS_PORT", "0"),
])
def test_bad_port_values_name_the_variable(name, value):
    with pytest.raises(SettingError, match=name):
        ports_from_env({name: value})


def test_a_port_inside_an_address_is_range_checked():
    with pytest.raises(SettingError) as err:
        ports_from_env({"OUTBOX_BROKER_BACKEND": "tcp://127.0.0.1:70000"})
    assert str(err.value) == "OUTBOX_BROKER_BACKEND='tcp://127.0.0.1:70000': port 70000 is out of range [1, 65535]"


def test_service_specs_wire_the_ports_together():
    ports = Ports(18000, 18001, 15557, 15558, 19101)
    specs = {s.name: s for s in service_specs(ports, "postgresql:///db", {}, relays=2)}
    assert list(specs) == ["broker", "relay", "relay-2", "syncserver", "portal"]
    assert all(s.env["DATABASE_URL"] == "postgresql:///db" for s in specs.values())
    assert specs["broker"].env["OUTBOX_BROKER_FRONTEND"] == "tcp://127.0.0.1:15557"
    assert specs["broker"].env["OUTBOX_BROKER_BACKEND"] == "tcp://127.0.0.1:15558"
    assert specs["relay"].env["OUTBOX_RELAY_BROKER_URL"] == "tcp://127.0.0.1:15557"
    assert specs["relay"].env["OUTBOX_RELAY_METRICS_PORT"] == "19101"
    assert specs["relay-2"].env["OUTBOX_RELAY_METRICS_PORT"] == "19102"
    assert specs["syncserver"].env["SYNC_BROKER_URL"] == "tcp://127.0.0.1:15558"
    assert specs["syncserver"].env["SYNC_PORT"] == "18001"
    assert specs["syncserver"].env["SYNC_ALLOWED_ORIGINS"] == "http://127.0.0.1:18000,http://localhost:18000"
    assert specs["portal"].env["SYNC_PUBLIC_URL"] == "http://127.0.0.1:18001/sync"
    assert specs["portal"].argv[-1] == "127.0.0.1:18000"
    assert specs["portal"].ready_port == 18000


def test_the_environment_the_specs_set_is_accepted_by_the_daemons_config():
    # Each daemon rejects unknown prefixed variables: what the runner sets must parse.
    from outbox_relay.config import broker_config, relay_config
    from syncserver.config import from_env

    specs = {s.name: s for s in service_specs(Ports(), "postgresql:///db", {}, keys=KeySet.generate())}
    assert broker_config(specs["broker"].env).frontend == "tcp://127.0.0.1:5557"
    assert relay_config(specs["relay"].env).broker_url == "tcp://127.0.0.1:5557"
    assert from_env(specs["syncserver"].env).broker_url == "tcp://127.0.0.1:5558"


def test_user_settings_win_over_derived_ones():
    env = {"SYNC_PUBLIC_URL": "https://sync.example.com/sync", "SYNC_ALLOWED_ORIGINS": "https://app.example.com",
           "OUTBOX_BROKER_FRONTEND": "tcp://0.0.0.0:5557"}
    specs = {s.name: s for s in service_specs(Ports(), "postgresql:///db", env)}
    assert specs["portal"].env["SYNC_PUBLIC_URL"] == "https://sync.example.com/sync"
    assert specs["syncserver"].env["SYNC_ALLOWED_ORIGINS"] == "https://app.example.com"
    assert specs["broker"].env["OUTBOX_BROKER_FRONTEND"] == "tcp://0.0.0.0:5557"


def test_every_daemon_gets_the_keys_of_its_role_and_user_keys_win():
    keys = KeySet.generate()
    specs = {s.name: s for s in service_specs(Ports(), "postgresql:///db", {}, keys=keys)}
    assert specs["broker"].env["OUTBOX_BROKER_PUBLISHER_KEYS"] == keys.relay_public
    assert specs["relay"].env["OUTBOX_RELAY_CURVE_SECRET_KEY"] == keys.relay
    assert specs["syncserver"].env["SYNC_CURVE_SECRET_KEY"] == keys.syncserver
    # Nobody gets another role's secret (the portal: the relay's, for the admin's replay).
    assert keys.broker not in specs["relay"].env.values() and keys.relay not in specs["syncserver"].env.values()
    assert specs["portal"].env["OUTBOX_RELAY_CURVE_SECRET_KEY"] == keys.relay
    mine = {"SYNC_CURVE_SECRET_KEY_FILE": "/run/secrets/sync", "OUTBOX_BROKER_SUBSCRIBER_KEYS": "x"}
    specs = {s.name: s for s in service_specs(Ports(), "postgresql:///db", mine, keys=keys)}
    assert "SYNC_CURVE_SECRET_KEY" not in specs["syncserver"].env  # the user's _FILE is used instead
    assert "OUTBOX_BROKER_SUBSCRIBER_KEYS" not in specs["broker"].env


def test_services_subset():
    specs = service_specs(Ports(), "postgresql:///db", {}, services=("portal",))
    assert [s.name for s in specs] == ["portal"]
    assert Ports().bound_by(("portal", "broker")) == [
        ("portal (PORTAL_PORT)", 8000), ("broker frontend (OUTBOX_BROKER_FRONTEND)", 5557),
        ("broker backend (OUTBOX_BROKER_BACKEND)", 5558),
    ]


def test_missing_daemon_module_is_named(monkeypatch):
    monkeypatch.setitem(run.MODULES, "relay", "outbox_relay_not_written")
    assert run.missing_modules(("broker", "relay", "portal")) == [
        "relay (python -m outbox_relay_not_written: no module outbox_relay_not_written.__main__)"
    ]
    assert run.missing_modules(run.SERVICES) != []


def test_every_daemon_module_exists():
    assert run.missing_modules(run.SERVICES) == []


def test_parse_demo_users_and_banner():
    users = parse_demo_users(['Demo data ready: checklist "Weekend trip".', "  alice / alice-demo", "  bob / bob-demo"])
    assert users == [("alice", "alice-demo"), ("bob", "bob-demo")]
    text = run.banner("http://127.0.0.1:8000/", users, sync_url="s", database="d", metrics_url="m")
    assert "Cloud Checklist is running:  http://127.0.0.1:8000/" in text
    assert "alice / alice-demo" in text and "bob / bob-demo" in text


def test_redact():
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("host=h password=pw dbname=d") == "host=h password=*** dbname=d"
    assert redact("postgresql://postgres@127.0.0.1/d") == "postgresql://postgres@127.0.0.1/d"


# ---------------------------------------------------------------- the real thing

def stack_env(db_url: str) -> dict[str, str]:
    ports = {"PORTAL_PORT": free_port(), "SYNC_PORT": free_port(), "OUTBOX_BROKER_FRONTEND": free_port(),
             "OUTBOX_BROKER_BACKEND": free_port(), "OUTBOX_RELAY_METRICS_PORT": free_port()}
    env = {name: str(port) for name, port in ports.items()}
    env["DATABASE_URL"] = db_url
    return env


def run_stack(daemons, env: dict[str, str], *args: str, keys_dir=None) -> Process:
    """`make run` in a child; its CURVE keys in keys_dir (a fresh temporary one by default,
    never the checkout's own .curve/)."""
    import tempfile

    keys_dir = keys_dir or tempfile.mkdtemp(prefix="make-run-keys-")
    return daemons.start("make-run", [sys.executable, "-m", "stack.run", "--keys-dir", str(keys_dir), *args], env)


def child_pids(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"started (\S+) \(pid (\d+)\)", output)}


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def wait_exit(daemon: Process, timeout: float = 30.0) -> int:
    return daemon.proc.wait(timeout)


@pytest.mark.django_db(transaction=True)
def test_make_run_serves_the_stack_and_ctrl_c_stops_every_child(db_url, daemons, tmp_path):
    env = stack_env(db_url)
    portal = f"http://127.0.0.1:{env['PORTAL_PORT']}/"
    keys_dir = tmp_path / "curve"
    stack = run_stack(daemons, env, keys_dir=keys_dir)
    stack.wait_for_line(f"Cloud Checklist is running:  {portal}", timeout=START_TIMEOUT)
    pids = child_pids(stack.output())
    assert set(pids) == {"broker", "relay", "syncserver", "portal"}
    assert "alice / alice-demo" in stack.output()

    assert http_status(portal + "login/") == 200
    assert http_status(f"http://127.0.0.1:{env['SYNC_PORT']}/healthz") == 200
    assert http_status(f"http://127.0.0.1:{env['OUTBOX_RELAY_METRICS_PORT']}/metrics") == 200
    # Output of every service arrives prefixed with its name.
    for name in ("broker", "relay", "syncserver", "portal"):
        assert re.search(rf"^{name} +\| ", stack.output(), re.M), name

    os.kill(stack.pid, signal.SIGINT)
    assert wait_exit(stack) == 0, stack.output()
    for name, pid in pids.items():
        assert gone(pid), f"{name} (pid {pid}) survived Ctrl-C"
    assert "all services stopped" in stack.output()
    # The broker's CURVE keys were made on this first start: private, and used.
    secrets = {p.name: p.read_text() for p in keys_dir.glob("*.key_secret")}
    assert set(secrets) == {"broker.key_secret", "relay.key_secret", "syncserver.key_secret"}
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in keys_dir.glob("*.key_secret"))
    assert oct(keys_dir.stat().st_mode & 0o777) == "0o700"
    assert re.search(r"broker +\| .*broker accepted a publisher key", stack.output())
    assert re.search(r"broker +\| .*broker accepted a subscriber key", stack.output())

    # A second start on the same data (seed again) works, with the same keys; SIGTERM
    # stops it as cleanly.
    again = run_stack(daemons, env, keys_dir=keys_dir)
    again.wait_for_line(f"Cloud Checklist is running:  {portal}", timeout=START_TIMEOUT)
    assert "alice / alice-demo" in again.output()
    pids = child_pids(again.output())
    os.kill(again.pid, signal.SIGTERM)
    assert wait_exit(again) == 0, again.output()
    assert all(gone(pid) for pid in pids.values())
    assert {p.name: p.read_text() for p in keys_dir.glob("*.key_secret")} == secrets


@pytest.mark.django_db(transaction=True)
def test_a_child_that_dies_stops_the_whole_stack(db_url, daemons):
    env = stack_env(db_url)
    stack = run_stack(daemons, env, "--no-seed")
    stack.wait_for_line("Cloud Checklist is running:", timeout=START_TIMEOUT)
    pids = child_pids(stack.output())
    os.kill(pids["relay"], signal.SIGKILL)
    assert wait_exit(stack) == 1, stack.output()
    assert "make run: relay was killed by SIGKILL" in stack.output()
    for name, pid in pids.items():
        assert gone(pid), f"{name} (pid {pid}) outlived the stack"


def run_to_exit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    import tempfile

    keys_dir = tempfile.mkdtemp(prefix="make-run-keys-")
    return subprocess.run([sys.executable, "-m", "stack.run", "--keys-dir", keys_dir, *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_a_taken_port_is_reported_before_anything_starts():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = stack_env(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")  # never reached
        env["SYNC_PORT"] = str(port)
        result = run_to_exit(env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"make run: port already in use: {port} (sync server (SYNC_PORT)); stop what uses it or choose another port"
    )
    assert result.stdout == ""


def test_an_unreachable_database_is_reported_before_anything_starts():
    result = run_to_exit(stack_env(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make run: PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:")
    assert "started" not in result.stdout


def test_a_database_from_an_earlier_schema_history_is_refused_in_one_line(scratch_db):
    """A database migrated by the unreleased history before migrations/schema.sql cannot
    move forward: make run says so and how to make it again, before anything starts;
    manage.py migrate refuses too, instead of failing on CREATE TABLE outbox."""
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE django_migrations (id serial, app text, name text, applied timestamptz)")
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('outbox', '0001_outbox', now())")
        conn.execute("CREATE TABLE outbox (id bigint)")
    result = run_to_exit(stack_env(scratch_db))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "earlier, unreleased history" in lines[0] and "drop and create it" in lines[0]
    assert "started" not in result.stdout
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, capture_output=True,
                             text=True, env={**os.environ, "DATABASE_URL": scratch_db}, timeout=120)
    assert migrate.returncode != 0 and "earlier, unreleased history" in migrate.stderr


def test_a_bad_setting_exits_2_with_one_line():
    result = run_to_exit({"PORTAL_PORT": "eighty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "make run: PORTAL_PORT='eighty' is not an integer"


def test_two_services_on_one_port_is_a_configuration_error():
    port = str(free_port())
    result = run_to_exit({"PORTAL_PORT": port, "SYNC_PORT": port})
    assert result.returncode == 2
    assert "are both set to port" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_stack_class_for_acceptance_tests_restarts_and_kills_services(db_url):
    import io

    out = io.StringIO()
    stack = run.Stack(env=stack_env(db_url), seed=False, out=out, keys=KeySet.generate())
    try:
        stack.start()
        before = stack.pids()
        stack.restart("relay")
        after = stack.pids()
        assert after["relay"] != before["relay"] and gone(before["relay"])
        assert after["broker"] == before["broker"]
        stack.kill("syncserver")  # on purpose: not a failure
        assert gone(after["syncserver"])
        assert stack.supervisor.failed() is None
        assert http_status(stack.portal_url + "login/") == 200
    finally:
        stack.stop()
    assert all(gone(pid) for pid in stack.pids().values())
    assert "relay is ready" in out.getvalue()


def test_several_sync_servers_run_behind_the_balancer_on_sync_port(tmp_path):
    from syncserver.config import from_env

    ports = Ports(18000, 18001, 15557, 15558, 19101)
    cfg = tmp_path / "haproxy.cfg"
    specs = {s.name: s for s in service_specs(ports, "postgresql:///db", {}, sync_servers=3, keys=KeySet.generate(),
                                               haproxy="/usr/sbin/haproxy", balancer_config=cfg)}
    assert list(specs) == ["broker", "relay", "syncserver-1", "syncserver-2", "syncserver-3", "balancer", "portal"]
    assert [specs[f"syncserver-{i}"].env["SYNC_PORT"] for i in (1, 2, 3)] == ["18002", "18003", "18004"]
    assert specs["balancer"].argv == ["/usr/sbin/haproxy", "-db", "-f", str(cfg)]
    assert specs["balancer"].ready_port == 18001
    assert specs["portal"].env["SYNC_PUBLIC_URL"] == "http://127.0.0.1:18001/sync"  # browsers reach the balancer
    config = from_env(specs["syncserver-2"].env)
    assert config.drain_seconds == 3 and [str(n) for n in config.trusted_proxies] == ["127.0.0.1/32"]
    assert ("balancer (SYNC_PORT)", 18001) in ports.bound_by(("syncserver",), sync_servers=3)
    assert ("syncserver-3 (SYNC_PORT + 3)", 18004) in ports.bound_by(("syncserver",), sync_servers=3)


def test_without_haproxy_several_sync_servers_is_one_line_and_exit_2(monkeypatch, capsys):
    from stack import run

    monkeypatch.setattr(run, "haproxy_binary", lambda: None)
    assert run.main(["--sync-servers", "3"]) == 2
    err = capsys.readouterr().err
    assert err == "make run: HAProxy is not installed: apt-get install haproxy\n"
