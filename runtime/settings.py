"""THE settings reader: every environment variable the product reads, in one registry, and
one function, `read`, that reads a component's settings into its typed, frozen object.

A component declares its settings as a frozen dataclass whose fields name variables:

    @dataclass(frozen=True)
    class RelayConfig:
        COMPONENT: ClassVar[str] = "relay"
        batch_size: int = setting("OUTBOX_RELAY_BATCH_SIZE")      # default: the registry's
        curve: ClientKeys | None = combined(client_keys, "OUTBOX_RELAY_CURVE_SECRET_KEY",
                                            "OUTBOX_RELAY_BROKER_PUBLIC_KEY")

    config = read(RelayConfig, os.environ)    # pure: tests pass a dict

Invariants:
- Every variable is in REGISTRY once, with its parser, its default as the environment would
  write it (so a field's default is that text parsed: no second copy of a default), one line
  of help, and the components that read it. The development secrets are defined here only.
- Every error is one SettingError whose message is one line naming the variable:
  `OUTBOX_RELAY_BATCH_SIZE='x' is not an integer` (NAME=value when the message shows the
  value; `NAME: ...` when it does not, as for secrets, which are never shown).
- A variable with one of our PREFIXES that the registry does not know at all is refused, with
  the closest known name. One known to the registry but read by another component is not:
  every process inherits the whole environment (`make run`, compose's shared blocks).
- A variable set to blank counts as unset, unless its setting says blank means something
  (`blank=True`: an empty allow-list, an empty secret that must be refused, ...).
"""
from __future__ import annotations

import difflib
import sys
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping, NoReturn, TypeVar

from runtime import values
from runtime.curve import ClientKeys, check_key, key_list, read_secret_file
from runtime.database import postgres_url
from runtime.peers import parse_trusted
from runtime.tokens import DEFAULT_TTL

T = TypeVar("T")

PREFIXES = ("PORTAL_", "SYNC_", "OUTBOX_")

# The development defaults of the two secrets. Anyone can read them here, so: the portal
# refuses both with DEBUG off (portal/deploychecks.py), the sync server refuses its own
# unless SYNC_DEVELOPMENT=1 (syncserver/config.py).
DEV_PORTAL_SECRET_KEY = "dev-insecure-portal-secret-change-me"
DEV_SYNC_TOKEN_SECRET = "dev-insecure-sync-secret"

# The SockJS transports sockjs-tornado serves (SYNC_TRANSPORTS / SYNC_DISABLED_TRANSPORTS).
SOCKJS_TRANSPORTS = ("websocket", "xhr", "xhr_streaming", "eventsource", "htmlfile", "jsonp")

# Who reads what (Setting.readers).
PORTAL, RELAY, BROKER, SYNC, ADMIN, RUN, COMPOSE = (
    "portal", "relay", "broker", "syncserver", "outbox-admin", "make run", "compose.yaml")
COMPONENTS = (PORTAL, RELAY, BROKER, SYNC, ADMIN, RUN, COMPOSE)


class SettingError(ValueError):
    """A setting is unknown, missing, malformed or in conflict; str() is one line naming it."""


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: str | None            # as the environment would write it; None: no value
    help: str                      # one line: the documented table's "meaning" column
    readers: tuple[str, ...]
    section: str = ""              # the documented table's heading it is listed under
    shown: str | None = None       # the documented default column, when not `default` itself
    blank: bool = False            # a set-but-empty value is parsed (else it means unset)
    needed: str = ""               # why a reader that requires it cannot do without it
    file_of: str = ""              # this is NAME_FILE: a file holding the value of NAME

    @property
    def documented_default(self) -> str:
        if self.shown is not None:
            return self.shown
        return "–" if self.default is None else f"`{self.default}`"


REGISTRY: dict[str, Setting] = {}


