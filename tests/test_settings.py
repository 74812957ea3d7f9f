"""The one settings reader (runtime/settings.py): the registry, the documented table (docs/configuration.md), the
refusal of unknown names, one-line errors, and every component reading through it."""
from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given, settings as hsettings, strategies as st

from outbox_relay.config import AdminConfig, BrokerConfig, RelayConfig
from portal.config import PortalConfig
from runtime import settings
from runtime.settings import (
    COMPONENTS, COMPOSE, PREFIXES, REGISTRY, SettingError, names_read_by, read, unknown_problem,
)
from stack.keys import KeySet
from stack.run import Ports
from syncserver.config import Config as SyncConfig

ROOT = Path(__file__).resolve().parent.parent
KEYS = KeySet.generate()
SPECS = {RelayConfig: settings.RELAY, BrokerConfig: settings.BROKER, SyncConfig: settings.SYNC,
         PortalConfig: settings.PORTAL, AdminConfig: settings.ADMIN, Ports: settings.RUN}
# What each spec needs from the environment to be read at all (its required keys).
REQUIRED = {RelayConfig: KEYS.relay_env(), BrokerConfig: KEYS.broker_env(), SyncConfig: KEYS.sync_env(),
            PortalConfig: {}, AdminConfig: {}, Ports: {}}


def readme_table() -> dict[str, str]:
    """{variable: its default column} from the configuration table (docs/configuration.md)."""
    section = (ROOT / "docs" / "configuration.md").read_text()
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| ", line)
        if match:
            assert match[1] not in rows, f"{match[1]} is listed twice"
            rows[match[1]] = match[2]
    return rows


def test_the_readme_lists_exactly_the_registry_with_its_defaults():
    table = readme_table()
    assert len(table) > 40  # the parser found the table
    registry = {name: s.documented_default for name, s in REGISTRY.items()}
    assert set(table) == set(registry), f"docs only: {set(table) - set(registry)}; " \
                                        f"registry only: {set(registry) - set(table)}"
    wrong = {name: (table[name], registry[name]) for name in table if table[name] != registry[name]}
    assert not wrong, wrong


def test_every_default_the_readme_shows_is_the_default_the_code_uses():
    """A default written in back-quotes is the registry's text, which parses (so the code's
    default is that text, parsed: RelayConfig().batch_size is the 2000 the docs show)."""
    for name, s in REGISTRY.items():
        if s.default is not None:
            s.parse(s.default)
            if s.shown is None:
                assert s.documented_default == f"`{s.default}`"


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.__name__)
def test_each_component_reads_what_the_registry_says_it_reads(spec):
    component = SPECS[spec]
    assert spec.COMPONENT == component
    assert names_read_by(spec) == {name for name, s in REGISTRY.items() if component in s.readers}


def test_every_setting_has_readers_a_help_line_and_our_prefix():
    for name, s in REGISTRY.items():
        assert s.readers and set(s.readers) <= set(COMPONENTS), name
        assert name.startswith(PREFIXES) or name == "DATABASE_URL", name
        assert "\n" not in s.help, name
    assert set(SPECS.values()) | {COMPOSE} == set(COMPONENTS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.__name__)
def test_field_defaults_are_the_registry_defaults_parsed(spec):
    for f in fields(spec):
        names = f.metadata.get("settings", ())
        if len(names) == 1 and REGISTRY[names[0]].default is not None:
            parse = f.metadata["parse"] or REGISTRY[names[0]].parse
            assert f.default == parse(REGISTRY[names[0]].default), f.name


