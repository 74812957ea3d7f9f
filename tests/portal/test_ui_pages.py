"""Walk through every page and form of the web UI with Django's test client, against
real PostgreSQL: each form works without JavaScript (POST, redirect, message), and the
JSON answers the page's script relies on carry the changed rows with their versions.

Fixtures (tests/portal/conftest.py): alice owns `checklist` ("Groceries": Milk, Bread),
bob is an editor, carol a viewer; passwords are "pw-<name>".
"""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from portal.checklists.models import Checklist, Item, Membership
from portal.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Runs before the user fixtures: the default hasher costs ~0.3 s per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def as_user(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def page_url(checklist) -> str:
    return reverse("web:checklist", args=[checklist.pk])


def item(checklist, text: str) -> Item:
    return Item.objects.get(checklist=checklist, text=text)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def item_texts(checklist) -> list[str]:
    return list(Item.objects.filter(checklist=checklist).order_by("position", "id").values_list("text", flat=True))


# --- log in / log out ------------------------------------------------------------------


def test_login_page_then_login_then_logout(alice):
    c = Client()
    # Every page asks for a login first.
    r = c.get("/")
    assert r.status_code == 302 and r.url.startswith("/login/")
    r = c.get("/login/")
    assert r.status_code == 200 and b'name="password"' in r.content

    r = c.post("/login/", {"username": "alice", "password": "wrong"})
    assert r.status_code == 200 and b"Wrong username or password" in r.content

    r = c.post("/login/", {"username": "alice", "password": "pw-alice"}, follow=True)
    assert r.redirect_chain[-1][0] == "/"
    assert b"My checklists" in r.content and b"alice" in r.content

    r = c.post("/logout/", follow=True)
    assert r.redirect_chain[-1][0] == "/login/"
    assert c.get("/").status_code == 302


# --- my checklists ---------------------------------------------------------------------


def test_list_shows_only_my_checklists_with_role_and_progress(checklist, alice, carol, make_user):
    Checklist.objects.create(title="Secret", owner=alice)  # no membership for carol
    Item.objects.filter(checklist=checklist, text="Milk").update(done=True)
    r = as_user(carol).get("/")
    body = r.content.decode()
    assert "Groceries" in body and "Secret" not in body
    assert "viewer" in body and "1/2 done" in body and "shared by alice" in body

    r = as_user(make_user("dave")).get("/")
    assert "No checklists yet" in r.content.decode()


def test_create_checklist_makes_me_owner_and_opens_it(alice):
    c = as_user(alice)
    r = c.post("/", {"title": "  Packing  "}, follow=True)
    created = Checklist.objects.get(title="Packing")
    assert r.redirect_chain[-1][0] == page_url(created)
    assert Membership.objects.get(checklist=created, user=alice).role == "owner"
    assert any("Created" in m for m in messages_of(r))


def test_create_checklist_rejects_empty_and_too_long_titles(alice):
    c = as_user(alice)
    for title in ["   ", "x" * 201]:
        r = c.post("/", {"title": title}, follow=True)
        assert r.status_code == 200
        assert messages_of(r), title
    assert not Checklist.objects.exists()


# --- the checklist page ----------------------------------------------------------------


def test_checklist_page_embeds_what_the_live_script_needs(checklist, alice, settings):
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO outbox_topic (topic, tpos) VALUES (%s, 41) ON CONFLICT (topic) DO UPDATE SET tpos = 41",
            [checklist.topic],
        )
    settings.SYNC_PUBLIC_URL = "http://sync.example:8001/sync"
    body = as_user(alice).get(page_url(checklist)).content.decode()
    assert f'data-checklist-id="{checklist.pk}"' in body
    assert 'data-tpos="41"' in body
    assert 'data-sync-url="http://sync.example:8001/sync"' in body
    assert 'data-username="alice"' in body
    assert "/static/vendor/sockjs.min.js" in body
    assert re.search(r'<script type="module" src="/static/checklists/checklist.js">', body)
    assert 'id="sync-status"' in body and 'id="revoked-banner"' in body and 'id="checklist-title"' in body
    # Items in position order, with their ids and versions.
    milk, bread = item(checklist, "Milk"), item(checklist, "Bread")
    assert body.index(f'data-item-id="{milk.pk}" data-version="1"') < body.index(f'data-item-id="{bread.pk}"')
    assert 'id="add-item-form"' in body and 'id="share-form"' in body