def _add(section: str, name: str, parse: Callable[[str], Any], default: str | None, help: str,
         readers: tuple[str, ...], *, file: Callable[[str], Any] | None = None,
         file_help: str = "instead: a file holding it", **options: Any) -> None:
    """Register `name` (and NAME_FILE when `file` reads the value from a file)."""
    assert name.startswith(PREFIXES) or name == "DATABASE_URL", name
    assert name not in REGISTRY, name
    REGISTRY[name] = Setting(name, parse, default, help, readers, section, **options)
    if file is not None:
        REGISTRY[f"{name}_FILE"] = Setting(f"{name}_FILE", file, None, file_help, readers, section, file_of=name)


def _secret_key(raw: str) -> str:
    return check_key(raw, "secret key")


def _public_key(raw: str) -> str:
    return check_key(raw, "public key")


# ------------------------------------------------------------------ the registry
# In the documented order (tests/test_settings.py holds docs/configuration.md's table to it).

_add("", "DATABASE_URL", postgres_url, None, "PostgreSQL for every service",
     (PORTAL, RELAY, SYNC, ADMIN, RUN), shown="embedded PostgreSQL in `.pgdata/`, database `checklist`")

S = "portal"
_add(S, "PORTAL_PORT", values.port(), "8000", "`make run`: portal port (Django runserver on 127.0.0.1)", (RUN,))
_add(S, "PORTAL_SECRET_KEY", values.nonempty, DEV_PORTAL_SECRET_KEY,
     "Django secret key; with DEBUG off the development key, or one under 32 characters, stops the portal"
     " (`check`, `migrate`, gunicorn)", (PORTAL,), shown="a development key", blank=True)
_add(S, "PORTAL_DEBUG", values.flag, "1", "Django DEBUG", (PORTAL,), blank=True)
_add(S, "PORTAL_ALLOWED_HOSTS", values.items, "127.0.0.1,localhost", "Django ALLOWED_HOSTS", (PORTAL,), blank=True)
_add(S, "PORTAL_HTTPS", values.flag, None,
     "browsers reach the portal over TLS: secure cookies, HSTS, HTTP redirected; behind a TLS proxy it must set"
     " `X-Forwarded-Proto`", (PORTAL,), shown="`1` when DEBUG is off, else `0`")
_add(S, "PORTAL_HSTS_SECONDS", values.integer(0, 2 * 31_536_000), None, "HSTS max-age", (PORTAL,),
     shown="`31536000` with `PORTAL_HTTPS`, else `0`")
_add(S, "PORTAL_TRUSTED_PROXIES", parse_trusted, "",
     "addresses/CIDRs of reverse proxies whose `X-Forwarded-For` names the client (login lockout, rate limits)",
     (PORTAL,), shown="none")
_add(S, "PORTAL_LOGIN_FAILURE_LIMIT", values.integer(1, 1000), "5",
     "failed logins (per username, and per client address) that lock logging in", (PORTAL,))
_add(S, "PORTAL_LOGIN_COOLOFF", values.integer(1, 7 * 86400), "900",
     "seconds a lockout lasts after the last failure", (PORTAL,))
_add(S, "PORTAL_RATE_SYNC_TOKEN", values.rate_text, "60/min",
     "sync tokens per user (`N/[k]s\\|m\\|h\\|d`, e.g. `5/30s`)", (PORTAL,))
_add(S, "PORTAL_RATE_TOKEN_CREATE", values.rate_text, "20/h", "API tokens created per user", (PORTAL,))
_add(S, "PORTAL_RATE_TOKEN_FAILURES", values.rate_text, "20/10m",
     "failed API-token authentications per client address", (PORTAL,))
_add(S, "PORTAL_RATELIMIT_DIR", values.text, None,
     "rate-limit counters, shared by the portal's worker processes", (PORTAL,),
     shown="a directory per checkout under the system temp dir")
_add(S, "PORTAL_LOG_LEVEL", values.log_level, "INFO", "", (PORTAL,))
_add(S, "PORTAL_ORIGIN", values.origins, "http://localhost:8000",
     "`compose.yaml` only: the origin browsers load the portal from (the sync server's `SYNC_ALLOWED_ORIGINS`)",
     (COMPOSE,))
