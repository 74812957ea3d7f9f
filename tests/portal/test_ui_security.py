"""The web UI's guards: permissions (non-member 404, too low a role 403), CSRF, bad
input (a message, nothing written), and the provenance every UI write records."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from portal.checklists.models import TEXT_MAX, Checklist, Item, Membership
from portal.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def as_user(user, **kwargs) -> Client:
    c = Client(**kwargs)
    c.force_login(user)
    return c


def write_forms(checklist) -> list[tuple[str, str, dict]]:
    """(kind, url, data) of every write form of a checklist page; kind = edit|manage."""
    milk = Item.objects.get(checklist=checklist, text="Milk")
    bob_m = Membership.objects.get(checklist=checklist, user__username="bob")
    pk = checklist.pk
    return [
        ("edit", reverse("web:item-add", args=[pk]), {"text": "New"}),
        ("edit", reverse("web:item-edit", args=[pk, milk.pk]), {"text": "Changed"}),
        ("edit", reverse("web:item-toggle", args=[pk, milk.pk]), {"done": "1"}),
        ("edit", reverse("web:item-move", args=[pk, milk.pk]), {"direction": "down"}),
        ("edit", reverse("web:item-delete", args=[pk, milk.pk]), {}),
        ("manage", reverse("web:checklist-rename", args=[pk]), {"title": "Renamed"}),
        ("manage", reverse("web:member-add", args=[pk]), {"username": "dave", "role": "editor"}),
        ("manage", reverse("web:member-role", args=[pk, bob_m.pk]), {"role": "viewer"}),
        ("manage", reverse("web:member-remove", args=[pk, bob_m.pk]), {}),
        ("manage", reverse("web:checklist-delete", args=[pk]), {}),
    ]


def snapshot(checklist) -> tuple:
    """Everything a write could change, plus the outbox size: equal snapshots = nothing written."""
    return (
        list(Checklist.objects.values_list("id", "title", "version")),
        list(Item.objects.order_by("id").values_list("id", "text", "done", "position", "version")),
        list(Membership.objects.order_by("id").values_list("id", "user_id", "role", "version")),
        OutboxEvent.objects.count(),
    )


# --- permissions -----------------------------------------------------------------------


def test_non_member_gets_404_everywhere(checklist, make_user):
    make_user("dave")
    mallory = as_user(make_user("mallory"))
    before = snapshot(checklist)
    assert mallory.get(reverse("web:checklist", args=[checklist.pk])).status_code == 404
    assert mallory.get(reverse("web:members", args=[checklist.pk])).status_code == 404
    for _, url, data in write_forms(checklist):
        assert mallory.post(url, data).status_code == 404, url
    assert snapshot(checklist) == before
    # Same answer as for a checklist that does not exist: its existence is not revealed.
    assert mallory.get(reverse("web:checklist", args=[999999])).status_code == 404


def test_viewer_writes_are_forbidden(checklist, carol, make_user):
    make_user("dave")
    c = as_user(carol)
    before = snapshot(checklist)
    for _, url, data in write_forms(checklist):
        assert c.post(url, data).status_code == 403, url
        assert c.post(url, data, **JSON).status_code == 403, url
    assert snapshot(checklist) == before


def test_editor_cannot_manage(checklist, bob, make_user):
    make_user("dave")
    c = as_user(bob)
    before = snapshot(checklist)
    for kind, url, data in write_forms(checklist):
        if kind == "manage":
            assert c.post(url, data).status_code == 403, url
    assert snapshot(checklist) == before


def test_anonymous_is_sent_to_login_and_writes_nothing(checklist):
    before = snapshot(checklist)
    for _, url, data in write_forms(checklist):
        r = Client().post(url, data)
        assert r.status_code == 302 and r.url.startswith("/login/"), url
    assert snapshot(checklist) == before


def test_pages_refuse_other_methods(checklist, alice):
    c = as_user(alice)
    assert c.get(reverse("web:item-add", args=[checklist.pk])).status_code == 405
    assert c.post(reverse("web:checklist", args=[checklist.pk])).status_code == 405


# --- CSRF ------------------------------------------------------------------------------


def test_post_without_csrf_token_is_rejected_and_writes_nothing(checklist, alice, make_user):
    make_user("dave")
    c = as_user(alice, enforce_csrf_checks=True)
    before = snapshot(checklist)
    for _, url, data in write_forms(checklist):
        assert c.post(url, data).status_code == 403, url
    assert c.post("/", {"title": "Sneaky"}).status_code == 403
    assert c.post("/tokens/", {"name": "sneaky"}).status_code == 403
    assert snapshot(checklist) == before


def test_post_with_csrf_token_passes(checklist, alice):
    c = as_user(alice, enforce_csrf_checks=True)
    page = c.get(reverse("web:checklist", args=[checklist.pk]))
    token = page.context["csrf_token"]
    # The form field, as a plain form sends it...
    r = c.post(reverse("web:item-add", args=[checklist.pk]), {"text": "Form", "csrfmiddlewaretoken": str(token)})
    assert r.status_code == 302
    # ...and the header, as the page's script sends it.
    r = c.post(reverse("web:item-add", args=[checklist.pk]), {"text": "Script"}, HTTP_X_CSRFTOKEN=str(token), **JSON)
    assert r.status_code == 200 and r.json()["ok"]
    assert Item.objects.filter(checklist=checklist, text__in=["Form", "Script"]).count() == 2


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "x" * (TEXT_MAX + 1)])
def test_bad_item_text_gives_a_message_and_writes_nothing(checklist, bob, text):
    milk = Item.objects.get(checklist=checklist, text="Milk")
    c = as_user(bob)
    before = snapshot(checklist)
    for url in (reverse("web:item-add", args=[checklist.pk]), reverse("web:item-edit", args=[checklist.pk, milk.pk])):
        r = c.post(url, {"text": text}, follow=True)
        msgs = [str(m) for m in r.context["messages"]]
        assert len(msgs) == 1 and msgs[0].startswith("Text:"), msgs
        r = c.post(url, {"text": text}, **JSON)
        assert r.status_code == 400 and r.json()["ok"] is False and r.json()["error"].startswith("Text:")
    assert snapshot(checklist) == before


def test_too_long_text_message_names_the_limit(checklist, bob):
    r = as_user(bob).post(reverse("web:item-add", args=[checklist.pk]), {"text": "x" * (TEXT_MAX + 1)}, **JSON)
    assert str(TEXT_MAX) in r.json()["error"]


def test_exactly_max_length_text_is_accepted(checklist, bob):
    as_user(bob).post(reverse("web:item-add", args=[checklist.pk]), {"text": "x" * TEXT_MAX})
    assert Item.objects.filter(checklist=checklist, text="x" * TEXT_MAX).exists()


def test_unknown_username_gives_a_message_and_writes_nothing(checklist, alice):
    c = as_user(alice)
    before = snapshot(checklist)
    r = c.post(reverse("web:member-add", args=[checklist.pk]), {"username": "nobody", "role": "editor"}, follow=True)
    assert [str(m) for m in r.context["messages"]] == ["There is no user named “nobody”."]
    assert snapshot(checklist) == before


def test_sharing_twice_or_with_a_bad_role_writes_nothing(checklist, alice):
    c = as_user(alice)
    before = snapshot(checklist)
    r = c.post(reverse("web:member-add", args=[checklist.pk]), {"username": "bob", "role": "viewer"}, follow=True)
    assert "already a member" in str(list(r.context["messages"])[0])
    r = c.post(reverse("web:member-add", args=[checklist.pk]), {"username": "bob", "role": "owner"}, **JSON)
    assert r.status_code == 400
    bob_m = Membership.objects.get(checklist=checklist, user__username="bob")
    r = c.post(reverse("web:member-role", args=[checklist.pk, bob_m.pk]), {"role": "admin"}, **JSON)
    assert r.status_code == 400
    assert snapshot(checklist) == before


def test_bad_rename_writes_nothing(checklist, alice):
    c = as_user(alice)
    before = snapshot(checklist)
    for title in ["", "t" * 201]:
        r = c.post(reverse("web:checklist-rename", args=[checklist.pk]), {"title": title}, **JSON)
        assert r.status_code == 400 and r.json()["error"].startswith("Title:")
    assert snapshot(checklist) == before


# --- provenance ------------------------------------------------------------------------


def test_every_ui_write_is_recorded_as_ui_by_its_user(checklist, alice, bob, make_user, outbox):
    dave = make_user("dave")
    b, a = as_user(bob), as_user(alice)
    milk = Item.objects.get(checklist=checklist, text="Milk")
    steps = [
        (bob, b, reverse("web:item-add", args=[checklist.pk]), {"text": "Eggs"}, ("item", "insert")),
        (bob, b, reverse("web:item-edit", args=[checklist.pk, milk.pk]), {"text": "Oat milk"}, ("item", "update")),
        (bob, b, reverse("web:item-toggle", args=[checklist.pk, milk.pk]), {"done": "1"}, ("item", "update")),
        (bob, b, reverse("web:item-move", args=[checklist.pk, milk.pk]), {"direction": "down"}, ("item", "update")),
        (bob, b, reverse("web:item-delete", args=[checklist.pk, milk.pk]), {}, ("item", "delete")),
        (alice, a, reverse("web:checklist-rename", args=[checklist.pk]), {"title": "Shop"}, ("checklist", "update")),
        (alice, a, reverse("web:member-add", args=[checklist.pk]), {"username": "dave", "role": "viewer"},
         ("membership", "insert")),
    ]
    for user, client, url, data, expected in steps:
        outbox.mark()
        assert client.post(url, data).status_code == 302, url
        rows = outbox.rows_since()
        assert rows, url
        assert expected in [(r.entity, r.op) for r in rows], url
        for r in rows:
            assert r.topic == checklist.topic
            assert r.source == "ui", (url, r.source)
            assert r.actor == f"user:{user.pk}", (url, r.actor)
            assert r.request_id, url

    dave_m = Membership.objects.get(checklist=checklist, user=dave)
    for url, data in [
        (reverse("web:member-role", args=[checklist.pk, dave_m.pk]), {"role": "editor"}),
        (reverse("web:member-remove", args=[checklist.pk, dave_m.pk]), {}),
        (reverse("web:checklist-delete", args=[checklist.pk]), {}),
    ]:
        outbox.mark()
        a.post(url, data)
        rows = outbox.rows_since()
        assert rows and all(r.source == "ui" and r.actor == f"user:{alice.pk}" for r in rows), url
    # Deleting the checklist emitted deletes for its items, memberships and itself.
    assert {(r.entity, r.op) for r in rows} >= {("item", "delete"), ("membership", "delete"), ("checklist", "delete")}


def test_create_checklist_is_recorded_on_its_topic(alice, outbox):
    as_user(alice).post("/", {"title": "New"})
    new = Checklist.objects.get(title="New")
    assert [(r.topic, r.entity, r.op, r.source, r.actor) for r in outbox.rows_since()] == [
        (new.topic, "checklist", "insert", "ui", f"user:{alice.pk}"),
        (new.topic, "membership", "insert", "ui", f"user:{alice.pk}"),
    ]