def test_checklist_page_tpos_is_zero_when_the_topic_never_had_a_position(alice):
    c = as_user(alice)
    c.post("/", {"title": "Fresh"})
    fresh = Checklist.objects.get(title="Fresh")
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("DELETE FROM outbox_topic WHERE topic = %s", [fresh.topic])
    assert 'data-tpos="0"' in c.get(page_url(fresh)).content.decode()


def test_viewer_sees_a_read_only_page(checklist, carol):
    body = as_user(carol).get(page_url(checklist)).content.decode()
    assert "Groceries" in body and "read only" in body
    assert 'id="add-item-form"' not in body and 'id="share-form"' not in body and 'id="rename-form"' not in body
    # The item template (for live inserts) is read-only too.
    assert "item-toggle/" not in body and "/toggle/" not in body


def test_editor_can_edit_items_but_not_manage(checklist, bob):
    body = as_user(bob).get(page_url(checklist)).content.decode()
    assert 'id="add-item-form"' in body and "/toggle/" in body
    assert 'id="share-form"' not in body and 'id="rename-form"' not in body and 'id="delete-form"' not in body


def test_rename_and_delete_checklist(checklist, alice):
    c = as_user(alice)
    r = c.post(reverse("web:checklist-rename", args=[checklist.pk]), {"title": "Weekly shop"}, follow=True)
    assert r.redirect_chain[-1][0] == page_url(checklist)
    checklist.refresh_from_db()
    assert checklist.title == "Weekly shop" and checklist.version == 2
    assert b"Weekly shop" in r.content

    r = c.post(reverse("web:checklist-rename", args=[checklist.pk]), {"title": "t"}, **JSON)
    assert r.json() == {"ok": True, "title": "t"}

    r = c.post(reverse("web:checklist-delete", args=[checklist.pk]), follow=True)
    assert r.redirect_chain[-1][0] == "/"
    assert not Checklist.objects.filter(pk=checklist.pk).exists()
    assert not Item.objects.filter(checklist_id=checklist.pk).exists()
    assert c.get(page_url(checklist)).status_code == 404


# --- items -----------------------------------------------------------------------------


def test_add_item_goes_to_the_end(checklist, bob):
    c = as_user(bob)
    r = c.post(reverse("web:item-add", args=[checklist.pk]), {"text": " Eggs "})
    assert r.status_code == 302 and r.url == page_url(checklist)
    assert item_texts(checklist) == ["Milk", "Bread", "Eggs"]
    assert item(checklist, "Eggs").position == 2


@pytest.mark.parametrize("via", ["web", "api"])
def test_an_item_added_after_the_largest_position_goes_last_without_an_error(checklist, bob, via, client_for):
    """The web UI and the API add items through one service (checklists/services.py): the
    web form used to compute last + 1 without the API's clamp, and overflowed (500)."""
    Item.objects.filter(checklist=checklist, text="Bread").update(position=2**31 - 1)
    if via == "web":
        r = as_user(bob).post(reverse("web:item-add", args=[checklist.pk]), {"text": "Eggs"}, **JSON)
        assert r.status_code == 200, r.content
    else:
        r = client_for(bob).post(f"/api/checklists/{checklist.pk}/items/", {"text": "Eggs"}, format="json")
        assert r.status_code == 201, r.content
    assert item(checklist, "Eggs").position == 2**31 - 1
    assert item_texts(checklist)[-1] == "Eggs"  # ties go by id: still last


def test_add_item_json_answer_carries_the_row_as_events_do(checklist, bob):
    r = as_user(bob).post(reverse("web:item-add", args=[checklist.pk]), {"text": "Eggs"}, **JSON)
    eggs = item(checklist, "Eggs")
    assert r.json() == {
        "ok": True,
        "item": {"id": eggs.pk, "checklist_id": checklist.pk, "text": "Eggs", "done": False, "position": 2, "version": 1},
    }


