"""compose.yaml and the Dockerfile, checked without Docker: structure, that every command
runs code of ours, that every variable a service sets is one its code reads (and parses),
and that health checks and start order hold together."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from runtime.settings import COMPOSE as COMPOSE_FILE, PORTAL, PREFIXES, REGISTRY, SYNC, SettingError
from stack.keys import KeySet
from stack.processes import ROOT
from stack.supervisor import port_of

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("migrate", "broker", "relay", "syncserver", "portal")
LONG_RUNNING = ("postgres", "broker", "relay", "syncserver", "balancer", "portal")


# What `python -m stack.keys >> .env` gives compose: the variables ${VAR:?} requires.
KEYS = KeySet.generate()
REQUIRED = KEYS.compose_env()


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR} with an empty environment, and ${VAR:?message}
    with the variables the docs tell users to set. One pass, as compose does: a `$$` in
    a substituted value (Z85 keys may have one) stays as it is."""
    def sub(m: re.Match) -> str:
        if m[0] == "$$":
            return "$"
        if m["op"] and m["op"].endswith("?"):
            return REQUIRED.get(m["name"], f"<{m['name']}>")
        return m["arg"] if m["op"] else ""
    return re.sub(r"\$\$|\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}", sub, value)


def env_of(service: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (SERVICES[service].get("environment") or {}).items()}


def read_by(component: str) -> set[str]:
    """The variables the settings registry says `component` reads."""
    return {name for name, s in REGISTRY.items() if component in s.readers}


