"""Sync server settings: one frozen dataclass, read from SYNC_* variables by
runtime/settings.py (pure: tests pass a dict). The entry point prints a SettingError as one
line on stderr and exits 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from runtime.curve import ClientKeys
from runtime.peers import Network
from runtime.settings import (
    DEV_SYNC_TOKEN_SECRET, SOCKJS_TRANSPORTS, SYNC, SettingError, client_keys, combined, default_of, read, setting,
)

_SUBSCRIBER_KEYS = ("SYNC_CURVE_SECRET_KEY", "SYNC_BROKER_PUBLIC_KEY")


def disabled_transports(enabled: tuple[str, ...] | None, disabled: tuple[str, ...] | None) -> tuple[str, ...]:
    """The transports to switch off, from SYNC_TRANSPORTS or SYNC_DISABLED_TRANSPORTS (one of
    them; neither: the default, htmlfile and jsonp, which execute server text as script in
    the page's origin). Always leaves at least one transport on."""
    if enabled is not None and disabled is not None:
        raise SettingError("set SYNC_TRANSPORTS or SYNC_DISABLED_TRANSPORTS, not both")
    if enabled is not None:
        if not enabled:
            raise SettingError("SYNC_TRANSPORTS must enable at least one transport")
        return tuple(t for t in SOCKJS_TRANSPORTS if t not in enabled)
    if disabled is None:
        disabled = default_of("SYNC_DISABLED_TRANSPORTS")
    off = tuple(t for t in SOCKJS_TRANSPORTS if t in disabled)
    if len(off) == len(SOCKJS_TRANSPORTS):
        raise SettingError("SYNC_DISABLED_TRANSPORTS disables every transport")
    return off


DEFAULT_DISABLED = disabled_transports(None, None)


@dataclass(frozen=True)
class Config:
    COMPONENT: ClassVar[str] = SYNC

    host: str = setting("SYNC_HOST")
    port: int = setting("SYNC_PORT")                          # 0: the OS picks one
    broker_url: str = setting("SYNC_BROKER_URL")
    token_secret: str = setting("SYNC_TOKEN_SECRET", repr=False)
    allowed_origins: frozenset[str] = setting("SYNC_ALLOWED_ORIGINS")
    disabled_transports: tuple[str, ...] = combined(
        disabled_transports, "SYNC_TRANSPORTS", "SYNC_DISABLED_TRANSPORTS")
    max_message_bytes: int = setting("SYNC_MAX_MESSAGE_BYTES")
    max_subscriptions: int = setting("SYNC_MAX_SUBSCRIPTIONS")
    max_pending_bytes: int = setting("SYNC_MAX_PENDING_BYTES")  # unread output before a slow client is dropped
    recent_events: int = setting("SYNC_RECENT_EVENTS")
    max_recover_events: int = setting("SYNC_MAX_RECOVER_EVENTS")
    coalesce_ms: int = setting("SYNC_COALESCE_MS")             # min. window whole transactions share (0: a loop turn)
    heartbeat_interval: float = 1.0
    drain_seconds: float = setting("SYNC_DRAIN_SECONDS")       # SIGTERM: fail /healthz this long, then close
    log_level: str = setting("SYNC_LOG_LEVEL")
    database_url: str | None = setting("DATABASE_URL")      # None: the embedded server (the entry point asks)
    # Its CURVE key pair and the broker's public key: the broker admits only subscriber
    # keys on its backend. Required by read(); there is no unauthenticated mode.
    curve: ClientKeys | None = combined(client_keys(*_SUBSCRIBER_KEYS), *_SUBSCRIBER_KEYS, default=None)
    # Reverse proxies whose X-Forwarded-For names the peer (runtime/peers.py); the
    # session-to-peer binding of the polling transports uses that peer.
    trusted_proxies: tuple[Network, ...] = setting("SYNC_TRUSTED_PROXIES")
    development: bool = setting("SYNC_DEVELOPMENT")           # 1: the development token secret is accepted

    def check(self) -> None:
        # After every value is parsed, so a malformed setting is reported as itself first.
        if self.token_secret == DEV_SYNC_TOKEN_SECRET and not self.development:
            raise SettingError("SYNC_TOKEN_SECRET is the development default, with which anyone can mint tokens: "
                               "set the secret the portal signs with, or SYNC_DEVELOPMENT=1 on a development"
                               " machine")


def from_env(env: Mapping[str, str]) -> Config:
    """Build and validate the configuration; raises SettingError naming the bad variable."""
    return read(Config, env)