_add(S, "SYNC_TOKEN_SECRET", values.nonempty, DEV_SYNC_TOKEN_SECRET,
     "HMAC secret: the portal signs sync tokens, the sync server verifies (must match); the development value is"
     " refused by the portal with DEBUG off and by the sync server without `SYNC_DEVELOPMENT=1`",
     (PORTAL, SYNC), blank=True)
_add(S, "SYNC_TOKEN_TTL", values.integer(1), str(DEFAULT_TTL),
     "sync token lifetime, seconds: a connection's subscriptions end at its token's expiry unless the client"
     " renewed (the browser client does, a minute ahead)", (PORTAL,))
_add(S, "SYNC_PUBLIC_URL", values.text, "http://127.0.0.1:8001/sync", "the SockJS URL browsers connect to",
     (PORTAL,), shown="`http://127.0.0.1:$SYNC_PORT/sync`")

S = "broker"
_add(S, "OUTBOX_BROKER_FRONTEND", values.endpoint, "tcp://127.0.0.1:5557",
     "XSUB: publishers (relays, replay) connect here", (BROKER, RUN))
_add(S, "OUTBOX_BROKER_BACKEND", values.endpoint, "tcp://127.0.0.1:5558",
     "XPUB: subscribers (sync servers) connect here", (BROKER, RUN))
_add(S, "OUTBOX_BROKER_LOG_LEVEL", values.log_level, "INFO", "", (BROKER,))
_add(S, "OUTBOX_BROKER_CURVE_SECRET_KEY", _secret_key, None,
     "the broker's CURVE secret key (Z85); its public half goes to every client", (BROKER,),
     file=read_secret_file, file_help="instead: a file holding it (pyzmq certificate or the bare key; a docker secret)",
     shown="– (required; `make run`: `.curve/broker.key_secret`)",
     needed="the broker authenticates with CURVE and cannot run without its key")
_add(S, "OUTBOX_BROKER_PUBLISHER_KEYS", key_list, None,
     "public keys allowed to publish on the frontend (relays, replay), comma-separated", (BROKER,),
     shown="– (required)", needed="the public keys of the relays allowed to publish")
_add(S, "OUTBOX_BROKER_SUBSCRIBER_KEYS", key_list, None,
     "public keys allowed to read on the backend (sync servers, subscriber-library users); none may also be a"
     " publisher key", (BROKER,), shown="– (required)",
     needed="the public keys of the sync servers allowed to subscribe")

S = "relay"
_REPLAYERS = (RELAY, PORTAL, ADMIN)  # the portal's admin and outbox-admin replay as the relay does
_add(S, "OUTBOX_RELAY_BROKER_URL", values.endpoint, "tcp://127.0.0.1:5557", "broker frontend to publish to",
     _REPLAYERS)
_add(S, "OUTBOX_RELAY_POLL_INTERVAL", values.seconds(), "1.0", "seconds between polls without a doorbell ring",
     (RELAY,))
_add(S, "OUTBOX_RELAY_BATCH_SIZE", values.integer(1), "2000",
     "rows per claim (fewer when a transaction goes on beyond them; a transaction larger than that is claimed"
     " whole)", (RELAY,))
_add(S, "OUTBOX_RELAY_HEARTBEAT_INTERVAL", values.seconds(), "1.0", "seconds between heartbeats", (RELAY,))
_add(S, "OUTBOX_RELAY_LOCK_RETRY", values.seconds(), "0.5", "standby: seconds between leadership attempts", (RELAY,))
_add(S, "OUTBOX_RELAY_METRICS_PORT", values.port(allow_zero=True), "9101",
     "Prometheus on 127.0.0.1; 0 disables (`make run`'s standbys use +1, +2, …)", (RELAY, RUN))
_add(S, "OUTBOX_RELAY_MAX_EVENT_BYTES", values.integer(1), "1000000", "larger data makes a poison row", (RELAY,))
_add(S, "OUTBOX_RELAY_CONNECT_DELAY", values.seconds(allow_zero=True), "0.2",
     "wait after connecting to the broker (ZeroMQ slow joiner)", (RELAY,))
