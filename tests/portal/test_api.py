"""The REST API against real PostgreSQL: CRUD, permissions, validation, concurrency, tpos."""
from __future__ import annotations

import json

import pytest
from django.db import connection

from portal.checklists.models import TEXT_MAX, TITLE_MAX, Checklist, Item, Membership

pytestmark = pytest.mark.django_db


def state(checklist_id: int) -> tuple:
    """Everything a refused write must leave unchanged."""
    c = Checklist.objects.filter(pk=checklist_id).values("title", "version").first()
    items = list(Item.objects.filter(checklist_id=checklist_id).values_list("id", "text", "done", "position", "version"))
    members = list(Membership.objects.filter(checklist_id=checklist_id).values_list("user_id", "role", "version"))
    return c, items, members


# --- CRUD --------------------------------------------------------------------------

def test_create_checklist_makes_caller_owner(alice, client_for, outbox):
    r = client_for(alice).post("/api/checklists/", {"title": "Trip"}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["title"] == "Trip" and body["owner"] == "alice" and body["role"] == "owner" and body["version"] == 1
    assert r["ETag"] == '"1"'
    assert Membership.objects.get(checklist_id=body["id"]).role == "owner"
    topic = f"checklist:{body['id']}"
    assert outbox.since() == [(topic, "checklist", "insert"), (topic, "membership", "insert")]
    assert {e.source for e in outbox.rows_since()} == {"api"}


def test_list_shows_only_member_checklists_paginated(alice, bob, checklist, client_for):
    Checklist.objects.create(title="Alice's secret", owner=alice)  # no membership for bob
    r = client_for(bob).get("/api/checklists/")
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 1 and [c["title"] for c in body["results"]] == ["Groceries"]
    assert body["results"][0]["role"] == "editor"


def test_detail_returns_items_and_tpos(bob, checklist, client_for):
    with connection.cursor() as cur:
        cur.execute("INSERT INTO outbox_topic (topic, tpos) VALUES (%s, 41)", [checklist.topic])
    r = client_for(bob).get(f"/api/checklists/{checklist.pk}/")
    assert r.status_code == 200
    body = r.json()
    assert body["tpos"] == 41
    assert [i["text"] for i in body["items"]] == ["Milk", "Bread"]
    assert r["ETag"] == f'"{body["version"]}"'


def test_detail_tpos_is_zero_for_unsequenced_topic(bob, checklist, client_for):
    assert client_for(bob).get(f"/api/checklists/{checklist.pk}/").json()["tpos"] == 0


def test_item_create_update_delete(bob, checklist, client_for, outbox):
    client = client_for(bob)
    r = client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Eggs"}, format="json")
    assert r.status_code == 201, r.content
    item = r.json()
    assert item["position"] == 2 and item["done"] is False and item["version"] == 1
    r = client.patch(f"/api/items/{item['id']}/", {"done": True}, format="json", HTTP_IF_MATCH='"1"')
    assert r.status_code == 200, r.content
    assert r.json()["version"] == 2 and r["ETag"] == '"2"'
    r = client.delete(f"/api/items/{item['id']}/", HTTP_IF_MATCH='W/"2"')
    assert r.status_code == 204
    topic = checklist.topic
    assert outbox.since() == [(topic, "item", "insert"), (topic, "item", "update"), (topic, "item", "delete")]
    update = outbox.rows_since()[1]
    assert update.changed == ["done"] and update.version == 2


def test_items_list_is_filtered_by_checklist(bob, checklist, client_for):
    r = client_for(bob).get(f"/api/checklists/{checklist.pk}/items/?page_size=1")
    assert r.status_code == 200
    assert r.json()["count"] == 2 and len(r.json()["results"]) == 1 and r.json()["next"]


def test_rename_and_delete_checklist_by_owner(alice, checklist, client_for, outbox):
    client = client_for(alice)
    r = client.patch(f"/api/checklists/{checklist.pk}/", {"title": "Food"}, format="json")
    assert r.status_code == 200 and r.json()["title"] == "Food"
    r = client.delete(f"/api/checklists/{checklist.pk}/")
    assert r.status_code == 204
    assert not Checklist.objects.filter(pk=checklist.pk).exists()
    ops = outbox.since()
    assert ops[0] == (checklist.topic, "checklist", "update")
    assert sorted(ops[1:]) == sorted(
        [(checklist.topic, "item", "delete")] * 2 + [(checklist.topic, "membership", "delete")] * 3
        + [(checklist.topic, "checklist", "delete")]
    )


def test_move_item_between_checklists(alice, bob, checklist, client_for, outbox):
    other = Checklist.objects.create(title="Other", owner=bob)
    Membership.objects.create(checklist=other, user=bob, role="owner")
    outbox.mark()
    item = checklist.items.first()
    r = client_for(bob).patch(f"/api/items/{item.pk}/", {"checklist": other.pk}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["checklist"] == other.pk
    assert outbox.since() == [(checklist.topic, "item", "delete"), (other.topic, "item", "insert")]


def test_move_to_checklist_without_edit_rights_is_refused(alice, carol, bob, checklist, client_for):
    foreign = Checklist.objects.create(title="Carol's", owner=carol)
    before = state(checklist.pk)
    r = client_for(bob).patch(f"/api/items/{checklist.items.first().pk}/", {"checklist": foreign.pk}, format="json")
    assert r.status_code == 400 and "checklist" in r.json()
    assert state(checklist.pk) == before


# --- memberships -------------------------------------------------------------------

def test_share_change_role_and_remove_member(alice, make_user, checklist, client_for, outbox):
    dave = make_user("dave")
    client = client_for(alice)
    url = f"/api/checklists/{checklist.pk}/members/"
    r = client.post(url, {"username": "dave", "role": "viewer"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["role"] == "viewer" and r.json()["user_id"] == dave.pk
    r = client.patch(f"{url}dave/", {"role": "editor"}, format="json")
    assert r.status_code == 200 and r.json()["role"] == "editor"
    r = client.delete(f"{url}dave/")
    assert r.status_code == 204
    rows = outbox.rows_since()
    assert [(r.entity, r.op) for r in rows] == [("membership", "insert"), ("membership", "update"), ("membership", "delete")]
    assert rows[-1].data["user_id"] == dave.pk and rows[-1].topic == checklist.topic
    members = {m["username"] for m in client.get(url).json()["results"]}
    assert members == {"alice", "bob", "carol"}


def test_share_errors_name_fields(alice, checklist, client_for, outbox):
    client = client_for(alice)
    url = f"/api/checklists/{checklist.pk}/members/"
    assert "username" in client.post(url, {"username": "nobody"}, format="json").json()
    assert "username" in client.post(url, {"username": "bob"}, format="json").json()  # already a member
    assert "role" in client.post(url, {"username": "bob", "role": "owner"}, format="json").json()
    r = client.delete(f"{url}alice/")
    assert r.status_code == 400  # the owner stays
    assert outbox.since() == []


def test_only_owner_manages_members(bob, checklist, client_for):
    r = client_for(bob).post(f"/api/checklists/{checklist.pk}/members/", {"username": "carol"}, format="json")
    assert r.status_code == 403


# --- permissions -------------------------------------------------------------------

def test_non_member_gets_404_everywhere(make_user, checklist, client_for, outbox):
    client = client_for(make_user("mallory"))
    item = checklist.items.first()
    before = state(checklist.pk)
    assert client.get(f"/api/checklists/{checklist.pk}/").status_code == 404
    assert client.get(f"/api/checklists/{checklist.pk}/items/").status_code == 404
    assert client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "x"}, format="json").status_code == 404
    assert client.patch(f"/api/items/{item.pk}/", {"text": "x"}, format="json").status_code == 404
    assert client.delete(f"/api/items/{item.pk}/").status_code == 404
    assert client.delete(f"/api/checklists/{checklist.pk}/").status_code == 404
    assert state(checklist.pk) == before and outbox.since() == []


def test_viewer_cannot_write(carol, checklist, client_for, outbox):
    client = client_for(carol)
    item = checklist.items.first()
    before = state(checklist.pk)
    assert client.get(f"/api/checklists/{checklist.pk}/").status_code == 200
    assert client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "x"}, format="json").status_code == 403
    assert client.patch(f"/api/items/{item.pk}/", {"done": True}, format="json").status_code == 403
    assert client.delete(f"/api/items/{item.pk}/").status_code == 403
    assert client.patch(f"/api/checklists/{checklist.pk}/", {"title": "x"}, format="json").status_code == 403
    assert state(checklist.pk) == before and outbox.since() == []