def test_edit_item_text(checklist, bob):
    milk = item(checklist, "Milk")
    c = as_user(bob)
    r = c.post(reverse("web:item-edit", args=[checklist.pk, milk.pk]), {"text": "Oat milk"})
    assert r.status_code == 302
    milk.refresh_from_db()
    assert milk.text == "Oat milk" and milk.version == 2
    r = c.post(reverse("web:item-edit", args=[checklist.pk, milk.pk]), {"text": "Soy milk"}, **JSON)
    assert r.json()["item"]["version"] == 3 and r.json()["item"]["text"] == "Soy milk"


def test_toggle_item_sets_the_submitted_value(checklist, bob):
    milk = item(checklist, "Milk")
    url = reverse("web:item-toggle", args=[checklist.pk, milk.pk])
    c = as_user(bob)
    c.post(url, {"done": "1"})
    milk.refresh_from_db()
    assert milk.done is True and milk.version == 2
    # Resubmitting the same form does not flip it back.
    c.post(url, {"done": "1"})
    milk.refresh_from_db()
    assert milk.done is True and milk.version == 2
    # An unchecked box sends nothing: not done.
    r = c.post(url, {}, **JSON)
    assert r.json()["item"]["done"] is False
    milk.refresh_from_db()
    assert milk.done is False and milk.version == 3


def test_reorder_up_down_and_to_an_index_writes_positions(checklist, bob):
    c = as_user(bob)
    c.post(reverse("web:item-add", args=[checklist.pk]), {"text": "Eggs"})
    milk, bread, eggs = item(checklist, "Milk"), item(checklist, "Bread"), item(checklist, "Eggs")

    c.post(reverse("web:item-move", args=[checklist.pk, bread.pk]), {"direction": "up"})
    assert item_texts(checklist) == ["Bread", "Milk", "Eggs"]
    c.post(reverse("web:item-move", args=[checklist.pk, bread.pk]), {"direction": "down"})
    assert item_texts(checklist) == ["Milk", "Bread", "Eggs"]

    r = c.post(reverse("web:item-move", args=[checklist.pk, eggs.pk]), {"index": "0"}, **JSON)
    assert item_texts(checklist) == ["Eggs", "Milk", "Bread"]
    moved = {d["id"]: d["position"] for d in r.json()["items"]}
    assert moved == {eggs.pk: 0, milk.pk: 1, bread.pk: 2}
    # The order is stored in `position`: a write of each moved row.
    assert [i.position for i in Item.objects.filter(checklist=checklist).order_by("position")] == [0, 1, 2]
    assert OutboxEvent.objects.filter(entity="item", op="update", changed__contains=["position"]).exists()


def test_reorder_without_a_target_is_refused(checklist, bob):
    milk = item(checklist, "Milk")
    r = as_user(bob).post(reverse("web:item-move", args=[checklist.pk, milk.pk]), {}, follow=True)
    assert messages_of(r)
    assert item_texts(checklist) == ["Milk", "Bread"]


def test_delete_item(checklist, bob):
    milk = item(checklist, "Milk")
    c = as_user(bob)
    r = c.post(reverse("web:item-delete", args=[checklist.pk, milk.pk]), **JSON)
    # A delete is one more version of the row, as the capture trigger records it.
    assert r.json()["deleted"]["id"] == milk.pk and r.json()["deleted"]["version"] == 2
    assert item_texts(checklist) == ["Bread"]
    ev = OutboxEvent.objects.get(entity="item", op="delete", entity_id=str(milk.pk))
    assert ev.version == 2
    bread = item(checklist, "Bread")
    r = c.post(reverse("web:item-delete", args=[checklist.pk, bread.pk]))
    assert r.status_code == 302 and item_texts(checklist) == []