_add(S, "OUTBOX_RELAY_CLAIM_INTERVAL", values.seconds(allow_zero=True), "0.002",
     "seconds between claims while the relay is busy (batches them; 0: claim again at once)", (RELAY,))
_add(S, "OUTBOX_RELAY_NAME", values.text, None, "name shown as leader in status", (RELAY,), shown="`host:pid`")
_add(S, "OUTBOX_RELAY_LOG_LEVEL", values.log_level, "INFO", "", (RELAY,))
_add(S, "OUTBOX_RELAY_CURVE_SECRET_KEY", _secret_key, None,
     "the relay's publisher key (Z85); also what `outbox-admin replay` and the admin's replay use", _REPLAYERS,
     file=read_secret_file, shown="– (required; `make run`: `.curve/relay.key_secret`)",
     needed="publishing to the broker needs a publisher key")
_add(S, "OUTBOX_RELAY_BROKER_PUBLIC_KEY", _public_key, None, "the broker's public key", _REPLAYERS,
     shown="– (required)", needed="the broker's public key (OUTBOX_BROKER_CURVE_SECRET_KEY's public half)")

S = "sync server"
_add(S, "SYNC_HOST", values.text, "127.0.0.1", "listen address", (SYNC,))
_add(S, "SYNC_PORT", values.port(allow_zero=True), "8001", "listen port (0: any free port)", (SYNC, RUN))
_add(S, "SYNC_BROKER_URL", values.endpoint, "tcp://127.0.0.1:5558", "broker backend", (SYNC,))
_add(S, "SYNC_ALLOWED_ORIGINS", values.origins, "http://127.0.0.1:8000,http://localhost:8000",
     "exact origins allowed on every transport", (SYNC,), blank=True,
     shown="`http://127.0.0.1:$PORTAL_PORT,http://localhost:$PORTAL_PORT`")
_add(S, "SYNC_TRUSTED_PROXIES", parse_trusted, "",
     "addresses/CIDRs of reverse proxies whose `X-Forwarded-For` names the peer a polling session is bound to",
     (SYNC,), shown="none")
_add(S, "SYNC_DEVELOPMENT", values.flag, "0", "`1` accepts the development `SYNC_TOKEN_SECRET`", (SYNC,),
     shown="`0` (`make run`: `1`)")
_add(S, "SYNC_TRANSPORTS", values.names(SOCKJS_TRANSPORTS), None,
     "transports to enable (instead of `SYNC_DISABLED_TRANSPORTS`)", (SYNC,), blank=True)
_add(S, "SYNC_DISABLED_TRANSPORTS", values.names(SOCKJS_TRANSPORTS), "htmlfile,jsonp",
     "transports to disable (instead of `SYNC_TRANSPORTS`)", (SYNC,), blank=True)
_add(S, "SYNC_MAX_MESSAGE_BYTES", values.integer(256, 16 * 1024 * 1024), "16384", "largest client message", (SYNC,))
_add(S, "SYNC_MAX_SUBSCRIPTIONS", values.integer(1, 100_000), "100", "subscriptions per connection", (SYNC,))
_add(S, "SYNC_MAX_PENDING_BYTES", values.integer(64 * 1024, 1 << 30), "4194304",
     "bytes a connection may leave unread before it is closed as too slow (it reconnects and resumes)", (SYNC,))
_add(S, "SYNC_RECENT_EVENTS", values.integer(0, 1_000_000), "256", "in-memory ring of recent events per topic",
     (SYNC,))
_add(S, "SYNC_MAX_RECOVER_EVENTS", values.integer(1, 1_000_000), "5000", "a client further behind gets `resync`",
     (SYNC,))
_add(S, "SYNC_COALESCE_MS", values.integer(0, 1000), "0",
     "shortest window in which a topic's whole transactions share one message"
     " (0–1000; 0: those routed in one turn of the loop)", (SYNC,))