def test_editor_cannot_rename_or_delete_checklist(bob, checklist, client_for):
    client = client_for(bob)
    assert client.patch(f"/api/checklists/{checklist.pk}/", {"title": "x"}, format="json").status_code == 403
    assert client.delete(f"/api/checklists/{checklist.pk}/").status_code == 403


def test_anonymous_gets_401(api_client, checklist):
    r = api_client.get(f"/api/checklists/{checklist.pk}/")
    assert r.status_code == 401 and r["WWW-Authenticate"] == "Token"


# --- validation: 400 naming fields, nothing written ---------------------------------

@pytest.mark.parametrize(
    "body, bad_fields",
    [
        ({}, ["text"]),
        ({"text": ""}, ["text"]),
        ({"text": "x" * (TEXT_MAX + 1)}, ["text"]),
        ({"text": 5}, ["text"]),
        ({"text": "ok", "done": "yes"}, ["done"]),
        ({"text": "ok", "position": "3"}, ["position"]),
        ({"text": "ok", "position": 2**31}, ["position"]),
        ({"text": "ok", "colour": "red", "size": 1}, ["colour", "size"]),
        ({"text": "nul\x00byte"}, ["text"]),
        ({"text": "x", "color": 1, "done": "yes"}, ["color", "done"]),
        ({"text": None, "done": 1}, ["done", "text"]),
    ],
)
def test_item_validation_errors(bob, checklist, client_for, outbox, body, bad_fields):
    before = state(checklist.pk)
    r = client_for(bob).post(f"/api/checklists/{checklist.pk}/items/", body, format="json")
    assert r.status_code == 400, r.content
    assert sorted(r.json()) == bad_fields
    assert state(checklist.pk) == before and outbox.since() == []


