"""Settings of the relay and the broker, parsed and validated from the environment (pure).

Entry points call relay_config(os.environ) / broker_config(os.environ); a bad value
raises ConfigError with a one-line message, which the entry point prints before exiting 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, TypeVar

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


@dataclass(frozen=True)
class BrokerConfig:
    frontend: str = DEFAULT_FRONTEND
    backend: str = DEFAULT_BACKEND
    log_level: str = "INFO"


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

_BROKER_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "OUTBOX_BROKER_FRONTEND": ("frontend", _endpoint),
    "OUTBOX_BROKER_BACKEND": ("backend", _endpoint),
    "OUTBOX_BROKER_LOG_LEVEL": ("log_level", _level),
}


def _parse(env: Mapping[str, str], prefix: str, fields: dict[str, tuple[str, Callable[[str], object]]],
           cls: Callable[..., C]) -> C:
    known = set(fields)
    for name in env:
        if name.startswith(prefix) and name not in known:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(sorted(known))})")
    defaults = cls()
    try:
        values = {attr: env_value(env, name, getattr(defaults, attr), parse) for name, (attr, parse) in fields.items()}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cls(**values)


def relay_config(env: Mapping[str, str]) -> RelayConfig:
    return _parse(env, "OUTBOX_RELAY_", _RELAY_FIELDS, RelayConfig)


def broker_config(env: Mapping[str, str]) -> BrokerConfig:
    cfg = _parse(env, "OUTBOX_BROKER_", _BROKER_FIELDS, BrokerConfig)
    if cfg.frontend == cfg.backend:
        raise ConfigError("OUTBOX_BROKER_FRONTEND and OUTBOX_BROKER_BACKEND must differ")
    return cfg