_add(S, "SYNC_LOG_LEVEL", values.log_level, "INFO", "", (SYNC,))
_add(S, "SYNC_DRAIN_SECONDS", values.seconds(allow_zero=True), "0",
     "on SIGTERM, how long /healthz answers 404 before the sessions close (behind a balancer: longer than its"
     " health check takes to notice)", (SYNC,), shown="`0` (balanced stacks: `3`)")
_add(S, "SYNC_CURVE_SECRET_KEY", _secret_key, None, "the sync server's subscriber key (Z85)", (SYNC,),
     file=read_secret_file, shown="– (required; `make run`: `.curve/syncserver.key_secret`)",
     needed="subscribing to the broker needs a subscriber key")
_add(S, "SYNC_BROKER_PUBLIC_KEY", _public_key, None, "the broker's public key", (SYNC,), shown="– (required)",
     needed="the broker's public key (OUTBOX_BROKER_CURVE_SECRET_KEY's public half)")
del S


# ------------------------------------------------------------------ reading

def unknown_problem(env: Mapping[str, str]) -> str | None:
    """The one-line refusal of the variables with our prefixes that no component reads."""
    unknown = sorted(name for name in env if name.startswith(PREFIXES) and name not in REGISTRY)
    if not unknown:
        return None
    first = unknown[0]
    close = difflib.get_close_matches(first, REGISTRY, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "`python -m runtime.settings` lists the settings"
    more = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    return f"{first}: unknown setting; {hint}{more}"


def _describe(name: str, raw: str, problem: str) -> str:
    # NAME=value only when the parser's message shows the value as given; a secret's never does.
    shows_value = raw and (problem.startswith(repr(raw)) or problem.startswith(raw + " "))
    return f"{name}={problem}" if shows_value else f"{name}: {problem}"


def given(env: Mapping[str, str], name: str) -> str | None:
    """The text of `name` in env, stripped; None when unset (or blank, unless blank counts)."""
    setting = REGISTRY[name]
    raw = env.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    return raw if raw or setting.blank else None


def is_set(env: Mapping[str, str], name: str) -> bool:
    """Whether env gives `name` a value, directly or as NAME_FILE."""
    file_name = f"{name}_FILE"
    return given(env, name) is not None or (file_name in REGISTRY and given(env, file_name) is not None)


def value(env: Mapping[str, str], name: str, parse: Callable[[str], Any] | None = None, *,
          use_default: bool = True) -> Any:
    """`name` parsed from env (or from its `_FILE`), else its default parsed (unless not
    `use_default`), else None.

    `parse` stands in for the registry's parser where a reader accepts more or less
    (`make run` takes a bare port for a broker address, and refuses port 0).
    """
    setting = REGISTRY[name]
    parse = parse or setting.parse
    raw = given(env, name)
    file_name = f"{name}_FILE"
    path = given(env, file_name) if file_name in REGISTRY else None
    if raw is not None and path is not None:
        raise SettingError(f"set {name} or {file_name}, not both")
    if path is not None:
        raw, name, parse = path, file_name, REGISTRY[file_name].parse
    elif raw is None:
        if setting.default is None or not use_default:
            return None
        raw = setting.default
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingError(_describe(name, raw, str(exc))) from None


def missing(name: str) -> SettingError:
    """The error for a required setting that is not set."""
    setting = REGISTRY[name]
    either = f" (or {name}_FILE)" if f"{name}_FILE" in REGISTRY else ""
    hint = " (make run creates the keys; see docs/security.md)" if either else ""
    return SettingError(f"{name}{either} is not set: {setting.needed or 'it is required'}{hint}")


def setting(name: str, *, parse: Callable[[str], Any] | None = None, required: bool = False,
            default: Any = MISSING, repr: bool = True) -> Any:
    """A dataclass field read from `name`. Its default is the registry's default, parsed;
    `default` only for a setting the registry gives none (what "unset" is in the object)."""
    if default is MISSING:
        default = default_of(name, parse)
    elif REGISTRY[name].default is not None:
        raise ValueError(f"{name} has its default in the registry")
    return field(default=default, repr=repr, metadata={"settings": (name,), "parse": parse, "required": required})


def default_of(name: str, parse: Callable[[str], Any] | None = None) -> Any:
    """The registry's default of `name`, parsed (None if it has none)."""
    raw = REGISTRY[name].default
    return None if raw is None else (parse or REGISTRY[name].parse)(raw)


def combined(build: Callable[..., Any], *names: str, default: Any = MISSING) -> Any:
    """A dataclass field built from several settings: build(*their values as given, None
    where unset; defaults are build's to apply, as it alone knows which setting won).

    `build` raises SettingError for a combination it refuses. The field's default is
    build(None, ...) unless `default` is given.
    """
    if default is MISSING:
        default = build(*(None for _ in names))
    return field(default=default, metadata={"settings": names, "build": build})


def read(spec: type[T], env: Mapping[str, str]) -> T:
    """`spec`'s settings from env: the one way every process reads its configuration.

    Refuses unknown variables with our prefixes, parses each field's setting(s) (defaults
    from the registry), then runs spec's `check()`, if any, for rules across settings.
    Raises SettingError (one line, naming the variable) on the first problem.
    """
    if problem := unknown_problem(env):
        raise SettingError(problem)
    kwargs = {}
    for f in fields(spec):  # type: ignore[arg-type]
        names = f.metadata.get("settings")
        if not names:
            continue
        if "build" in f.metadata:
            kwargs[f.name] = f.metadata["build"](*(value(env, n, use_default=False) for n in names))
        else:
            found = value(env, names[0], f.metadata["parse"])
            if found is None and f.metadata["required"]:
                raise missing(names[0])
            if found is not None:
                kwargs[f.name] = found
    config = spec(**kwargs)
    check = getattr(config, "check", None)
    if check is not None:
        check()
    return config


def names_read_by(spec: type) -> set[str]:
    """Every variable `spec` reads (its fields' settings, their _FILE forms, and ALSO_READS)."""
    found = set(getattr(spec, "ALSO_READS", ()))
    for f in fields(spec):
        for name in f.metadata.get("settings", ()):
            found.add(name)
            if f"{name}_FILE" in REGISTRY:
                found.add(f"{name}_FILE")
    return found


def client_keys(secret_name: str, server_name: str, *, required: bool = True) -> Callable[..., ClientKeys | None]:
    """A `combined` builder: a broker client's CURVE keys from its secret key (or _FILE)
    and the broker's public key. Not required: None when neither is set."""
    def build(secret: str | None, server: str | None) -> ClientKeys | None:
        if secret is None and server is None and not required:
            return None
        if secret is None:
            raise missing(secret_name)
        if server is None:
            raise missing(server_name)
        return ClientKeys(secret=secret, server=server)
    return build


def exit_on_error(prog: str, spec: type[T], env: Mapping[str, str]) -> T:
    """read() for an entry point: a SettingError is printed as `prog: <line>`, exit code 2."""
    try:
        return read(spec, env)
    except SettingError as exc:
        refuse(prog, exc)


def refuse(prog: str, exc: SettingError) -> NoReturn:
    print(f"{prog}: {exc}", file=sys.stderr)
    sys.exit(2)


# ------------------------------------------------------------------ the table

def markdown_table() -> str:
    """The configuration table of docs/configuration.md, from the registry."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    section = None
    for s in REGISTRY.values():
        if s.section != section:
            section = s.section
            if section:
                lines.append(f"| **{section}** | | |")
        lines.append(f"| `{s.name}` | {s.documented_default} |{f' {s.help} ' if s.help else ' '}|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runtime.settings",
                                     description="The settings every component reads (docs/configuration.md).")
    parser.add_argument("component", nargs="?", choices=COMPONENTS, help="only the settings this component reads")
    args = parser.parse_args(argv)
    if args.component is None:
        print(markdown_table())
    else:
        for s in REGISTRY.values():
            if args.component in s.readers:
                print(f"{s.name}={s.default or ''}".ljust(48) + f"  # {s.help or s.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
