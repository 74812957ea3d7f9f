"""Request-rate limits on the credentials endpoints (documented in docs/security.md).

| limit | what counts | key | setting |
|---|---|---|---|
| sync tokens | POST /api/sync/token/ | user | PORTAL_RATE_SYNC_TOKEN |
| API token creation | POST /tokens/ (the web page that mints a token) | user | PORTAL_RATE_TOKEN_CREATE |
| API token failures | requests with an unknown or revoked token | client address | PORTAL_RATE_TOKEN_FAILURES |

DRF's throttle machinery (a sliding window of request times in a cache), with three
changes: rates read from settings at each request (tests and deployments change them),
rates with a multiplier ("20/10m": 20 per 10 minutes), and the client address from
portal.clientip (DRF would trust any X-Forwarded-For). Over the limit: 429 with
Retry-After in seconds.

The failure limit is not a DRF throttle: throttles run after authentication, and a wrong
token fails authentication. ApiTokenAuthentication asks `token_failures` before looking
a token up and tells it about every failure.

The counters live in the "ratelimit" cache: files on the host (settings.CACHES), shared
by every worker process of the portal, and never inside a database transaction (the
API rolls back every 4xx, which would erase a counted failure). Their keys name the
database: user ids are only unique within one, and two portals on a host with different
databases (staging beside production, parallel test runs) must not count each other's
users as one.
"""
from __future__ import annotations

from django.core.cache import caches
from django.db import connection
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from portal.clientip import client_ip
from runtime.values import rate as parse_rate


class PortalRateThrottle(SimpleRateThrottle):
    """A SimpleRateThrottle keyed by user (or client address when anonymous)."""

    cache_name = "ratelimit"
    cache_format = "throttle_%(database)s_%(scope)s_%(ident)s"

    def __init__(self):
        self.cache = caches[self.cache_name]
        super().__init__()

    def get_rate(self) -> str:
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def parse_rate(self, rate):
        return parse_rate(rate)

    def get_ident(self, request) -> str:
        return client_ip(request)

    def get_cache_key(self, request, view) -> str:
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{self.get_ident(request)}"
        return self.cache_key_for(ident)

    def cache_key_for(self, ident: str) -> str:
        return self.cache_format % {"database": connection.settings_dict["NAME"], "scope": self.scope, "ident": ident}


class SyncTokenThrottle(PortalRateThrottle):
    scope = "sync_token"


class TokenCreationThrottle(PortalRateThrottle):
    scope = "api_token_create"


class TokenFailureLimiter(PortalRateThrottle):
    """Counts failed API-token authentications per client address; refuses that address
    while it is over the limit, whatever token it presents."""

    scope = "api_token_failure"

    def get_cache_key(self, request, view) -> str:
        return self.cache_key_for(self.get_ident(request))

    def refused(self, request) -> float | None:
        """Seconds until this client may try again, or None if it may try now."""
        self.key = self.get_cache_key(request, None)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.wait()
        return None

    def record_failure(self, request) -> None:
        self.refused(request)  # loads and trims the window
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


def retry_after(seconds: float | None) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, int(-(-(seconds or 1) // 1))))
