"""Everything the UI and the API do with tokens: create (plaintext returned once),
revoke, list, and resolve a presented secret to its token."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from .models import ApiToken

# "cl_" marks the string as a Cloud Checklist token (secret scanners, log greps).
KEY_PREFIX = "cl_"
DISPLAY_CHARS = 10
# last_used_at is informative only; writing it on every request would turn each read
# into a write, so it is refreshed at most once per this interval.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(user, name: str) -> tuple[ApiToken, str]:
    """Create a token for user; returns it and its plaintext secret (never stored)."""
    name = (name or "").strip()[:100] or "token"
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, key_hash=hash_key(key), prefix=key[:DISPLAY_CHARS])
    return token, key


def revoke_token(user, token_id: int) -> bool:
    """Revoke one of user's own active tokens. False if there is no such token."""
    return bool(
        ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )


def active_tokens(user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True)


def authenticate_key(key: str) -> ApiToken | None:
    """The active token whose secret is key (with its user loaded), or None."""
    if not key or len(key) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_key(key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
