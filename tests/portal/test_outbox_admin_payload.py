"""Outbox admin: payloads (data, changed, actor, request id) only with
outbox.view_outbox_payload; view_outboxevent alone shows positions, topics and status."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from portal.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db

SECRET_TEXT = "Ring for the vault: 4471"


@pytest.fixture
def event(checklist, alice):
    from portal.checklists.models import Item

    Item.objects.create(checklist=checklist, text=SECRET_TEXT, position=5)
    return OutboxEvent.objects.filter(data__text=SECRET_TEXT).get()


def staff(make_user, *perms: str) -> Client:
    user = make_user("staffer", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="outbox", codename__in=perms))
    c = Client()
    c.force_login(user)
    return c


def pages(client: Client, event) -> list[bytes]:
    base = "/admin/outbox/outboxevent/"
    return [client.get(url).content for url in (base, f"{base}{event.pk}/change/", f"{base}?q=vault")]


def test_view_permission_alone_shows_no_payload(make_user, event):
    client = staff(make_user, "view_outboxevent")
    listing, detail, search = pages(client, event)
    assert client.get("/admin/outbox/outboxevent/").status_code == 200
    assert event.topic.encode() in listing  # positions, topics and status stay visible
    for body in (listing, detail, search):
        assert SECRET_TEXT.encode() not in body
        assert b"4471" not in body
    assert b'name="data"' not in detail and b"field-data" not in detail and b"field-actor" not in detail
    assert b"column-actor" not in listing
    # Searching by a payload value finds nothing to disclose it: the fields are not searched.
    assert client.get("/admin/outbox/outboxevent/", {"q": "vault"}).context["cl"].result_count == 0
    # Filtering by actor is not offered either (a filter on a value discloses it).
    assert b"By actor" not in listing and b"by actor" not in listing


@pytest.mark.parametrize("who", ["permission", "superuser"])
def test_payload_permission_or_superuser_shows_payloads(make_user, event, who):
    if who == "superuser":
        user = make_user("root", is_staff=True, is_superuser=True)
        client = Client()
        client.force_login(user)
    else:
        client = staff(make_user, "view_outboxevent", "view_outbox_payload")
    listing, detail, search = pages(client, event)
    assert SECRET_TEXT.encode() in detail
    assert b"column-actor" in listing and b"by actor" in listing.lower()
