"""Settings of the relay and the broker, parsed and validated from the environment (pure).

Entry points call relay_config(os.environ) / broker_config(os.environ); a bad value
raises ConfigError with a one-line message, which the entry point prints before exiting 2.

CURVE keys (outbox_relay/curve.py) are required: there is no setting that switches the
broker's authentication off. A daemon is given its own secret key, as a Z85 value
(`..._CURVE_SECRET_KEY`) or as a file holding it (`..._CURVE_SECRET_KEY_FILE`, e.g. a
docker secret), and the public keys of its peers as Z85 values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Mapping, TypeVar

from outbox_relay.curve import ClientKeys, CurveKeyError, check_key, key_list, public_of, read_secret_file
from outbox_relay.envvalues import env_value, parse_int, parse_port

C = TypeVar("C")

DEFAULT_FRONTEND = "tcp://127.0.0.1:5557"
DEFAULT_BACKEND = "tcp://127.0.0.1:5558"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class RelayConfig:
    broker_url: str = DEFAULT_FRONTEND          # the broker's frontend (XSUB) to publish to
    poll_interval: float = 1.0                  # seconds between polls when no doorbell rings
    batch_size: int = 2000                      # rows per claim: the transactions that end within them
    heartbeat_interval: float = 1.0             # seconds between heartbeats
    lock_retry: float = 0.5                     # standby: seconds between leadership attempts
    metrics_port: int = 9101                    # 0 disables the Prometheus endpoint
    max_event_bytes: int = 1_000_000            # data larger than this makes a poison row
    connect_delay: float = 0.2                  # wait after connecting to the broker (slow joiner)
    claim_interval: float = 0.002               # seconds between claims of a trickle (see relay._drain)
    name: str = ""                              # this relay's name in status; default host:pid
    log_level: str = "INFO"
    curve: ClientKeys | None = None             # its key pair and the broker's public key (required)


@dataclass(frozen=True)
class BrokerConfig:
    frontend: str = DEFAULT_FRONTEND
    backend: str = DEFAULT_BACKEND
    log_level: str = "INFO"
    secret_key: str = field(default="", repr=False)  # the broker's CURVE secret key (Z85); required
    publishers: frozenset[str] = frozenset()    # public keys allowed on the frontend (relays, replay)
    subscribers: frozenset[str] = frozenset()   # public keys allowed on the backend (sync servers, ...)

    @property
    def public_key(self) -> str:
        return public_of(self.secret_key)


def _seconds(allow_zero: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{raw!r} is not a finite number of seconds")
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"{raw} is out of range (must be {'>= 0' if allow_zero else '> 0'})")
        return value
    return parse


def _endpoint(raw: str) -> str:
    if not raw.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"{raw!r} is not a ZeroMQ endpoint like tcp://127.0.0.1:5557")
    return raw


def _level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{raw!r} is not DEBUG, INFO, WARNING or ERROR")
    return level


_RELAY_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "OUTBOX_RELAY_BROKER_URL": ("broker_url", _endpoint),
    "OUTBOX_RELAY_POLL_INTERVAL": ("poll_interval", _seconds()),
    "OUTBOX_RELAY_BATCH_SIZE": ("batch_size", partial(parse_int, low=1)),
    "OUTBOX_RELAY_HEARTBEAT_INTERVAL": ("heartbeat_interval", _seconds()),
    "OUTBOX_RELAY_LOCK_RETRY": ("lock_retry", _seconds()),
    "OUTBOX_RELAY_METRICS_PORT": ("metrics_port", partial(parse_port, allow_zero=True)),
    "OUTBOX_RELAY_MAX_EVENT_BYTES": ("max_event_bytes", partial(parse_int, low=1)),
    "OUTBOX_RELAY_CONNECT_DELAY": ("connect_delay", _seconds(allow_zero=True)),
    "OUTBOX_RELAY_CLAIM_INTERVAL": ("claim_interval", _seconds(allow_zero=True)),
    "OUTBOX_RELAY_NAME": ("name", str),
    "OUTBOX_RELAY_LOG_LEVEL": ("log_level", _level),
}
_RELAY_KEYS = ("OUTBOX_RELAY_CURVE_SECRET_KEY", "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE", "OUTBOX_RELAY_BROKER_PUBLIC_KEY")

_BROKER_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "OUTBOX_BROKER_FRONTEND": ("frontend", _endpoint),
    "OUTBOX_BROKER_BACKEND": ("backend", _endpoint),
    "OUTBOX_BROKER_LOG_LEVEL": ("log_level", _level),
}
_BROKER_KEYS = ("OUTBOX_BROKER_CURVE_SECRET_KEY", "OUTBOX_BROKER_CURVE_SECRET_KEY_FILE",
                "OUTBOX_BROKER_PUBLISHER_KEYS", "OUTBOX_BROKER_SUBSCRIBER_KEYS")


def _parse(env: Mapping[str, str], prefix: str, fields: dict[str, tuple[str, Callable[[str], object]]],
           cls: Callable[..., C], also_known: tuple[str, ...] = ()) -> C:
    known = set(fields) | set(also_known)
    for name in env:
        if name.startswith(prefix) and name not in known:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(sorted(known))})")
    defaults = cls()
    try:
        values = {attr: env_value(env, name, getattr(defaults, attr), parse) for name, (attr, parse) in fields.items()}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cls(**values)


def secret_key_setting(env: Mapping[str, str], name: str, needed_for: str) -> str:
    """The Z85 secret key in env[name] or in the file env[name + "_FILE"] (exactly one of
    them); ValueError naming the variable when neither, both or a bad value is given."""
    value, path = env.get(name, "").strip(), env.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ValueError(f"set {name} or {name}_FILE, not both")
    if not value and not path:
        raise ValueError(f"{name} (or {name}_FILE) is not set: {needed_for} (make run creates the keys;"
                         " see docs/security.md)")
    try:
        return check_key(value, "secret key") if value else read_secret_file(path)
    except CurveKeyError as exc:
        raise ValueError(f"{name if value else name + '_FILE'}: {exc}") from None


def public_key_setting(env: Mapping[str, str], name: str, needed_for: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ValueError(f"{name} is not set: {needed_for}")
    try:
        return check_key(value, "public key")
    except CurveKeyError as exc:
        raise ValueError(f"{name}: {exc}") from None


def public_keys_setting(env: Mapping[str, str], name: str, needed_for: str) -> frozenset[str]:
    value = env.get(name, "").strip()
    if not value:
        raise ValueError(f"{name} is not set: {needed_for}")
    try:
        return key_list(value)
    except CurveKeyError as exc:
        raise ValueError(f"{name}: {exc}") from None


def relay_keys(env: Mapping[str, str]) -> ClientKeys:
    """The publisher's CURVE keys from OUTBOX_RELAY_* (the relay, and replay)."""
    try:
        return ClientKeys(
            secret=secret_key_setting(env, "OUTBOX_RELAY_CURVE_SECRET_KEY",
                                      "publishing to the broker needs a publisher key"),
            server=public_key_setting(env, "OUTBOX_RELAY_BROKER_PUBLIC_KEY",
                                      "the broker's public key (OUTBOX_BROKER_CURVE_SECRET_KEY's public half)"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def relay_config(env: Mapping[str, str]) -> RelayConfig:
    cfg = _parse(env, "OUTBOX_RELAY_", _RELAY_FIELDS, RelayConfig, _RELAY_KEYS)
    return replace(cfg, curve=relay_keys(env))


def broker_config(env: Mapping[str, str]) -> BrokerConfig:
    cfg = _parse(env, "OUTBOX_BROKER_", _BROKER_FIELDS, BrokerConfig, _BROKER_KEYS)
    if cfg.frontend == cfg.backend:
        raise ConfigError("OUTBOX_BROKER_FRONTEND and OUTBOX_BROKER_BACKEND must differ")
    try:
        cfg = replace(
            cfg,
            secret_key=secret_key_setting(env, "OUTBOX_BROKER_CURVE_SECRET_KEY",
                                          "the broker authenticates with CURVE and cannot run without its key"),
            publishers=public_keys_setting(env, "OUTBOX_BROKER_PUBLISHER_KEYS",
                                           "the public keys of the relays allowed to publish"),
            subscribers=public_keys_setting(env, "OUTBOX_BROKER_SUBSCRIBER_KEYS",
                                            "the public keys of the sync servers allowed to subscribe"),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    check_broker_keys(cfg)
    return cfg


def check_broker_keys(cfg: BrokerConfig) -> None:
    """ConfigError unless the broker has a key and each side its own, non-empty allow-list."""
    if not cfg.secret_key:
        raise ConfigError("the broker has no CURVE secret key (OUTBOX_BROKER_CURVE_SECRET_KEY)")
    if not cfg.publishers or not cfg.subscribers:
        raise ConfigError("the broker needs OUTBOX_BROKER_PUBLISHER_KEYS and OUTBOX_BROKER_SUBSCRIBER_KEYS")
    both = cfg.publishers & cfg.subscribers
    if both:
        # One key for both roles would let a subscriber publish (or a relay read): a role per key.
        raise ConfigError(f"OUTBOX_BROKER_SUBSCRIBER_KEYS: {sorted(both)[0][:8]}... is also a publisher key;"
                          " give publishers and subscribers keys of their own")