def test_services_and_relay_replicas():
    assert set(SERVICES) == {"postgres", "balancer", *APP_SERVICES}
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["relay"]["deploy"]["replicas"] == 2, "leader + hot standby"
    assert SERVICES["syncserver"]["deploy"]["replicas"] == 3, "several sync servers behind the balancer"
    assert "ports" not in SERVICES["syncserver"], "replicas cannot share a host port: the balancer publishes"
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] == ".", name
        assert "container_name" not in SERVICES[name], "fixed names break replicas and scaling"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_command_runs_code_of_ours(service):
    command = SERVICES[service]["command"]
    assert isinstance(command, list), "exec form: signals reach the process, not a shell"
    if command[:2] == ["python", "-m"]:
        module = command[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        if spec.submodule_search_locations:  # a package: python -m needs its __main__
            assert importlib.util.find_spec(module + ".__main__") is not None, module
    elif command[0] == "gunicorn":
        module, _, attr = command[1].partition(":")
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, module
        assert re.search(rf"^{attr} = ", Path(spec.origin).read_text(), re.M), command[1]
    elif command[:2] == ["sh", "-c"]:
        from django.core.management import get_commands

        steps = re.findall(r"python manage\.py (\S+)", command[2])
        assert steps == ["migrate", "seed_demo"]
        assert set(steps) <= set(get_commands()), "a manage.py command that does not exist"
    else:
        pytest.fail(f"unexpected command {command}")


def test_broker_and_relay_settings_parse_with_the_code_that_reads_them():
    from outbox_relay.config import broker_config, relay_config

    # The parsers reject unknown prefixed names, so parsing is the name check too.
    with pytest.raises(SettingError):
        relay_config({"OUTBOX_RELAY_NOT_A_SETTING": "1"})
    with pytest.raises(SettingError):
        broker_config({"OUTBOX_BROKER_NOT_A_SETTING": "1"})
    broker = broker_config(env_of("broker"))
    relay = relay_config(env_of("relay"))
    assert port_of(relay.broker_url) == ("broker", port_of(broker.frontend)[1])
    assert set(env_of("broker")) == {"OUTBOX_BROKER_FRONTEND", "OUTBOX_BROKER_BACKEND", "OUTBOX_BROKER_CURVE_SECRET_KEY",
                                     "OUTBOX_BROKER_PUBLISHER_KEYS", "OUTBOX_BROKER_SUBSCRIBER_KEYS"}
    assert set(env_of("relay")) - {"DATABASE_URL"} <= {n for n in env_of("relay") if n.startswith("OUTBOX_RELAY_")}


CURVE_SETTINGS = {  # (service, setting) -> the compose variable it must require
    ("broker", "OUTBOX_BROKER_CURVE_SECRET_KEY"): "CURVE_BROKER_SECRET_KEY",
    ("broker", "OUTBOX_BROKER_PUBLISHER_KEYS"): "CURVE_PUBLISHER_KEYS",
    ("broker", "OUTBOX_BROKER_SUBSCRIBER_KEYS"): "CURVE_SUBSCRIBER_KEYS",
    ("relay", "OUTBOX_RELAY_CURVE_SECRET_KEY"): "CURVE_RELAY_SECRET_KEY",
    ("relay", "OUTBOX_RELAY_BROKER_PUBLIC_KEY"): "CURVE_BROKER_PUBLIC_KEY",
    ("syncserver", "SYNC_CURVE_SECRET_KEY"): "CURVE_SYNC_SECRET_KEY",
    ("syncserver", "SYNC_BROKER_PUBLIC_KEY"): "CURVE_BROKER_PUBLIC_KEY",
}


def test_broker_keys_are_required_from_the_environment_and_fit_together():
    for (service, setting), var in CURVE_SETTINGS.items():
        raw = SERVICES[service]["environment"][setting]
        # ${VAR:?message}: compose refuses to start without it; never a default key.
        assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", raw), (service, setting, raw)
    # Each service holds its own secret only; the portal and migrate none.
    for service in ("portal", "migrate", "postgres"):
        assert not any("CURVE" in str(v) for v in (SERVICES[service].get("environment") or {}).values()), service
    assert set(REQUIRED) == set(CURVE_SETTINGS.values())
    # With what `python -m stack.keys` prints, the relay's key may publish and the sync server's subscribe.
    from outbox_relay.config import broker_config, relay_config
    from runtime.curve import public_of
    from syncserver.config import from_env

    broker, relay, sync = broker_config(env_of("broker")), relay_config(env_of("relay")), from_env(env_of("syncserver"))
    assert relay.curve.public in broker.publishers and sync.curve.public in broker.subscribers
    assert relay.curve.server == sync.curve.server == public_of(broker.secret_key)


def test_the_key_generator_prints_dotenv_lines_compose_reads_literally(capsys):
    from stack import keys

    keys.main([])
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    values = dict(re.fullmatch(r"([A-Z_]+)='([^']*)'", line).groups() for line in lines)
    assert set(values) == set(REQUIRED)
    assert KeySet(values["CURVE_BROKER_SECRET_KEY"], values["CURVE_RELAY_SECRET_KEY"],
                  values["CURVE_SYNC_SECRET_KEY"]).compose_env() == values


def test_syncserver_settings_parse_with_the_code_that_reads_them():
    from syncserver.config import from_env

    config = from_env(env_of("syncserver"))
    assert config.host == "0.0.0.0"
    assert port_of(config.broker_url) == ("broker", port_of(env_of("broker")["OUTBOX_BROKER_BACKEND"])[1])
    accepted = read_by(SYNC)
    assert set(env_of("syncserver")) <= accepted, set(env_of("syncserver")) - accepted


@pytest.mark.parametrize("service", ["portal", "migrate"])
def test_portal_settings_names_are_read_by_the_settings(service):
    from portal.config import PortalConfig
    from runtime.settings import read

    accepted = read_by(PORTAL)
    assert "DATABASE_URL" in accepted and "SYNC_PUBLIC_URL" in accepted
    assert set(env_of(service)) <= accepted, set(env_of(service)) - accepted
    given = {k: "1" if v == f"<{k}>" else v for k, v in env_of(service).items()}  # what the user must set
    read(PortalConfig, given)  # and each value parses


def test_compose_variables_with_our_prefixes_are_settings_the_registry_knows():
    """Users export these for compose; `make run` and the daemons must not refuse them as unknown."""
    text = (ROOT / "compose.yaml").read_text()
    ours = {name for name in re.findall(r"\$\{([A-Z0-9_]+)", text) if name.startswith(PREFIXES)}
    assert ours and ours <= set(REGISTRY), ours - set(REGISTRY)
    only_compose = ours - {name for service in APP_SERVICES for name in env_of(service)}
    assert all(COMPOSE_FILE in REGISTRY[name].readers for name in only_compose), only_compose


def test_shared_secret_and_public_addresses_agree():
    portal, sync = env_of("portal"), env_of("syncserver")
    assert portal["SYNC_TOKEN_SECRET"] == sync["SYNC_TOKEN_SECRET"] != "dev-insecure-sync-secret"
    published = {p.split(":")[1] for p in SERVICES["balancer"]["ports"]}
    assert urlport(portal["SYNC_PUBLIC_URL"]) in published
    assert portal["SYNC_PUBLIC_URL"].endswith("/sync")
    assert portal["PORTAL_DEBUG"] == "0"
    assert sync["SYNC_ALLOWED_ORIGINS"].endswith(":" + SERVICES["portal"]["ports"][0].split(":")[0])


REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "PORTAL_SECRET_KEY", "SYNC_TOKEN_SECRET")


def test_compose_refuses_to_start_without_its_secrets():
    """Every use of a secret is ${NAME:?message}: compose stops with the message when it is
    unset or empty, instead of starting with a default anyone can read in this file."""
    text = (ROOT / "compose.yaml").read_text()
    assert "change-me" not in text
    for name in REQUIRED_SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[?-])?[^}]*\}", text)
        assert uses, f"{name} is not used"
        assert all(op == ":?" for op in uses), f"{name} has a default or may be empty: {uses}"
    assert re.search(r"PORTAL_HTTPS: \$\{PORTAL_HTTPS:\?", text), "HTTPS must be chosen explicitly"


def urlport(url: str) -> str:
    return re.search(r":(\d+)/", url)[1]


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_every_long_running_service_has_a_health_check_that_compiles(service):
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    if test[1:3] == ["python", "-c"]:
        compile(test[3], f"<healthcheck of {service}>", "exec")
    elif service == "balancer":  # the haproxy image has bash, not python
        assert test[1:3] == ["bash", "-c"] and "/dev/tcp/127.0.0.1/8001" in test[3]
    else:
        assert service == "postgres" and test[1] == "pg_isready"


