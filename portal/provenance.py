"""Who is writing: tells the capture triggers the actor, source and request id of every
write the portal makes.

Web UI and admin requests: connection-level settings (set_config(..., false)) reset in a
`finally`, and not transaction-local ones: this middleware runs outside the view's
transaction (the admin opens several), and a transaction-local setting made here would
vanish at the end of this statement's implicit transaction. Connection-level settings last
until cleared; the `finally` clears them before the connection (kept open by CONN_MAX_AGE)
serves another request. If clearing fails the connection is closed instead, which discards
its settings too.

API requests (/api/): every API view that writes runs in one transaction of its own
(portal/checklists/api/views.py, AtomicView) and states the provenance there, once DRF has
authenticated the user, transaction-locally: the commit or rollback forgets it, so the
middleware has nothing to set or clear and a token request costs no extra statement.

Management commands: `manage.py` calls `configure_for_command(argv)` before Django
starts. For any command but the servers it sets a process-wide default ("shell",
actor os:<login>), which a `connection_created` receiver applies to every connection
the process opens. Server commands are left alone: their requests get request-scoped
provenance from the middleware. Anything that sets nothing (psql, scripts) is
recorded as "sql", the trigger's default.
"""
from __future__ import annotations

import getpass
import logging
import re
import uuid
from dataclasses import dataclass

from django.db import DatabaseError, connection
from django.db.backends.signals import connection_created
from django.http import HttpRequest, HttpResponse

from portal.outbox.capture import clear_provenance, set_provenance

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Commands that serve requests: each request sets its own provenance.
SERVER_COMMANDS = frozenset({"runserver", "testserver", "runserver_plus"})


@dataclass(frozen=True)
class Provenance:
    actor: str | None
    source: str
    request_id: str | None


_process_default: Provenance | None = None


def request_id_from(header: str | None) -> str:
    """The client's request id if it is short and plain, else a fresh one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def source_for_path(path: str) -> str:
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/api/"):
        return "api"
    return "ui"


def actor_for(user, token_id: int | None = None) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    actor = f"user:{user.pk}"
    if token_id is not None:
        actor += f":token:{token_id}"
    return actor


def set_request_provenance(request: HttpRequest, user, *, token_id: int | None = None, local: bool = False) -> None:
    """State the provenance of this request (local=True: for the current transaction only)."""
    set_provenance(
        actor=actor_for(user, token_id),
        source=source_for_path(request.path),
        request_id=getattr(request, "request_id", None),
        local=local,
    )


class ProvenanceMiddleware:
    """Place after AuthenticationMiddleware, so session users are known.

    API requests are authenticated by DRF, inside the view: the middleware only names
    their request id, and the API view states the provenance in its transaction once DRF
    knows the user (and token). Not touching request.user here also keeps a token request
    from loading a session.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        if source_for_path(request.path) == "api":
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request.request_id
            return response
        set_request_provenance(request, getattr(request, "user", None))
        try:
            response = self.get_response(request)
        finally:
            _reset_connection()
        response[REQUEST_ID_HEADER] = request.request_id
        return response


def _reset_connection() -> None:
    try:
        if _process_default is not None:
            _apply(connection, _process_default)
        else:
            clear_provenance()
    except DatabaseError:
        # A connection we cannot reset must not carry this request's identity into the
        # next one: closing it discards its settings.
        log.warning("could not reset provenance; closing the connection", exc_info=True)
        connection.close()


def _apply(conn, prov: Provenance) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT set_config('outbox.actor', %s, false), set_config('outbox.source', %s, false),"
            " set_config('outbox.request_id', %s, false)",
            [prov.actor or "", prov.source, prov.request_id or ""],
        )


def _on_connection_created(sender, connection, **kwargs) -> None:
    if _process_default is not None and connection.vendor == "postgresql":
        _apply(connection, _process_default)


def set_process_default(prov: Provenance | None) -> None:
    """Provenance for every connection this process opens (None: none)."""
    global _process_default
    _process_default = prov
    if prov is not None:
        connection_created.connect(_on_connection_created, dispatch_uid="portal.provenance")
    else:
        connection_created.disconnect(dispatch_uid="portal.provenance")


def configure_for_command(argv: list[str]) -> None:
    """Called by manage.py: a command other than a server writes as "shell"."""
    command = argv[1] if len(argv) > 1 else "help"
    if command in SERVER_COMMANDS:
        return
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        login = "unknown"
    set_process_default(Provenance(actor=f"os:{login}:{command}", source="shell", request_id=uuid.uuid4().hex))