def test_item_of_another_checklist_is_not_found(checklist, alice, bob):
    other = Checklist.objects.create(title="Other", owner=alice)
    Membership.objects.create(checklist=other, user=bob, role="editor")
    milk = item(checklist, "Milk")
    # bob may edit both lists, but Milk is not in `other`.
    r = as_user(bob).post(reverse("web:item-edit", args=[other.pk, milk.pk]), {"text": "x"})
    assert r.status_code == 404
    assert item(checklist, "Milk").version == 1


# --- members ---------------------------------------------------------------------------


def test_share_change_role_and_remove(checklist, alice, make_user):
    dave = make_user("dave")
    c = as_user(alice)
    r = c.post(reverse("web:member-add", args=[checklist.pk]), {"username": "dave", "role": "viewer"}, follow=True)
    assert any("Shared with dave" in m for m in messages_of(r))
    m = Membership.objects.get(checklist=checklist, user=dave)
    assert m.role == "viewer"
    assert b'data-username="dave"' in r.content

    r = c.post(reverse("web:member-role", args=[checklist.pk, m.pk]), {"role": "editor"}, follow=True)
    m.refresh_from_db()
    assert m.role == "editor" and any("now editor" in x for x in messages_of(r))

    r = c.post(reverse("web:member-remove", args=[checklist.pk, m.pk]), follow=True)
    assert not Membership.objects.filter(pk=m.pk).exists()
    assert any("Removed dave" in x for x in messages_of(r))
    assert as_user(dave).get(page_url(checklist)).status_code == 404


def test_members_panel_fragment(checklist, carol):
    r = as_user(carol).get(reverse("web:members", args=[checklist.pk]))
    body = r.content.decode()
    assert r.status_code == 200 and body.strip().startswith('<section id="members"')
    for name in ("alice", "bob", "carol"):
        assert f'data-username="{name}"' in body
    assert "share-form" not in body  # carol is not the owner


def test_owner_membership_cannot_be_changed_or_removed(checklist, alice):
    own = Membership.objects.get(checklist=checklist, user=alice)
    c = as_user(alice)
    r = c.post(reverse("web:member-role", args=[checklist.pk, own.pk]), {"role": "viewer"}, follow=True)
    assert messages_of(r)
    r = c.post(reverse("web:member-remove", args=[checklist.pk, own.pk]), follow=True)
    assert messages_of(r)
    own.refresh_from_db()
    assert own.role == "owner" and own.version == 1


# --- API tokens ------------------------------------------------------------------------


def test_token_create_shows_plaintext_once_then_revoke(alice):
    from portal.apitokens.models import ApiToken
    from portal.apitokens.services import authenticate_key

    c = as_user(alice)
    assert "no active tokens" in c.get("/tokens/").content.decode()
    r = c.post("/tokens/", {"name": "nightly export"}, follow=True)
    body = r.content.decode()
    token = ApiToken.objects.get(user=alice, name="nightly export")
    plaintext = re.search(r'<code id="new-token-value">([^<]+)</code>', body).group(1)
    assert plaintext.startswith(token.prefix)
    assert authenticate_key(plaintext).pk == token.pk
    # Shown once: the next view of the page lists it without the secret.
    body = c.get("/tokens/").content.decode()
    assert plaintext not in body and "nightly export" in body and token.prefix in body

    r = c.post(reverse("web:token-revoke", args=[token.pk]), follow=True)
    assert any("revoked" in m for m in messages_of(r))
    token.refresh_from_db()
    assert token.revoked_at is not None and authenticate_key(plaintext) is None
    assert "nightly export" not in r.content.decode()


def test_cannot_revoke_someone_elses_token(alice, bob):
    from portal.apitokens.services import create_token

    token, _ = create_token(alice, "mine")
    r = as_user(bob).post(reverse("web:token-revoke", args=[token.pk]), follow=True)
    assert messages_of(r)
    token.refresh_from_db()
    assert token.revoked_at is None


def test_token_name_is_required(alice):
    from portal.apitokens.models import ApiToken

    r = as_user(alice).post("/tokens/", {"name": "  "}, follow=True)
    assert messages_of(r) and not ApiToken.objects.exists()