def test_checklist_title_too_long(alice, client_for, outbox):
    r = client_for(alice).post("/api/checklists/", {"title": "t" * (TITLE_MAX + 1)}, format="json")
    assert r.status_code == 400 and list(r.json()) == ["title"]
    assert outbox.since() == [] and not Checklist.objects.exists()


def test_update_with_bad_field_writes_nothing(bob, checklist, client_for, outbox):
    item = checklist.items.first()
    before = state(checklist.pk)
    r = client_for(bob).patch(f"/api/items/{item.pk}/", {"text": "changed", "done": "nope"}, format="json")
    assert r.status_code == 400 and list(r.json()) == ["done"]
    assert state(checklist.pk) == before and outbox.since() == []


@pytest.mark.parametrize("raw", [b"{not json", b'{"text": "x",}', b"\xff\xfe", b'"just a string"', b"[1, 2]"])
def test_invalid_json_is_400(bob, checklist, client_for, outbox, raw):
    before = state(checklist.pk)
    r = client_for(bob).generic("POST", f"/api/checklists/{checklist.pk}/items/", raw, content_type="application/json")
    assert r.status_code == 400, r.content
    assert r.json()  # a JSON error body
    assert state(checklist.pk) == before and outbox.since() == []


def test_read_only_fields_are_ignored(bob, checklist, client_for):
    item = checklist.items.first()
    r = client_for(bob).patch(f"/api/items/{item.pk}/", {"id": 999, "version": 77, "done": True}, format="json")
    assert r.status_code == 200 and r.json()["id"] == item.pk and r.json()["version"] == 2


# --- optimistic concurrency ---------------------------------------------------------

def test_stale_if_match_is_412_and_writes_nothing(bob, checklist, client_for, outbox):
    item = checklist.items.first()
    Item.objects.filter(pk=item.pk).update(text="Oat milk")  # someone else: version 2
    outbox.mark()
    before = state(checklist.pk)
    client = client_for(bob)
    r = client.patch(f"/api/items/{item.pk}/", {"done": True}, format="json", HTTP_IF_MATCH='"1"')
    assert r.status_code == 412 and r["ETag"] == '"2"'
    assert client.delete(f"/api/items/{item.pk}/", HTTP_IF_MATCH='"1"').status_code == 412
    assert state(checklist.pk) == before and outbox.since() == []
    assert client.patch(f"/api/items/{item.pk}/", {"done": True}, format="json", HTTP_IF_MATCH='"2"').status_code == 200


