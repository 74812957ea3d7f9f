"""Sync server settings: one frozen dataclass, parsed and validated from SYNC_* variables.

Pure: `from_env` takes the mapping, so tests need no process environment. The entry point
turns a ConfigError into a one-line message on stderr and exit code 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from outbox_relay.config import public_key_setting, secret_key_setting
from outbox_relay.curve import ClientKeys
from outbox_relay.envvalues import env_value, parse_int, parse_port
from stack.database import url_problem
from syncserver.origins import normalize_origin
from syncserver.peers import Network, parse_trusted

ALL_TRANSPORTS = ("websocket", "xhr", "xhr_streaming", "eventsource", "htmlfile", "jsonp")
# htmlfile and jsonp execute server text as script in the page's origin: off unless asked for.
DEFAULT_DISABLED = ("htmlfile", "jsonp")
DEV_SECRET = "dev-insecure-sync-secret"

T = TypeVar("T")


class ConfigError(ValueError):
    """A SYNC_* value is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8001
    broker_url: str = "tcp://127.0.0.1:5558"
    token_secret: str = DEV_SECRET
    allowed_origins: frozenset[str] = frozenset({"http://127.0.0.1:8000", "http://localhost:8000"})
    disabled_transports: tuple[str, ...] = DEFAULT_DISABLED
    max_message_bytes: int = 16 * 1024
    max_subscriptions: int = 100
    recent_events: int = 256
    max_recover_events: int = 5000
    coalesce_ms: int = 1  # shortest window in which a busy topic's transactions share one message
    heartbeat_interval: float = 1.0
    database_url: str = ""
    # Its CURVE key pair and the broker's public key: the broker admits only subscriber
    # keys on its backend. Required by from_env; there is no unauthenticated mode.
    curve: ClientKeys | None = None
    # Reverse proxies whose X-Forwarded-For names the peer (syncserver/peers.py); the
    # session-to-peer binding of the polling transports uses that peer.
    trusted_proxies: tuple[Network, ...] = ()
    development: bool = False  # SYNC_DEVELOPMENT=1: the development token secret is accepted


def _setting(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    try:
        return env_value(env, name, default, parse)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _setting(env, name, default, partial(parse_int, low=low, high=high))


def _list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def from_env(env: Mapping[str, str]) -> Config:
    """Build and validate the configuration; raises ConfigError naming the bad variable."""
    d = Config()
    host = env.get("SYNC_HOST", "").strip() or d.host
    port = _setting(env, "SYNC_PORT", d.port, partial(parse_port, allow_zero=True))  # 0: the OS picks one

    broker_url = env.get("SYNC_BROKER_URL", "").strip() or d.broker_url
    if urlsplit(broker_url).scheme not in ("tcp", "ipc", "inproc"):
        raise ConfigError(f"SYNC_BROKER_URL={broker_url!r} must be a ZeroMQ endpoint like tcp://host:port")
    try:
        curve = ClientKeys(
            secret=secret_key_setting(env, "SYNC_CURVE_SECRET_KEY",
                                      "subscribing to the broker needs a subscriber key"),
            server=public_key_setting(env, "SYNC_BROKER_PUBLIC_KEY",
                                      "the broker's public key (OUTBOX_BROKER_CURVE_SECRET_KEY's public half)"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    secret = env.get("SYNC_TOKEN_SECRET", d.token_secret)
    if not secret:
        raise ConfigError("SYNC_TOKEN_SECRET must not be empty")

    origins_raw = env.get("SYNC_ALLOWED_ORIGINS")
    if origins_raw is None:
        origins = d.allowed_origins
    else:
        try:
            origins = frozenset(normalize_origin(o, strict=True) for o in _list(origins_raw))
        except ValueError as exc:
            raise ConfigError(f"SYNC_ALLOWED_ORIGINS: {exc}") from None
        if not origins:
            raise ConfigError("SYNC_ALLOWED_ORIGINS must list at least one origin")

    enabled_raw, disabled_raw = env.get("SYNC_TRANSPORTS"), env.get("SYNC_DISABLED_TRANSPORTS")
    if enabled_raw is not None and disabled_raw is not None:
        raise ConfigError("set SYNC_TRANSPORTS or SYNC_DISABLED_TRANSPORTS, not both")
    if enabled_raw is not None:
        names = _list(enabled_raw)
        _check_transports("SYNC_TRANSPORTS", names)
        if not names:
            raise ConfigError("SYNC_TRANSPORTS must enable at least one transport")
        disabled = tuple(t for t in ALL_TRANSPORTS if t not in names)
    elif disabled_raw is not None:
        names = _list(disabled_raw)
        _check_transports("SYNC_DISABLED_TRANSPORTS", names)
        disabled = tuple(t for t in ALL_TRANSPORTS if t in names)
        if len(disabled) == len(ALL_TRANSPORTS):
            raise ConfigError("SYNC_DISABLED_TRANSPORTS disables every transport")
    else:
        disabled = d.disabled_transports

    # Empty means "ask stack.database" (the embedded server), resolved by the entry point.
    database_url = env.get("DATABASE_URL", "").strip()
    if database_url and (problem := url_problem(database_url)):
        raise ConfigError(problem)

    trusted_proxies = _setting(env, "SYNC_TRUSTED_PROXIES", d.trusted_proxies, parse_trusted)
    development = _setting(env, "SYNC_DEVELOPMENT", d.development, _flag)

    config = Config(
        host=host, port=port, broker_url=broker_url, token_secret=secret, allowed_origins=origins,
        disabled_transports=disabled, trusted_proxies=trusted_proxies, development=development,
        max_message_bytes=_int(env, "SYNC_MAX_MESSAGE_BYTES", d.max_message_bytes, 256, 16 * 1024 * 1024),
        max_subscriptions=_int(env, "SYNC_MAX_SUBSCRIPTIONS", d.max_subscriptions, 1, 100_000),
        recent_events=_int(env, "SYNC_RECENT_EVENTS", d.recent_events, 0, 1_000_000),
        max_recover_events=_int(env, "SYNC_MAX_RECOVER_EVENTS", d.max_recover_events, 1, 1_000_000),
        coalesce_ms=_int(env, "SYNC_COALESCE_MS", d.coalesce_ms, 0, 1000),
        database_url=database_url,
        curve=curve,
    )
    # Last, so a malformed setting is reported as itself first.
    if secret == DEV_SECRET and not development:
        raise ConfigError("SYNC_TOKEN_SECRET is the development default, with which anyone can mint tokens: "
                          "set the secret the portal signs with, or SYNC_DEVELOPMENT=1 on a development machine")
    return config


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(f"{raw!r} is not 0 or 1")
    return raw == "1"


def _check_transports(var: str, names: list[str]) -> None:
    unknown = [n for n in names if n not in ALL_TRANSPORTS]
    if unknown:
        raise ConfigError(f"{var}: unknown transport(s) {', '.join(unknown)}; known: {', '.join(ALL_TRANSPORTS)}")
