"""Settings of the relay, the broker and outbox-admin, as runtime/settings.py reads them.

Entry points call read(RelayConfig, os.environ) / read(BrokerConfig, os.environ) (or
relay_config / broker_config); a bad value raises SettingError with a one-line message,
which the entry point prints before exiting 2.

CURVE keys (runtime/curve.py) are required: there is no setting that switches the
broker's authentication off. A daemon is given its own secret key, as a Z85 value
(`..._CURVE_SECRET_KEY`) or as a file holding it (`..._CURVE_SECRET_KEY_FILE`, e.g. a
docker secret), and the public keys of its peers as Z85 values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from runtime.curve import ClientKeys, public_of
from runtime.settings import (
    ADMIN, BROKER, RELAY, SettingError, client_keys, combined, missing, read, setting,
)

_PUBLISHER_KEYS = ("OUTBOX_RELAY_CURVE_SECRET_KEY", "OUTBOX_RELAY_BROKER_PUBLIC_KEY")


@dataclass(frozen=True)
class RelayConfig:
    COMPONENT: ClassVar[str] = RELAY

    broker_url: str = setting("OUTBOX_RELAY_BROKER_URL")              # the broker's frontend (XSUB)
    poll_interval: float = setting("OUTBOX_RELAY_POLL_INTERVAL")      # seconds between polls without a ring
    batch_size: int = setting("OUTBOX_RELAY_BATCH_SIZE")              # rows per claim (whole transactions)
    heartbeat_interval: float = setting("OUTBOX_RELAY_HEARTBEAT_INTERVAL")
    lock_retry: float = setting("OUTBOX_RELAY_LOCK_RETRY")            # standby: seconds between attempts
    metrics_port: int = setting("OUTBOX_RELAY_METRICS_PORT")          # 0 disables the Prometheus endpoint
    max_event_bytes: int = setting("OUTBOX_RELAY_MAX_EVENT_BYTES")    # larger data makes a poison row
    connect_delay: float = setting("OUTBOX_RELAY_CONNECT_DELAY")      # after connecting (slow joiner)
    claim_interval: float = setting("OUTBOX_RELAY_CLAIM_INTERVAL")    # between claims while busy (relay._drain)
    name: str = setting("OUTBOX_RELAY_NAME", default="")              # "": host:pid
    log_level: str = setting("OUTBOX_RELAY_LOG_LEVEL")
    database_url: str | None = setting("DATABASE_URL")               # None: the embedded server
    # Its key pair and the broker's public key; read() requires them (no unauthenticated mode).
    curve: ClientKeys | None = combined(client_keys(*_PUBLISHER_KEYS), *_PUBLISHER_KEYS, default=None)


@dataclass(frozen=True)
class BrokerConfig:
    COMPONENT: ClassVar[str] = BROKER

    frontend: str = setting("OUTBOX_BROKER_FRONTEND")
    backend: str = setting("OUTBOX_BROKER_BACKEND")
    log_level: str = setting("OUTBOX_BROKER_LOG_LEVEL")
    # The broker's CURVE secret key (Z85) and who may do what; read() requires all three.
    secret_key: str = setting("OUTBOX_BROKER_CURVE_SECRET_KEY", required=True, default="", repr=False)
    # Public keys allowed on the frontend (relays, replay) and on the backend (sync servers, ...).
    publishers: frozenset[str] = setting("OUTBOX_BROKER_PUBLISHER_KEYS", required=True, default=frozenset())
    subscribers: frozenset[str] = setting("OUTBOX_BROKER_SUBSCRIBER_KEYS", required=True, default=frozenset())

    @property
    def public_key(self) -> str:
        return public_of(self.secret_key)

    def check(self) -> None:
        if self.frontend == self.backend:
            raise SettingError("OUTBOX_BROKER_FRONTEND and OUTBOX_BROKER_BACKEND must differ")
        check_broker_keys(self)


@dataclass(frozen=True)
class AdminConfig:
    """outbox-admin (and the portal's replay): where to publish a replay, with which key."""
    COMPONENT: ClassVar[str] = ADMIN

    broker_url: str = setting("OUTBOX_RELAY_BROKER_URL")
    database_url: str | None = setting("DATABASE_URL")
    # Only replay needs them; status and prune run without (publisher_keys() says what is missing).
    curve: ClientKeys | None = combined(client_keys(*_PUBLISHER_KEYS, required=False), *_PUBLISHER_KEYS)


def relay_config(env: Mapping[str, str]) -> RelayConfig:
    return read(RelayConfig, env)


def broker_config(env: Mapping[str, str]) -> BrokerConfig:
    return read(BrokerConfig, env)


def publisher_keys(curve: ClientKeys | None) -> ClientKeys:
    """`curve`, or the SettingError that says which publisher key setting is missing."""
    if curve is None:
        raise missing(_PUBLISHER_KEYS[0])
    return curve


def relay_keys(env: Mapping[str, str]) -> ClientKeys:
    """The publisher's CURVE keys from OUTBOX_RELAY_* (the relay, and replay)."""
    return publisher_keys(read(AdminConfig, env).curve)


def check_broker_keys(cfg: BrokerConfig) -> None:
    """SettingError unless the broker has a key and each side its own, non-empty allow-list."""
    if not cfg.secret_key:
        raise SettingError("the broker has no CURVE secret key (OUTBOX_BROKER_CURVE_SECRET_KEY)")
    if not cfg.publishers or not cfg.subscribers:
        raise SettingError("the broker needs OUTBOX_BROKER_PUBLISHER_KEYS and OUTBOX_BROKER_SUBSCRIBER_KEYS")
    both = cfg.publishers & cfg.subscribers
    if both:
        # One key for both roles would let a subscriber publish (or a relay read): a role per key.
        raise SettingError(f"OUTBOX_BROKER_SUBSCRIBER_KEYS: {sorted(both)[0][:8]}... is also a publisher key;"
                           " give publishers and subscribers keys of their own")
