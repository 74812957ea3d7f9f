"""outbox_relay.envvalues: integer and port settings from environment strings (pure, no I/O),
and the one wording every daemon's ConfigError gives for them."""
from __future__ import annotations

from functools import partial

import pytest

from outbox_relay import config as relay_config_module
from outbox_relay.envvalues import MAX_PORT, env_value, parse_int, parse_port
from stack import run
from syncserver import config as sync_config_module


def test_parse_int_in_range():
    assert parse_int("5", 1, 10) == 5
    assert parse_int(" 10 ", 1, 10) == 10
    assert parse_int("1", 1) == 1
    assert parse_int("123456789012", 1) == 123456789012  # no upper bound when high is None
    assert parse_int("-3", -5, 0) == -3


@pytest.mark.parametrize("raw, low, high, message", [
    ("abc", 1, 10, "'abc' is not an integer"),
    ("1.5", 1, 10, "'1.5' is not an integer"),
    ("", 1, 10, "'' is not an integer"),
    ("0", 1, 10, "0 is out of range [1, 10]"),
    ("11", 1, 10, "11 is out of range [1, 10]"),
    ("0", 1, None, "0 is out of range (must be >= 1)"),
])
def test_parse_int_rejects_with_a_message_that_follows_the_name(raw, low, high, message):
    with pytest.raises(ValueError) as info:
        parse_int(raw, low, high)
    assert str(info.value) == message


def test_parse_port():
    assert parse_port("1") == 1 and parse_port(str(MAX_PORT)) == 65535
    assert parse_port("0", allow_zero=True) == 0
    with pytest.raises(ValueError, match=r"^0 is out of range \[1, 65535\]$"):
        parse_port("0")
    with pytest.raises(ValueError, match=r"^70000 is out of range \[0, 65535\]$"):
        parse_port("70000", allow_zero=True)
    with pytest.raises(ValueError, match=r"^'http' is not an integer$"):
        parse_port("http")


def test_env_value_default_when_unset_or_blank():
    assert env_value({}, "P", 8000, parse_port) == 8000
    assert env_value({"P": ""}, "P", 8000, parse_port) == 8000
    assert env_value({"P": "   "}, "P", 8000, parse_port) == 8000
    assert env_value({"P": " 8080 "}, "P", 8000, parse_port) == 8080
    assert env_value({"P": "0"}, "P", 8000, partial(parse_port, allow_zero=True)) == 0


def test_env_value_names_the_variable_on_one_line():
    with pytest.raises(ValueError) as info:
        env_value({"P": "eighty"}, "P", 8000, parse_port)
    assert str(info.value) == "P='eighty' is not an integer"
    with pytest.raises(ValueError) as info:
        env_value({"P": "70000"}, "P", 8000, parse_port)
    assert str(info.value) == "P=70000 is out of range [1, 65535]"


@pytest.mark.parametrize("parse, error, name, low", [
    (relay_config_module.relay_config, relay_config_module.ConfigError, "OUTBOX_RELAY_METRICS_PORT", 0),
    (sync_config_module.from_env, sync_config_module.ConfigError, "SYNC_PORT", 0),
    (run.ports_from_env, run.ConfigError, "PORTAL_PORT", 1),
])
def test_every_daemon_words_a_bad_port_alike(parse, error, name, low):
    """The relay, the sync server and `make run` each raise their own ConfigError, in the same words."""
    for raw, message in (("abc", f"{name}='abc' is not an integer"),
                         ("70000", f"{name}=70000 is out of range [{low}, 65535]")):
        with pytest.raises(error) as info:
            parse({name: raw})
        assert str(info.value) == message


def test_a_bare_port_for_an_address_is_worded_as_a_port():
    with pytest.raises(run.ConfigError) as info:
        run.ports_from_env({"OUTBOX_BROKER_FRONTEND": "70000"})
    assert str(info.value) == "OUTBOX_BROKER_FRONTEND=70000 is out of range [1, 65535]"