def test_unknown_names_with_our_prefixes_are_refused_with_the_closest_known_name():
    env = {**KEYS.relay_env(), "OUTBOX_RELAY_BATCHSIZE": "5"}
    with pytest.raises(SettingError) as info:
        read(RelayConfig, env)
    assert str(info.value) == "OUTBOX_RELAY_BATCHSIZE: unknown setting; did you mean OUTBOX_RELAY_BATCH_SIZE?"
    assert unknown_problem({"OUTBOX_QQQ": "1"}) == \
        "OUTBOX_QQQ: unknown setting; `python -m runtime.settings` lists the settings"
    assert unknown_problem({"SYNC_PORTT": "1", "SYNC_A": "", "OUTBOX_B": "x"}) == \
        "OUTBOX_B: unknown setting; `python -m runtime.settings` lists the settings (also unknown: SYNC_A, SYNC_PORTT)"


def test_names_another_component_reads_are_not_refused():
    """Every process inherits the whole environment: the relay is given the portal's and the
    sync server's settings by `make run`, the portal the relay's for replay."""
    others = {"SYNC_TOKEN_SECRET": "s3cret", "PORTAL_PORT": "x", "SYNC_ALLOWED_ORIGINS": "",
              "OUTBOX_BROKER_FRONTEND": "tcp://0.0.0.0:1", "PORTAL_ORIGIN": "https://example.com"}
    assert read(RelayConfig, {**KEYS.relay_env(), **others}).batch_size == 2000
    # ... and what is not ours is none of our business.
    assert read(Ports, {"HOME": "/root", "SYNCHRONIZED": "1", "sync_port": "1", "OUTBOX": "1"}) == Ports()


def test_a_value_and_its_file_together_are_refused(tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text(KEYS.relay)
    env = {**KEYS.relay_env(), "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE": str(secret_file)}
    with pytest.raises(SettingError, match="^set OUTBOX_RELAY_CURVE_SECRET_KEY or OUTBOX_RELAY_CURVE_SECRET_KEY_FILE,"
                                           " not both$"):
        read(RelayConfig, env)
    del env["OUTBOX_RELAY_CURVE_SECRET_KEY"]
    assert read(RelayConfig, env).curve == KEYS.publisher()


def test_a_required_setting_that_is_missing_is_named():
    with pytest.raises(SettingError) as info:
        read(BrokerConfig, {k: v for k, v in KEYS.broker_env().items() if k != "OUTBOX_BROKER_PUBLISHER_KEYS"})
    assert str(info.value) == "OUTBOX_BROKER_PUBLISHER_KEYS is not set: the public keys of the relays allowed to publish"
    with pytest.raises(SettingError, match=r"^SYNC_CURVE_SECRET_KEY \(or SYNC_CURVE_SECRET_KEY_FILE\) is not set"):
        read(SyncConfig, {"SYNC_BROKER_PUBLIC_KEY": KEYS.broker_public})


def test_optional_keys_are_none_when_unset_and_refused_when_half_set():
    assert read(AdminConfig, {}).curve is None and read(PortalConfig, {}).replay_keys is None
    assert read(PortalConfig, KEYS.relay_env()).replay_keys == KEYS.publisher()
    with pytest.raises(SettingError, match="^OUTBOX_RELAY_BROKER_PUBLIC_KEY is not set"):
        read(PortalConfig, {"OUTBOX_RELAY_CURVE_SECRET_KEY": KEYS.relay})


def test_blank_is_unset_unless_the_setting_says_otherwise():
    assert read(RelayConfig, {**KEYS.relay_env(), "OUTBOX_RELAY_BATCH_SIZE": " "}).batch_size == 2000
    assert read(SyncConfig, {**KEYS.sync_env(), "SYNC_DEVELOPMENT": "1", "SYNC_DISABLED_TRANSPORTS": ""}
                ).disabled_transports == ()
    assert read(PortalConfig, {"PORTAL_ALLOWED_HOSTS": ""}).allowed_hosts == ()
    for name in ("PORTAL_SECRET_KEY", "SYNC_TOKEN_SECRET", "PORTAL_DEBUG"):
        with pytest.raises(SettingError, match=f"^{name}"):
            read(PortalConfig, {name: ""})


def test_the_development_secrets_are_defined_once():
    found = []
    for package in ("runtime", "outbox_relay", "syncserver", "portal", "stack"):
        for path in (ROOT / package).rglob("*.py"):
            if "dev-insecure" in path.read_text():
                found.append(str(path.relative_to(ROOT)))
    assert found == ["runtime/settings.py"]


ANY_NAME = st.sampled_from(sorted(REGISTRY) + ["OUTBOX_RELAY_BATCHSIZE", "SYNC_PORTT", "PORTAL_X"])
ANY_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(
    ["0", "1", "-1", "70000", "1e309", "nan", "tcp://127.0.0.1:1", "http://a.example", "10.0.0.0/8", "INFO",
     "5/min", "websocket", "", " ", KEYS.relay, KEYS.broker_public, "postgresql://u:p@h/db", "x" * 40]))


