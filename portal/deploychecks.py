"""System checks that refuse development secrets outside development.

With DEBUG off, the portal must not run with PORTAL_SECRET_KEY's development default
(anyone could forge sessions, password-reset links and signed cookies) nor with
SYNC_TOKEN_SECRET's (anyone could mint sync tokens for any topic), nor with secrets too
short to resist guessing. Registered as ordinary checks (not deploy-only), so
`manage.py check`, `check --deploy`, `migrate` (compose's first step) and runserver all
stop with the error, and portal/wsgi.py refuses to serve.
"""
from __future__ import annotations

from django.conf import settings
from django.core import checks

from runtime.settings import DEV_PORTAL_SECRET_KEY, DEV_SYNC_TOKEN_SECRET
MIN_SECRET_LENGTH = 32


def _secret_problem(name: str, value: str, dev_value: str) -> str | None:
    if value == dev_value:
        return f"{name} is the development default"
    if len(value) < MIN_SECRET_LENGTH:
        return f"{name} is shorter than {MIN_SECRET_LENGTH} characters"
    return None


@checks.register(checks.Tags.security)
def development_secrets(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    errors = []
    for ident, name, value, dev in (("portal.E001", "PORTAL_SECRET_KEY", settings.SECRET_KEY, DEV_PORTAL_SECRET_KEY),
                                    ("portal.E002", "SYNC_TOKEN_SECRET", settings.SYNC_TOKEN_SECRET,
                                     DEV_SYNC_TOKEN_SECRET)):
        problem = _secret_problem(name, value, dev)
        if problem:
            errors.append(checks.Error(
                f"{problem} while DEBUG is off.",
                hint=f"Set {name} to a random value of at least {MIN_SECRET_LENGTH} characters "
                     "(python -c 'import secrets; print(secrets.token_urlsafe(48))').",
                id=ident))
    return errors


def refuse_to_serve() -> None:
    """For the WSGI entry point: exit with one line if a check above fails."""
    problems = development_secrets()
    if problems:
        raise SystemExit("portal: refusing to start: " + "; ".join(p.msg for p in problems))
