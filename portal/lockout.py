"""What a locked-out login gets (django-axes calls this: settings.AXES_LOCKOUT_CALLABLE).

429 with Retry-After (the cool-off, in seconds) and a page that says so, for the web
login and the admin login alike; JSON for a script that asked for it.
"""
from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from portal.throttling import retry_after

# django-axes records the attempted username in a varchar(255); a longer one made the
# failed login answer 500. No username is longer than the user model allows.
USERNAME_MAX = 150


def attempted_username(request: HttpRequest, credentials: dict | None = None) -> str:
    """The username a login attempt names, as django-axes records and counts it."""
    name = (credentials or {}).get("username") or request.POST.get("username", "")
    return str(name)[:USERNAME_MAX]


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    seconds = retry_after(settings.AXES_COOLOFF_TIME.total_seconds())
    message = (f"Too many failed login attempts. Logging in is blocked for {seconds} seconds "
               "after the last failed attempt.")
    if "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "too_many.html", {"message": message, "login": True}, status=429)
    response["Retry-After"] = seconds
    return response


class LockoutBackend(AxesStandaloneBackend):
    """django-axes' backend, for authentications that come with a request (every login
    over HTTP: the web and admin login views pass it). A call without one (the test
    client's login(), a management command) is not a remote guess: axes would raise,
    this lets the next backend decide."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