def test_stale_if_match_on_checklist(alice, checklist, client_for, outbox):
    client = client_for(alice)
    r = client.patch(f"/api/checklists/{checklist.pk}/", {"title": "New"}, format="json", HTTP_IF_MATCH='"9"')
    assert r.status_code == 412
    assert client.delete(f"/api/checklists/{checklist.pk}/", HTTP_IF_MATCH='"9"').status_code == 412
    assert outbox.since() == [] and Checklist.objects.get(pk=checklist.pk).title == "Groceries"


@pytest.mark.parametrize("header", ["2", "abc", '"2', '2"', 'W/2', '"2" "3"', ",", '"2",,x', '"a"b"'])
def test_a_malformed_if_match_is_400_and_writes_nothing(bob, checklist, client_for, outbox, header):
    """Not a stale version (412) but a header that is not `*` or a list of quoted tags."""
    item = checklist.items.first()
    outbox.mark()
    client = client_for(bob)
    r = client.patch(f"/api/items/{item.pk}/", {"done": True}, format="json", HTTP_IF_MATCH=header)
    assert r.status_code == 400 and "If-Match" in r.json()["detail"], r.content
    assert client.delete(f"/api/items/{item.pk}/", HTTP_IF_MATCH=header).status_code == 400
    assert outbox.since() == [] and Item.objects.filter(pk=item.pk, done=False).exists()


def test_noop_update_produces_no_event(bob, checklist, client_for, outbox):
    item = checklist.items.first()
    r = client_for(bob).patch(f"/api/items/{item.pk}/", {"text": item.text}, format="json")
    assert r.status_code == 200 and r.json()["version"] == item.version
    assert outbox.since() == []


# --- session auth and CSRF ----------------------------------------------------------

def test_session_auth_enforces_csrf(alice):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password="pw-alice")
    assert client.get("/api/checklists/").status_code == 200
    r = client.post("/api/checklists/", {"title": "No CSRF"}, format="json")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    client.get("/api/checklists/")  # no CSRF cookie yet from a JSON view: fetch one from the admin login
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value
    r = client.post("/api/checklists/", {"title": "With CSRF"}, format="json", HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 201, r.content


# --- sync tokens --------------------------------------------------------------------

def test_sync_token_for_viewable_topics(carol, checklist, client_for, settings):
    from runtime.tokens import verify

    r = client_for(carol).post("/api/sync/token/", {"topics": [checklist.topic]}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    claims = verify(settings.SYNC_TOKEN_SECRET, body["token"])
    assert claims.user_id == carol.pk and claims.topics == {checklist.topic}
    assert body["url"] == settings.SYNC_PUBLIC_URL and body["expires_at"] == int(claims.expires_at)


def test_sync_token_defaults_to_all_visible(bob, checklist, client_for, settings):
    from runtime.tokens import verify

    r = client_for(bob).post("/api/sync/token/", {}, format="json")
    assert r.status_code == 200
    assert verify(settings.SYNC_TOKEN_SECRET, r.json()["token"]).topics == {checklist.topic}


def test_sync_token_refuses_foreign_topic(make_user, checklist, client_for):
    client = client_for(make_user("mallory"))
    r = client.post("/api/sync/token/", {"topics": [checklist.topic]}, format="json")
    assert r.status_code == 403 and checklist.topic in r.json()["detail"]
    r = client.post("/api/sync/token/", {"topics": ["_heartbeat"]}, format="json")
    assert r.status_code == 403 and "_heartbeat" in r.json()["detail"]


@pytest.mark.parametrize("body", [{"topics": "checklist:1"}, {"topics": [1]}, {"other": 1}, [1]])
def test_sync_token_bad_body(bob, checklist, client_for, body):
    r = client_for(bob).post("/api/sync/token/", body, format="json")
    assert r.status_code == 400, r.content


# --- schema and docs ----------------------------------------------------------------

def test_openapi_schema_and_docs(api_client):
    r = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    schema = json.loads(r.content)
    assert "/api/checklists/{id}/" in schema["paths"] and "tokenAuth" in schema["components"]["securitySchemes"]
    assert api_client.get("/api/docs/").status_code == 200
    assert api_client.get("/api/redoc/").status_code == 200
