"""Drop a session cookie that cannot be a session key before Django looks it up.

Django's database session backend passes the cookie straight into a query; a value
with a NUL byte makes PostgreSQL refuse the query and the page answers 500. Session
keys are 32 lowercase letters and digits (django.contrib.sessions), so anything else
is treated as no session at all: the request is anonymous, as for an expired cookie.
"""
from __future__ import annotations

import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_SESSION_KEY = re.compile(r"[a-z0-9]{8,64}")


class SessionCookieSanitizer:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        value = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if value is not None and not _SESSION_KEY.fullmatch(value):
            del request.COOKIES[settings.SESSION_COOKIE_NAME]
        return self.get_response(request)