@hsettings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(sorted(SPECS, key=lambda s: s.__name__)),
       env=st.dictionaries(ANY_NAME, ANY_TEXT, max_size=6))
def test_any_environment_gives_a_config_or_one_line_naming_a_variable(spec, env):
    """Against the model "a setting is known and parses, or the reader says which one does not"."""
    env = {**REQUIRED[spec], **env}
    try:
        config = read(spec, env)
    except SettingError as exc:
        message = str(exc)
        assert message and "\n" not in message
        assert any(name in message for name in REGISTRY) or any(name in message for name in env), message
        for name, raw in env.items():  # a secret's error never shows it whole
            if name.endswith(("_SECRET_KEY", "_SECRET")) and message.startswith(name) and len(raw.strip()) > 12:
                assert raw.strip() not in message, (name, message)
        if unknown := [n for n in env if n.startswith(PREFIXES) and n not in REGISTRY]:
            assert message.startswith(f"{min(unknown)}: unknown setting"), message
    else:
        assert isinstance(config, spec)
        assert not any(n.startswith(PREFIXES) and n not in REGISTRY for n in env)


# ------------------------------------------------------------------ Django

def test_django_settings_raise_improperly_configured_with_the_one_line(monkeypatch):
    monkeypatch.setenv("PORTAL_LOGIN_COOLOFF", "a while")
    with pytest.raises(ImproperlyConfigured) as info:
        runpy.run_path(str(ROOT / "portal" / "settings.py"))
    assert str(info.value) == "PORTAL_LOGIN_COOLOFF='a while' is not an integer"


def test_the_wsgi_entry_point_refuses_to_start_in_one_line(monkeypatch):
    monkeypatch.setenv("PORTAL_HSTS_SECONDS", "forever")
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "portal" / "wsgi.py"))
    assert str(info.value) == "portal: refusing to start: PORTAL_HSTS_SECONDS='forever' is not an integer"


def test_the_portal_settings_come_from_the_reader(monkeypatch):
    """What portal/settings.py derives: HTTPS on by default only with DEBUG off, and so on."""
    for name, raw in {"PORTAL_DEBUG": "0", "PORTAL_SECRET_KEY": "k" * 40, "SYNC_TOKEN_SECRET": "s" * 40}.items():
        monkeypatch.setenv(name, raw)
    values = runpy.run_path(str(ROOT / "portal" / "settings.py"))
    assert values["DEBUG"] is False and values["HTTPS"] is True and values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["AXES_FAILURE_LIMIT"] == 5 and values["SYNC_TOKEN_TTL"] == 300
    assert values["OUTBOX_REPLAY"] == AdminConfig()


def test_the_settings_listing_names_a_components_settings(capsys):
    assert settings.main(["relay"]) == 0
    out = capsys.readouterr().out
    assert "OUTBOX_RELAY_BATCH_SIZE=2000" in out and "DATABASE_URL" in out and "SYNC_PORT" not in out


def test_manage_py_prints_a_bad_setting_in_one_line_and_exits_2():
    env = {**os.environ, "PORTAL_RATE_SYNC_TOKEN": "lots"}
    proc = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("manage.py: PORTAL_RATE_SYNC_TOKEN='lots' is not a rate like 20/min or 5/30s"
                                   " (requests / [count] s|m|h|d)")
