"""The portal's settings, read by runtime/settings.py from the environment; portal/settings.py
(Django's settings module) turns them into Django's. A bad value is ImproperlyConfigured
there, with the same one line; manage.py and the WSGI entry point print that line and stop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runtime.curve import ClientKeys
from runtime.peers import Network
from runtime.settings import PORTAL, client_keys, combined, setting

_PUBLISHER_KEYS = ("OUTBOX_RELAY_CURVE_SECRET_KEY", "OUTBOX_RELAY_BROKER_PUBLIC_KEY")


@dataclass(frozen=True)
class PortalConfig:
    COMPONENT: ClassVar[str] = PORTAL

    secret_key: str = setting("PORTAL_SECRET_KEY", repr=False)
    debug: bool = setting("PORTAL_DEBUG")
    allowed_hosts: tuple[str, ...] = setting("PORTAL_ALLOWED_HOSTS")
    https: bool | None = setting("PORTAL_HTTPS")                 # None: on when DEBUG is off
    hsts_seconds: int | None = setting("PORTAL_HSTS_SECONDS")    # None: a year with HTTPS, else 0
    trusted_proxies: tuple[Network, ...] = setting("PORTAL_TRUSTED_PROXIES")
    login_failure_limit: int = setting("PORTAL_LOGIN_FAILURE_LIMIT")
    login_cooloff: int = setting("PORTAL_LOGIN_COOLOFF")           # seconds
    rate_sync_token: str = setting("PORTAL_RATE_SYNC_TOKEN")
    rate_token_create: str = setting("PORTAL_RATE_TOKEN_CREATE")
    rate_token_failures: str = setting("PORTAL_RATE_TOKEN_FAILURES")
    ratelimit_dir: str | None = setting("PORTAL_RATELIMIT_DIR")   # None: one per checkout in the temp dir
    log_level: str = setting("PORTAL_LOG_LEVEL")
    database_url: str | None = setting("DATABASE_URL", repr=False)  # None: the embedded server
    sync_token_secret: str = setting("SYNC_TOKEN_SECRET", repr=False)
    sync_token_ttl: int = setting("SYNC_TOKEN_TTL")
    sync_public_url: str = setting("SYNC_PUBLIC_URL")
    # The admin's "Replay" publishes as the relay does. A deployed portal is given no
    # publisher key (docs/security.md): then replay says which setting is missing.
    replay_broker_url: str = setting("OUTBOX_RELAY_BROKER_URL")
    replay_keys: ClientKeys | None = combined(client_keys(*_PUBLISHER_KEYS, required=False), *_PUBLISHER_KEYS)
