"""Refuse, at the door, request values that PostgreSQL would refuse later.

PostgreSQL text cannot hold a NUL character: a NUL in any value that reaches a query
(a path segment such as a member's username, an admin filter, a search term, a form
field, a header that django-axes records) made psycopg raise DataError and the page
answer 500, under DEBUG with the whole environment. No legitimate value of this
application contains NUL, so a request that carries one anywhere Django decodes for
views (the path, query parameter names and values, form field names and values,
header values) is answered 400 with a one-line reason before any view runs.

Integers outside bigint need no guard here: Django's integer lookups treat them as
matching nothing, and the URL converters only hand digits to views. JSON bodies are
checked by portal.checklists.api.parsers (they are parsed by the view, not here).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

NUL = "\x00"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def nul_location(request: HttpRequest) -> str | None:
    """Where the request carries a NUL (e.g. 'the path', 'query parameter "topic"'), or None."""
    if NUL in request.path_info or NUL in request.path:
        return "the path"
    for name, values in request.GET.lists():
        if _has_nul([name, *values]):
            return f"query parameter {_printable(name)}"
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and NUL in value:
            return f"header {key[5:].replace('_', '-').title()}"
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        for name, values in request.POST.lists():
            if _has_nul([name, *values]):
                return f"form field {_printable(name)}"
    return None


def _has_nul(values: Iterable[str]) -> bool:
    return any(NUL in v for v in values)


def _printable(name: str) -> str:
    return repr(name[:40])


class RefuseUnstorableInput:
    """400 for a request with a NUL character anywhere a view could pass it to a query."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = nul_location(request)
        if where is None:
            return self.get_response(request)
        message = f"Invalid request: {where} contains a NUL character."
        log.info("refused %s %r: %s", request.method, request.path[:200], message)
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=400)
        return HttpResponse(message + "\n", status=400, content_type="text/plain; charset=utf-8")
