"""The client address of a request, for rate limits and lockouts.

REMOTE_ADDR, unless it is one of PORTAL_TRUSTED_PROXIES: then the address that proxy
reported in X-Forwarded-For (runtime/peers.py has the rule). DRF's own throttles
would take X-Forwarded-For from anyone (NUM_PROXIES unset), letting a client pick a fresh
address per request; django-axes would see only the proxy. Both use this instead.
"""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from runtime.peers import client_address


def client_ip(request: HttpRequest) -> str:
    meta = request.META
    return client_address(meta.get("REMOTE_ADDR", ""), meta.get("HTTP_X_FORWARDED_FOR"),
                          settings.PORTAL_TRUSTED_PROXIES)
