"""API tokens: hashed at rest, shown once, accepted as Token or Bearer, revocable."""
from __future__ import annotations

import hashlib

import pytest
from rest_framework.test import APIClient

from portal.apitokens.models import ApiToken
from portal.apitokens.services import active_tokens, create_token, revoke_token

pytestmark = pytest.mark.django_db


def client_with(header: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=header)
    return c


def test_create_stores_only_the_hash(alice):
    token, key = create_token(alice, "laptop")
    stored = ApiToken.objects.values().get(pk=token.pk)
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in [str(v) for v in stored.values()]
    assert key.startswith(token.prefix) and len(token.prefix) < len(key) // 2


@pytest.mark.parametrize("keyword", ["Token", "Bearer", "token"])
def test_token_authenticates(alice, checklist, keyword):
    token, key = create_token(alice, "cli")
    r = client_with(f"{keyword} {key}").get("/api/checklists/")
    assert r.status_code == 200 and r.json()["count"] == 1
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_revoked_token_is_401(alice, checklist):
    token, key = create_token(alice, "cli")
    assert revoke_token(alice, token.pk) is True
    r = client_with(f"Token {key}").get("/api/checklists/")
    assert r.status_code == 401
    assert revoke_token(alice, token.pk) is False  # already revoked


def test_cannot_revoke_someone_elses_token(alice, bob):
    token, key = create_token(alice, "cli")
    assert revoke_token(bob, token.pk) is False
    assert client_with(f"Token {key}").get("/api/checklists/").status_code == 200


def test_active_tokens_lists_only_active_own_tokens(alice, bob):
    t1, _ = create_token(alice, "one")
    t2, _ = create_token(alice, "two")
    create_token(bob, "bobs")
    revoke_token(alice, t1.pk)
    assert [t.pk for t in active_tokens(alice)] == [t2.pk]


@pytest.mark.parametrize("header", ["Token", "Token a b", "Token cl_wrong", "Bearer " + "x" * 300, "Token \u00e9t\u00e9"])
def test_bad_token_headers_are_401(alice, header):
    r = client_with(header).get("/api/checklists/")
    assert r.status_code == 401


def test_token_of_inactive_user_is_401(alice):
    _, key = create_token(alice, "cli")
    alice.is_active = False
    alice.save()
    assert client_with(f"Token {key}").get("/api/checklists/").status_code == 401
