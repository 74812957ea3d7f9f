"""Every daemon started with a missing, malformed, conflicting or unknown setting: a one-line
reason on stderr naming the setting, and exit code 2, before it binds or connects anything.
(The relay suite checks three relay/broker cases; these are the rest of the matrix.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stack.keys import KeySet
from stack.processes import ROOT, free_port, python_module

GOOD_DB = "postgresql://postgres@127.0.0.1:1/never_connected"
KEYS = KeySet.generate()

CASES = [
    # (module, env, the setting the message must name)
    ("outbox_relay", {"OUTBOX_RELAY_METRICS_PORT": "70000"}, "OUTBOX_RELAY_METRICS_PORT"),
    ("outbox_relay", {"OUTBOX_RELAY_LOG_LEVEL": "LOUD"}, "OUTBOX_RELAY_LOG_LEVEL"),
    ("outbox_relay", {"OUTBOX_RELAY_BATCHSIZE": "5"}, "OUTBOX_RELAY_BATCHSIZE"),          # misspelt
    ("outbox_relay", {"OUTBOX_RELAY_BROKER_URL": "127.0.0.1:5557"}, "OUTBOX_RELAY_BROKER_URL"),
    ("outbox_relay", {"OUTBOX_RELAY_HEARTBEAT_INTERVAL": "-1"}, "OUTBOX_RELAY_HEARTBEAT_INTERVAL"),
    ("outbox_relay.broker", {"OUTBOX_BROKER_FRONTEND": "tcp://127.0.0.1:5999",
                             "OUTBOX_BROKER_BACKEND": "tcp://127.0.0.1:5999"}, "OUTBOX_BROKER_BACKEND"),
    ("outbox_relay.broker", {"OUTBOX_BROKER_BACKEND": "http://x"}, "OUTBOX_BROKER_BACKEND"),
    ("outbox_relay.broker", {"OUTBOX_BROKER_LOG_LEVEL": "chatty"}, "OUTBOX_BROKER_LOG_LEVEL"),
    ("syncserver", {"SYNC_PORT": "abc"}, "SYNC_PORT"),
    ("syncserver", {"SYNC_PORT": "70000"}, "SYNC_PORT"),
    ("syncserver", {"SYNC_TOKEN_SECRET": ""}, "SYNC_TOKEN_SECRET"),                      # missing
    ("syncserver", {"SYNC_ALLOWED_ORIGINS": ""}, "SYNC_ALLOWED_ORIGINS"),                # missing
    ("syncserver", {"SYNC_ALLOWED_ORIGINS": "not an origin"}, "SYNC_ALLOWED_ORIGINS"),
    ("syncserver", {"SYNC_TRANSPORTS": "websocket", "SYNC_DISABLED_TRANSPORTS": "xhr"}, "SYNC_"),  # conflicting
    ("syncserver", {"SYNC_TRANSPORTS": "carrier-pigeon"}, "SYNC_TRANSPORTS"),
    ("syncserver", {"SYNC_DISABLED_TRANSPORTS": "websocket,xhr,xhr_streaming,eventsource,htmlfile,jsonp"},
     "SYNC_DISABLED_TRANSPORTS"),
    ("syncserver", {"SYNC_BROKER_URL": "http://x"}, "SYNC_BROKER_URL"),
    ("syncserver", {"SYNC_MAX_MESSAGE_BYTES": "-1"}, "SYNC_MAX_MESSAGE_BYTES"),
    # CURVE keys: required (there is no unauthenticated mode), and well-formed.
    ("outbox_relay.broker", {"OUTBOX_BROKER_CURVE_SECRET_KEY": ""}, "OUTBOX_BROKER_CURVE_SECRET_KEY"),  # missing
    ("outbox_relay.broker", {"OUTBOX_BROKER_CURVE_SECRET_KEY": "#" * 40}, "OUTBOX_BROKER_CURVE_SECRET_KEY"),
    ("outbox_relay.broker", {"OUTBOX_BROKER_CURVE_SECRET_KEY_FILE": "/nonexistent/broker.key_secret"},
     "OUTBOX_BROKER_CURVE_SECRET_KEY"),                                                    # value and file both
    ("outbox_relay.broker", {"OUTBOX_BROKER_CURVE_SECRET_KEY": "",
                             "OUTBOX_BROKER_CURVE_SECRET_KEY_FILE": "/nonexistent/broker.key_secret"},
     "OUTBOX_BROKER_CURVE_SECRET_KEY_FILE"),                                               # no such file
    ("outbox_relay.broker", {"OUTBOX_BROKER_PUBLISHER_KEYS": ""}, "OUTBOX_BROKER_PUBLISHER_KEYS"),
    ("outbox_relay.broker", {"OUTBOX_BROKER_SUBSCRIBER_KEYS": KEYS.syncserver_public + ",nope"},
     "OUTBOX_BROKER_SUBSCRIBER_KEYS"),
    ("outbox_relay.broker", {"OUTBOX_BROKER_SUBSCRIBER_KEYS": KEYS.relay_public},          # one key, two roles
     "OUTBOX_BROKER_SUBSCRIBER_KEYS"),
    ("outbox_relay", {"OUTBOX_RELAY_CURVE_SECRET_KEY": ""}, "OUTBOX_RELAY_CURVE_SECRET_KEY"),
    ("outbox_relay", {"OUTBOX_RELAY_BROKER_PUBLIC_KEY": KEYS.broker_public[:-1]}, "OUTBOX_RELAY_BROKER_PUBLIC_KEY"),
    ("syncserver", {"SYNC_CURVE_SECRET_KEY": ""}, "SYNC_CURVE_SECRET_KEY"),
    ("syncserver", {"SYNC_BROKER_PUBLIC_KEY": ""}, "SYNC_BROKER_PUBLIC_KEY"),
]

# Regression tests for defects this matrix found (both daemons once accepted a malformed
# DATABASE_URL and died later with a traceback).
DEFECTS = [
    pytest.param("outbox_relay", {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    pytest.param("syncserver", {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
]


# One settings reader for every process (issue 15): the values the old readers took without a
# word (a typo'd name, SYNC_LOG_LEVEL, the portal's raw os.environ reads) are refused alike.
# "manage.py" runs `manage.py check`; "stack.run" is `make run`.
REFUSALS = [
    pytest.param("syncserver", {"SYNC_PORTT": "8001"}, "SYNC_PORTT: unknown setting; did you mean SYNC_PORT?"),
    pytest.param("outbox_relay", {"PORTAL_DEBG": "0"}, "PORTAL_DEBG: unknown setting; did you mean PORTAL_DEBUG?"),
    pytest.param("outbox_relay.broker", {"OUTBOX_BROKER_FRONTENDS": "tcp://127.0.0.1:1"}, "OUTBOX_BROKER_FRONTENDS"),
    pytest.param("syncserver", {"SYNC_LOG_LEVEL": "LOUD"}, "SYNC_LOG_LEVEL='LOUD'"),
    pytest.param("outbox_relay.admin_cli", {"OUTBOX_RELAY_BROKER_URL": "localhost:5557"}, "OUTBOX_RELAY_BROKER_URL"),
    pytest.param("manage.py", {"PORTAL_LOGIN_FAILURE_LIMIT": "five"}, "PORTAL_LOGIN_FAILURE_LIMIT='five'"),
    pytest.param("manage.py", {"PORTAL_DEBUG": "yes"}, "PORTAL_DEBUG='yes' is not 0 or 1"),
    pytest.param("manage.py", {"SYNC_TOKEN_TTL": "soon"}, "SYNC_TOKEN_TTL='soon' is not an integer"),
    pytest.param("manage.py", {"PORTAL_LOG_LEVEL": "chatty"}, "PORTAL_LOG_LEVEL"),
    pytest.param("manage.py", {"PORTAL_RATELIMT_DIR": "/tmp/x"}, "did you mean PORTAL_RATELIMIT_DIR?"),
    pytest.param("manage.py", {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    pytest.param("stack.run", {"SYNC_ALLOWED_ORIGIN": "http://x"}, "did you mean SYNC_ALLOWED_ORIGINS?"),
]


def argv(module: str) -> list[str]:
    if module == "manage.py":
        return [sys.executable, str(ROOT / "manage.py"), "check"]
    if module == "outbox_relay.admin_cli":
        return python_module(module, "status")
    if module == "stack.run":
        return python_module(module, "--no-seed")
    return python_module(module)


def run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "SYNC_", "PORTAL_"))}
    base["DATABASE_URL"] = GOOD_DB
    base.update(KEYS.broker_env() if module == "outbox_relay.broker" else
                KEYS.relay_env() if module == "outbox_relay" else KEYS.sync_env())
    # Free ports, so a daemon that wrongly accepts its settings fails on the assertion, not on a bind.
    base.update({"SYNC_PORT": str(free_port()), "OUTBOX_RELAY_METRICS_PORT": "0",
                 "OUTBOX_BROKER_FRONTEND": f"tcp://127.0.0.1:{free_port()}",
                 "OUTBOX_BROKER_BACKEND": f"tcp://127.0.0.1:{free_port()}"})
    if module != "outbox_relay.broker":
        base.pop("OUTBOX_BROKER_FRONTEND")
        base.pop("OUTBOX_BROKER_BACKEND")
    if module != "syncserver":
        base.pop("SYNC_PORT")
    if module != "outbox_relay":
        base.pop("OUTBOX_RELAY_METRICS_PORT")
    base.update(env)
    try:
        return subprocess.run(argv(module), env=base, capture_output=True, text=True, timeout=15, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, returncode=-1, stdout="", stderr="(still running after 15 s)")


@pytest.mark.parametrize("module, env, names", CASES + DEFECTS + REFUSALS)
def test_bad_setting_exits_2_with_a_one_line_reason(module, env, names):
    proc = run(module, env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-800:])
    assert len(lines) == 1, proc.stderr
    assert names in lines[0], lines[0]
