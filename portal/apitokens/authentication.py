"""DRF authentication by API token: `Authorization: Token <key>` or `Bearer <key>`.

Guessing is rate-limited per client address (portal.throttling.TokenFailureLimiter):
every failed attempt counts, and a client over the limit gets 429 with Retry-After for
any token, before its token is even looked up.
"""
from __future__ import annotations

from rest_framework import authentication, exceptions

from portal.provenance import source_for_path
from portal.throttling import TokenFailureLimiter

from .services import authenticate_key

KEYWORDS = ("token", "bearer")


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower().decode("latin-1") not in KEYWORDS:
            return None  # not ours: let the next class (session) try
        limiter = TokenFailureLimiter()
        wait = limiter.refused(request)
        if wait is not None:
            raise exceptions.Throttled(wait, detail="Too many failed token attempts from your address.")
        if len(header) != 2:
            limiter.record_failure(request)
            raise exceptions.AuthenticationFailed("Invalid token header: expected 'Token <key>'.")
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            limiter.record_failure(request)
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        # Within the API's request transaction (portal/checklists/api/views.py, AtomicView),
        # the lookup names the writer for the capture triggers in the same statement.
        django_request = request._request
        token = authenticate_key(key, provenance=(source_for_path(django_request.path),
                                                  getattr(django_request, "request_id", None)))
        if token is None:
            limiter.record_failure(request)
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Token"
