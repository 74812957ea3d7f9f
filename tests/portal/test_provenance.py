"""Provenance: who wrote each outbox row (actor, source, request id)."""
from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from portal import provenance
from portal.apitokens.services import create_token
from portal.checklists.models import Item
from portal.outbox.models import OutboxEvent


def test_request_id_sanity():
    assert provenance.request_id_from("abc-123_X.y") == "abc-123_X.y"
    for bad in [None, "", "x" * 65, "has space", "semi;colon", "ünï"]:
        rid = provenance.request_id_from(bad)
        assert re.fullmatch(r"[0-9a-f]{32}", rid), bad
    assert provenance.request_id_from("x" * 64) == "x" * 64


def test_source_for_path():
    assert provenance.source_for_path("/admin/checklists/") == "admin"
    assert provenance.source_for_path("/api/items/1/") == "api"
    assert provenance.source_for_path("/") == "ui"
    assert provenance.source_for_path("/apiary/") == "ui"


def test_configure_for_command_skips_servers():
    try:
        provenance.configure_for_command(["manage.py", "runserver"])
        assert provenance._process_default is None
        provenance.configure_for_command(["manage.py", "migrate"])
        assert provenance._process_default.source == "shell"
        assert provenance._process_default.actor.endswith(":migrate")
    finally:
        provenance.set_process_default(None)


def last_row() -> OutboxEvent:
    return OutboxEvent.objects.order_by("-id").first()


@pytest.mark.django_db
def test_api_token_provenance(bob, checklist):
    token, key = create_token(bob, "script")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    r = client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Tea"}, format="json", HTTP_X_REQUEST_ID="req-42")
    assert r.status_code == 201 and r["X-Request-ID"] == "req-42"
    row = last_row()
    assert (row.source, row.actor, row.request_id) == ("api", f"user:{bob.pk}:token:{token.pk}", "req-42")


@pytest.mark.django_db
def test_api_session_provenance_and_generated_request_id(bob, checklist):
    client = APIClient()
    client.force_login(bob)
    r = client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Tea"}, format="json",
                    HTTP_X_REQUEST_ID="bad id!")
    assert r.status_code == 201
    row = last_row()
    assert (row.source, row.actor) == ("api", f"user:{bob.pk}")
    assert row.request_id == r["X-Request-ID"] and uuid.UUID(hex=row.request_id)


@pytest.mark.django_db
@pytest.mark.urls("tests.portal.provenance_urls")
def test_ui_path_provenance_and_reset_after_request(alice, checklist, client):
    client.force_login(alice)
    r = client.post(f"/ui-write/{checklist.items.first().pk}/", HTTP_X_REQUEST_ID="ui-1")
    assert r.status_code == 200 and r["X-Request-ID"] == "ui-1"
    row = last_row()
    assert (row.source, row.actor, row.request_id) == ("ui", f"user:{alice.pk}", "ui-1")
    # The same connection, after the request: provenance was cleared, so "sql".
    Item.objects.filter(checklist=checklist).update(done=False)
    row = last_row()
    assert (row.source, row.actor, row.request_id) == ("sql", None, None)


@pytest.mark.django_db
@pytest.mark.urls("tests.portal.provenance_urls")
def test_anonymous_ui_write_has_no_actor(checklist, client):
    client.post(f"/ui-write/{checklist.items.first().pk}/")
    row = last_row()
    assert (row.source, row.actor) == ("ui", None)


@pytest.mark.django_db
def test_settings_are_cleared_even_when_the_view_fails(bob, checklist):
    client = APIClient()
    client.force_login(bob)
    client.post(f"/api/checklists/{checklist.pk}/items/", {"text": 1}, format="json")  # 400
    with connection.cursor() as cur:
        cur.execute("SELECT current_setting('outbox.actor', true), current_setting('outbox.source', true)")
        assert cur.fetchone() in [("", ""), (None, None)]
