"""runtime/values.py: setting values parsed from environment strings (pure, no I/O), and the
one wording every reader of a setting gives for them (runtime/settings.py)."""
from __future__ import annotations

import doctest

import pytest

from outbox_relay import config as relay_config_module
from runtime import values
from runtime.settings import SettingError, value
from runtime.values import MAX_PORT, parse_int, parse_port
from stack import run
from syncserver import config as sync_config_module


def test_doctests():
    assert doctest.testmod(values).failed == 0


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


def test_a_setting_is_its_default_when_unset_or_blank():
    assert value({}, "PORTAL_PORT") == 8000
    assert value({"PORTAL_PORT": ""}, "PORTAL_PORT") == 8000
    assert value({"PORTAL_PORT": "   "}, "PORTAL_PORT") == 8000
    assert value({"PORTAL_PORT": " 8080 "}, "PORTAL_PORT") == 8080
    assert value({"SYNC_PORT": "0"}, "SYNC_PORT") == 0


def test_a_bad_value_names_the_variable_on_one_line():
    with pytest.raises(SettingError) as info:
        value({"PORTAL_PORT": "eighty"}, "PORTAL_PORT")
    assert str(info.value) == "PORTAL_PORT='eighty' is not an integer"
    with pytest.raises(SettingError) as info:
        value({"PORTAL_PORT": "70000"}, "PORTAL_PORT")
    assert str(info.value) == "PORTAL_PORT=70000 is out of range [1, 65535]"


@pytest.mark.parametrize("parse, name, low", [
    (relay_config_module.relay_config, "OUTBOX_RELAY_METRICS_PORT", 0),
    (sync_config_module.from_env, "SYNC_PORT", 0),
    (run.ports_from_env, "PORTAL_PORT", 1),
])
def test_every_daemon_words_a_bad_port_alike(parse, name, low):
    """The relay, the sync server and `make run` raise the one SettingError, in the same words."""
    for raw, message in (("abc", f"{name}='abc' is not an integer"),
                         ("70000", f"{name}=70000 is out of range [{low}, 65535]")):
        with pytest.raises(SettingError) as info:
            parse({name: raw})
        assert str(info.value) == message


def test_a_bare_port_for_an_address_is_worded_as_a_port():
    with pytest.raises(SettingError) as info:
        run.ports_from_env({"OUTBOX_BROKER_FRONTEND": "70000"})
    assert str(info.value) == "OUTBOX_BROKER_FRONTEND=70000 is out of range [1, 65535]"


@pytest.mark.parametrize("raw, expected", [("60/min", (60, 60)), ("5/30s", (5, 30)), ("20/10m", (20, 600)),
                                           ("1/h", (1, 3600)), ("100/day", (100, 86400)), (" 3 / 2s ", (3, 2))])
def test_rates(raw, expected):
    assert values.rate(raw) == expected


@pytest.mark.parametrize("raw", ["", "10", "0/min", "5/0s", "x/min", "5/fortnight", "-1/s", "5/min/s"])
def test_bad_rates_are_refused(raw):
    with pytest.raises(ValueError, match="is not a rate"):
        values.rate(raw)


@pytest.mark.parametrize("raw, port", [("5557", 5557), ("tcp://127.0.0.1:5557", 5557), ("tcp://*:5558", 5558),
                                       ("127.0.0.1:6000", 6000), ("tcp://[::1]:7000", 7000)])
def test_address_ports(raw, port):
    assert values.address_port(raw) == port


@pytest.mark.parametrize("raw", ["tcp://nohost", "tcp://127.0.0.1:0", "tcp://127.0.0.1:70000", "0", "ipc://x"])
def test_bad_address_ports_are_refused(raw):
    with pytest.raises(ValueError):
        values.address_port(raw)


def test_flags_log_levels_and_lists():
    assert values.flag("1") is True and values.flag("0") is False
    for bad in ("", "yes", "true", "2"):
        with pytest.raises(ValueError, match="is not 0 or 1"):
            values.flag(bad)
    assert values.log_level("debug") == "DEBUG"
    with pytest.raises(ValueError, match="'LOUD' is not DEBUG, INFO, WARNING, ERROR or CRITICAL"):
        values.log_level("LOUD")
    assert values.items(" a, ,b ,") == ("a", "b") and values.items("") == ()
    assert values.names(("x", "y"))("y, x") == ("y", "x")
    with pytest.raises(ValueError, match="names unknown z; known: x, y"):
        values.names(("x", "y"))("x,z")
    assert values.origins("HTTP://A.example:80, https://b.example") == {"http://a.example", "https://b.example"}
    for bad in ("", " , ", "https://a.example/path", "ftp://a.example"):
        with pytest.raises(ValueError):
            values.origins(bad)