def test_health_checks_probe_the_configured_ports():
    assert "9101" in SERVICES["relay"]["healthcheck"]["test"][3]
    assert env_of("relay")["OUTBOX_RELAY_METRICS_PORT"] == "9101"
    assert f"{env_of('syncserver')['SYNC_PORT']}/healthz" in SERVICES["syncserver"]["healthcheck"]["test"][3]
    assert "0.0.0.0:8000" in SERVICES["portal"]["command"]
    assert "127.0.0.1:8000/" in SERVICES["portal"]["healthcheck"]["test"][3]
    probe = SERVICES["broker"]["healthcheck"]["test"][3]
    for var in ("OUTBOX_BROKER_FRONTEND", "OUTBOX_BROKER_BACKEND"):
        assert str(port_of(env_of("broker")[var])[1]) in probe


def test_start_order_waits_for_what_each_service_needs():
    def deps(name):
        return SERVICES[name].get("depends_on") or {}

    assert deps("migrate") == {"postgres": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        for dep in deps(name).values():
            assert "condition" in dep, name
        if name != "migrate" and "DATABASE_URL" in env_of(name):
            assert deps(name)["migrate"] == {"condition": "service_completed_successfully"}, name
    for name in ("relay", "syncserver"):
        assert deps(name)["broker"] == {"condition": "service_healthy"}, name
    assert SERVICES["migrate"]["restart"] == "no", "a one-shot must not be restarted"


def test_everything_shares_one_database():
    urls = {env_of(name)["DATABASE_URL"] for name in APP_SERVICES if "DATABASE_URL" in env_of(name)}
    assert len(urls) == 1
    url = urls.pop()
    pg = {k: interpolate(str(v)) for k, v in SERVICES["postgres"]["environment"].items()}
    assert url == f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"


def test_dockerfile_builds_what_the_services_need():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "npm ci" in text and "COPY --from=browser-deps /app/node_modules ./node_modules" in text
    assert "collectstatic --noinput" in text
    assert re.search(r"^USER (?!root)", text, re.M), "services should not run as root"
    # The dependency layer installs from stub packages: one for each package pyproject.toml lists.
    listed = re.findall(r'"(\w+)\*"', re.search(r"^include = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)[1])
    assert "runtime" in listed and all(f"{name}/__init__.py" in text for name in listed), listed
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "node_modules", ".pgdata", "staticfiles", ".curve"):  # .curve: make run's keys
        assert path in ignored, path
    # whitenoise serves the collected files under gunicorn.
    from django.conf import settings

    assert settings.MIDDLEWARE[1] == "whitenoise.middleware.WhiteNoiseMiddleware"
    assert settings.STATIC_ROOT


def test_the_balancer_runs_the_generated_configuration_in_front_of_the_sync_servers():
    from stack.balancer import COMPOSE_CONFIG, compose_config

    assert (ROOT / "deploy" / "haproxy.cfg").read_text() == compose_config(), \
        "deploy/haproxy.cfg is stale: python -m stack.balancer > deploy/haproxy.cfg"
    balancer = SERVICES["balancer"]
    assert balancer["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    assert COMPOSE_CONFIG.host == "syncserver" and str(COMPOSE_CONFIG.port) == env_of("syncserver")["SYNC_PORT"]
    assert SERVICES["portal"]["depends_on"]["balancer"] == {"condition": "service_healthy"}
    assert balancer["depends_on"]["syncserver"] == {"condition": "service_healthy"}
    # The sync servers trust exactly the balancer's fixed address for X-Forwarded-For.
    address = balancer["networks"]["default"]["ipv4_address"]
    assert env_of("syncserver")["SYNC_TRUSTED_PROXIES"] == address
    subnet = COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"]
    import ipaddress
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)


def test_postgres_settings_are_real_and_in_range(scratch_db):
    """Every `-c name=value` the postgres service starts with names a PostgreSQL setting
    and a value that setting accepts (checked against the test server's pg_settings: a
    typo would stop the container from starting, and Docker does not run here)."""
    import psycopg

    command = SERVICES["postgres"]["command"]
    assert command[0] == "postgres"
    pairs = [command[i + 1].split("=", 1) for i in range(1, len(command), 2)]
    assert all(command[i] == "-c" for i in range(1, len(command), 2)) and pairs
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        for name, value in pairs:
            row = conn.execute("SELECT vartype, unit, min_val, max_val FROM pg_settings WHERE name = %s",
                               (name,)).fetchone()
            assert row is not None, f"{name} is not a PostgreSQL setting"
            vartype, unit, lo, hi = row
            if vartype == "bool":
                assert value in ("on", "off", "true", "false"), (name, value)
            else:
                assert vartype == "integer" and unit == "MB", (name, vartype, unit)
                mb = conn.execute("SELECT pg_size_bytes(%s) / 1048576", (value,)).fetchone()[0]
                assert int(lo) <= mb <= int(hi), (name, value)
