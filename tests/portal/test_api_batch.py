"""POST /api/checklists/<id>/items/batch/: many item writes in one request and one
transaction, all or nothing, against real PostgreSQL with the capture triggers."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portal.checklists.api.views import MAX_BATCH
from portal.checklists.models import Checklist, Item, Membership
from portal.outbox.models import OutboxEvent


def url(checklist) -> str:
    return f"/api/checklists/{checklist.pk}/items/batch/"


def snapshot(checklist) -> tuple[list, int]:
    items = list(Item.objects.filter(checklist=checklist).order_by("id").values_list("id", "text", "done", "position",
                                                                                       "version"))
    return items, OutboxEvent.objects.count()


@pytest.mark.django_db
def test_creates_and_updates_in_order_with_one_event_each(client_for, bob, checklist, outbox):
    milk, bread = checklist.items.order_by("position")
    client = client_for(bob)
    r = client.post(url(checklist), {"items": [
        {"text": "Tea"},
        {"id": milk.pk, "done": True, "version": 1},
        {"text": "Jam", "position": 7, "done": True},
        {"id": bread.pk, "text": "Rye bread"},
        {"text": "Eggs"},
    ]}, format="json", HTTP_X_REQUEST_ID="batch-1")
    assert r.status_code == 200, r.content
    got = r.json()["items"]
    assert [(i["text"], i["done"], i["position"], i["version"]) for i in got] == [
        ("Tea", False, 2, 1), ("Milk", True, 0, 2), ("Jam", True, 7, 1), ("Rye bread", False, 1, 2), ("Eggs", False, 8, 1),
    ]
    assert got[1]["id"] == milk.pk and got[3]["id"] == bread.pk and all(i["checklist"] == checklist.pk for i in got)
    rows = outbox.rows_since()
    # One outbox row per entry, in the entries' order, one transaction, with provenance.
    assert [(row.op, row.entity_id) for row in rows] == [("insert", str(got[0]["id"])), ("update", str(milk.pk)),
                                                         ("insert", str(got[2]["id"])), ("update", str(bread.pk)),
                                                         ("insert", str(got[4]["id"]))]
    assert len({row.txid for row in rows}) == 1
    token = bob.api_tokens.get()
    assert {(row.source, row.actor, row.request_id) for row in rows} == {("api", f"user:{bob.pk}:token:{token.pk}",
                                                                         "batch-1")}
    assert rows[1].changed == ["done"] and rows[3].changed == ["text"]
    assert Item.objects.get(pk=milk.pk).done is True


@pytest.mark.django_db
def test_at_the_limit_it_works_one_more_is_413_and_writes_nothing(client_for, bob, checklist):
    client = client_for(bob)
    before = snapshot(checklist)
    r = client.post(url(checklist), {"items": [{"text": f"x{i}"} for i in range(MAX_BATCH + 1)]}, format="json")
    assert r.status_code == 413 and str(MAX_BATCH) in r.json()["detail"]
    assert snapshot(checklist) == before
    r = client.post(url(checklist), {"items": [{"text": f"x{i}"} for i in range(MAX_BATCH)]}, format="json")
    assert r.status_code == 200
    assert [i["position"] for i in r.json()["items"]] == list(range(2, MAX_BATCH + 2))
    assert Item.objects.filter(checklist=checklist).count() == MAX_BATCH + 2


@pytest.mark.django_db
@pytest.mark.parametrize("entry, field", [
    ({"text": ""}, "text"),
    ({"text": 5}, "text"),
    ({"text": "x" * 501}, "text"),
    ({"done": True}, "text"),                     # a new item needs text
    ({"text": "a", "colour": "red"}, "colour"),   # unknown field
    ({"text": "a", "position": 2**31}, "position"),
    ({"text": "a", "version": 3}, "version"),     # only updates have a precondition
    ({"id": "1", "done": True}, "id"),
    ({"id": 10**9, "done": True}, "id"),          # no such item in this checklist
])
def test_an_invalid_entry_is_400_naming_its_index_and_nothing_is_written(client_for, bob, checklist, entry, field):
    client = client_for(bob)
    before = snapshot(checklist)
    r = client.post(url(checklist), {"items": [{"text": "ok"}, {"text": "fine"}, entry]}, format="json")
    assert r.status_code == 400, r.content
    assert list(r.json()["items"]) == ["2"] and field in r.json()["items"]["2"], r.json()
    assert snapshot(checklist) == before


@pytest.mark.django_db
def test_an_item_of_another_list_and_a_repeated_id_are_refused(client_for, alice, bob, checklist):
    other = Checklist.objects.create(title="Other", owner=alice)
    Membership.objects.create(checklist=other, user=bob, role=Membership.EDITOR)
    foreign = Item.objects.create(checklist=other, text="elsewhere")
    milk = checklist.items.first()
    client = client_for(bob)
    before = snapshot(checklist)
    r = client.post(url(checklist), {"items": [{"id": foreign.pk, "done": True}]}, format="json")
    assert r.status_code == 400 and "0" in r.json()["items"]
    r = client.post(url(checklist), {"items": [{"id": milk.pk, "done": True}, {"id": milk.pk, "done": False}]},
                    format="json")
    assert r.status_code == 400 and r.json()["items"]["1"]["id"] == ["The same item as entry 0."]
    assert snapshot(checklist) == before and Item.objects.get(pk=foreign.pk).done is False


@pytest.mark.django_db
def test_a_stale_version_is_412_naming_the_entry_and_nothing_is_written(client_for, bob, checklist):
    milk, bread = checklist.items.order_by("position")
    Item.objects.filter(pk=bread.pk).update(done=True)  # bread is at version 2 now
    client = client_for(bob)
    before = snapshot(checklist)
    r = client.post(url(checklist), {"items": [{"text": "new"}, {"id": milk.pk, "done": True, "version": 1},
                                               {"id": bread.pk, "text": "x", "version": 1}]}, format="json")
    assert r.status_code == 412 and r.json()["index"] == 2 and "version is 2" in r.json()["detail"]
    assert snapshot(checklist) == before


@pytest.mark.django_db
def test_permissions_as_the_single_endpoints(client_for, api_client, carol, checklist, make_user):
    body = {"items": [{"text": "x"}]}
    before = snapshot(checklist)
    assert client_for(carol).post(url(checklist), body, format="json").status_code == 403   # viewer
    assert client_for(make_user("dave")).post(url(checklist), body, format="json").status_code == 404  # non-member
    assert api_client.post(url(checklist), body, format="json").status_code == 401
    assert client_for(carol).post("/api/checklists/999999/items/batch/", body, format="json").status_code == 404
    assert snapshot(checklist) == before


@pytest.mark.django_db
@pytest.mark.parametrize("body", [[], "x", {"items": {}}, {"items": "x"}, {"items": [], "more": 1}, {"items": [5]}])
def test_malformed_bodies_are_400(client_for, bob, checklist, body):
    r = client_for(bob).post(url(checklist), body, format="json")
    assert r.status_code == 400, r.content


@pytest.mark.django_db
def test_an_empty_batch_writes_nothing(client_for, bob, checklist):
    before = snapshot(checklist)
    r = client_for(bob).post(url(checklist), {"items": []}, format="json")
    assert r.status_code == 200 and r.json() == {"items": []}
    assert snapshot(checklist) == before


@pytest.mark.django_db(transaction=True)
def test_a_batch_costs_a_fixed_number_of_statements_plus_one_per_entry(client_for, bob, checklist):
    client = client_for(bob)
    client.get(f"/api/items/{checklist.items.first().pk}/")  # the token's last_used_at is fresh now
    milk = checklist.items.first()
    with CaptureQueriesContext(connection) as ctx:
        r = client.post(url(checklist), {"items": [{"text": "a"}, {"id": milk.pk, "done": True}, {"text": "b"}]},
                        format="json")
    assert r.status_code == 200
    kinds = [q["sql"].split()[0].upper() for q in ctx.captured_queries]
    # BEGIN, token with provenance, list lock with role, the updated items locked, 3 entries, COMMIT
    assert kinds == ["BEGIN", "SELECT", "SELECT", "SELECT", "INSERT", "UPDATE", "INSERT", "COMMIT"], kinds


def test_the_schema_documents_the_batch_endpoint(db, client):
    schema = client.get("/api/schema/?format=json").json()
    op = schema["paths"]["/api/checklists/{id}/items/batch/"]["post"]
    assert {"200", "400", "412", "413"} <= set(op["responses"])


# --- property: all or nothing, and the same result as adding one at a time -------------

def stored(field: str, value):
    """What the API stores for a field's value: text is trimmed (DRF's CharField default,
    as in every text field of the API)."""
    return value.strip() if field == "text" else value


entry_strategy = st.one_of(
    st.fixed_dictionaries({"text": st.text(min_size=1, max_size=5).filter(lambda s: s.strip() and "\x00" not in s)},
                          optional={"done": st.booleans(), "position": st.integers(0, 20)}),
    st.fixed_dictionaries({"existing": st.sampled_from([0, 1])},
                          optional={"done": st.booleans(), "text": st.sampled_from(["u", "v"]),
                                    "position": st.integers(0, 20)}),
    st.just({"text": ""}),  # invalid: the whole batch must be refused
)


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(entry_strategy, max_size=8))
@example(entries=[{"text": "0\r"}])  # found by hypothesis: text is trimmed, as everywhere in the API
def test_batch_matches_a_model_or_writes_nothing(client_for, bob, checklist, entries):
    existing = list(checklist.items.order_by("id"))
    body, seen = [], set()
    for e in entries:
        if "existing" in e:
            item_id = existing[e["existing"]].pk
            if item_id in seen:
                continue  # repeated ids are refused; tested above
            seen.add(item_id)
            body.append({"id": item_id, **{k: v for k, v in e.items() if k != "existing"}})
        else:
            body.append(e)
    before_items, before_events = snapshot(checklist)
    r = client_for(bob).post(url(checklist), {"items": body}, format="json")
    if any(e.get("text") == "" for e in body):
        assert r.status_code == 400
        assert snapshot(checklist) == (before_items, before_events)
        return
    assert r.status_code == 200, r.content
    # The model: entries applied one at a time, new items last unless placed.
    state = {i[0]: {"text": i[1], "done": i[2], "position": i[3]} for i in before_items}
    expected, events = [], 0
    for e in body:
        if "id" in e:
            was = dict(state[e["id"]])
            state[e["id"]].update({k: stored(k, e[k]) for k in ("text", "done", "position") if k in e})
            events += state[e["id"]] != was  # an update that changes nothing captures nothing
            expected.append((e["id"], state[e["id"]]["text"], state[e["id"]]["done"], state[e["id"]]["position"]))
        else:
            pos = e.get("position", max([s["position"] for s in state.values()], default=-1) + 1)
            new = {"text": stored("text", e["text"]), "done": e.get("done", False), "position": pos}
            expected.append((None, new["text"], new["done"], pos))
            events += 1
            state[object()] = new
    got = [(i["id"] if "id" in e else None, i["text"], i["done"], i["position"]) for e, i in zip(body, r.json()["items"])]
    assert got == expected
    assert snapshot(checklist)[1] - before_events == events  # one outbox row per write, none for a no-op
