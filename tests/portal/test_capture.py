"""Every writer path produces exactly its outbox rows when it commits, and none when it
rolls back. Rows are read over a separate connection (committed_outbox), so a row seen
there is committed; these tests commit for real (transaction=True)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client

from portal import provenance
from portal.checklists.models import Checklist, Item, Membership
from stack.processes import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def rolled_back(write) -> None:
    """Run write in a transaction that is then rolled back."""
    with pytest.raises(Rollback):
        with transaction.atomic():
            write()
            raise Rollback


# --- ORM paths: commit and rollback ----------------------------------------------------

def orm_save(c):
    item = c.items.get(text="Milk")
    item.done = True
    item.save()
    return [(c.topic, "item", "update")]


def queryset_update(c):
    Item.objects.filter(checklist=c).update(done=True)
    return [(c.topic, "item", "update")] * 2


def queryset_delete_cascades(c):
    Checklist.objects.filter(pk=c.pk).delete()
    return sorted([(c.topic, "item", "delete")] * 2 + [(c.topic, "membership", "delete")] * 3
                  + [(c.topic, "checklist", "delete")])


def bulk_create(c):
    Item.objects.bulk_create([Item(checklist=c, text=f"bulk {i}", position=10 + i) for i in range(3)])
    return [(c.topic, "item", "insert")] * 3


def bulk_update(c):
    items = list(c.items.all())
    for i in items:
        i.text = i.text.upper()
    Item.objects.bulk_update(items, ["text"])
    return [(c.topic, "item", "update")] * 2


def orm_create_delete(c):
    item = Item.objects.create(checklist=c, text="Jam")
    item.delete()
    return [(c.topic, "item", "insert"), (c.topic, "item", "delete")]


WRITERS = [orm_save, queryset_update, queryset_delete_cascades, bulk_create, bulk_update, orm_create_delete]


@pytest.mark.parametrize("write", WRITERS, ids=lambda f: f.__name__)
def test_orm_writer_commit(checklist, committed_outbox, write):
    committed_outbox.mark()
    expected = write(checklist)
    got = committed_outbox.since()
    assert (sorted(got) if write is queryset_delete_cascades else got) == expected
    assert {r["source"] for r in committed_outbox.rows()} == {"sql"}  # nothing set provenance


@pytest.mark.parametrize("write", WRITERS, ids=lambda f: f.__name__)
def test_orm_writer_rollback(checklist, committed_outbox, write):
    committed_outbox.mark()
    rolled_back(lambda: write(checklist))
    assert committed_outbox.since() == []


def test_noop_update_produces_no_row(checklist, committed_outbox):
    committed_outbox.mark()
    item = checklist.items.get(text="Milk")
    item.save()
    Item.objects.filter(pk=item.pk).update(text="Milk")
    assert committed_outbox.since() == []
    item.refresh_from_db()
    assert item.version == 1


def test_move_emits_on_both_topics(alice, checklist, committed_outbox):
    other = Checklist.objects.create(title="Other", owner=alice)
    committed_outbox.mark()
    item = checklist.items.get(text="Milk")
    item.checklist = other
    item.save()
    rows = committed_outbox.rows()
    assert [(r["topic"], r["op"]) for r in rows] == [(checklist.topic, "delete"), (other.topic, "insert")]
    assert rows[0]["data"]["checklist_id"] == other.pk and rows[0]["version"] == rows[1]["version"] == 2


def test_member_removal_emits_delete_with_user_id(carol, checklist, committed_outbox):
    committed_outbox.mark()
    Membership.objects.get(checklist=checklist, user=carol).delete()
    [row] = committed_outbox.rows()
    assert (row["topic"], row["entity"], row["op"]) == (checklist.topic, "membership", "delete")
    assert row["data"]["user_id"] == carol.pk


# --- raw SQL through another connection ---------------------------------------------

def test_raw_sql_commit_and_rollback(checklist, committed_outbox, db_url):
    committed_outbox.mark()
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE checklists_item SET done = true WHERE checklist_id = %s", (checklist.pk,))
        conn.rollback()
        assert committed_outbox.since() == []
        conn.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                     " VALUES (%s, 'raw', false, 9, 1)", (checklist.pk,))
        conn.commit()
    rows = committed_outbox.rows()
    assert [(r["topic"], r["entity"], r["op"]) for r in rows] == [(checklist.topic, "item", "insert")]
    assert rows[0]["source"] == "sql" and rows[0]["actor"] is None and rows[0]["request_id"] is None


def test_a_raw_insert_that_names_no_version_starts_at_version_1(checklist, committed_outbox, db_url):
    """Inserts have no version trigger (migrations/0002): the column's default, 1, which
    outbox_track sets, is the version; the event carries it, and an empty `changed` (an
    insert's data is the whole row). The first real update makes it 2; a no-op update keeps it."""
    committed_outbox.mark()
    with psycopg.connect(db_url, autocommit=True) as conn:
        item = conn.execute("INSERT INTO checklists_item (checklist_id, text, done, position)"
                            " VALUES (%s, 'raw', false, 9) RETURNING id, version", (checklist.pk,)).fetchone()
        assert item[1] == 1
        conn.execute("UPDATE checklists_item SET text = 'raw' WHERE id = %s", (item[0],))  # changes nothing
        conn.execute("UPDATE checklists_item SET done = true WHERE id = %s", (item[0],))
    rows = committed_outbox.rows()
    assert [(r["op"], r["version"], r["changed"]) for r in rows] == [("insert", 1, []), ("update", 2, ["done"])]
    assert rows[0]["data"]["version"] == 1 and rows[1]["data"]["version"] == 2


def test_a_writer_cannot_set_the_version_and_one_statement_captures_only_its_real_changes(
        checklist, committed_outbox, db_url):
    """The version trigger owns the column: a writer's own value is ignored (alone, it is no
    change; with a real change, the version still moves by exactly one). In a multi-row
    UPDATE, each row is judged on its own: only the rows whose stored values differ capture."""
    milk, bread = (checklist.items.get(text=t).pk for t in ("Milk", "Bread"))
    committed_outbox.mark()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE checklists_item SET version = 40 WHERE id = %s", (milk,))
        conn.execute("UPDATE checklists_item SET version = 40, done = NOT done WHERE id = %s", (milk,))
        conn.execute("UPDATE checklists_item SET text = CASE WHEN id = %s THEN 'Oat milk' ELSE text END"
                     " WHERE id IN (%s, %s)", (milk, milk, bread))
        versions = dict(conn.execute("SELECT id, version FROM checklists_item WHERE id IN (%s, %s)",
                                     (milk, bread)).fetchall())
    rows = committed_outbox.rows()
    assert [(r["entity_id"], r["op"], r["version"], r["changed"]) for r in rows] == [
        (str(milk), "update", 2, ["done"]), (str(milk), "update", 3, ["text"])]
    assert versions == {milk: 3, bread: 1}


# --- REST API -------------------------------------------------------------------------

def test_api_create_update_delete_commit(bob, checklist, client_for, committed_outbox):
    client = client_for(bob)
    committed_outbox.mark()
    item = client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Eggs"}, format="json").json()
    assert client.patch(f"/api/items/{item['id']}/", {"done": True}, format="json").status_code == 200
    assert client.delete(f"/api/items/{item['id']}/").status_code == 204
    rows = committed_outbox.rows()
    assert [(r["entity"], r["op"], r["version"]) for r in rows] == [("item", "insert", 1), ("item", "update", 2),
                                                                     ("item", "delete", 3)]
    assert {r["source"] for r in rows} == {"api"}
    assert all(r["actor"].startswith(f"user:{bob.pk}:token:") for r in rows)


def test_api_refused_write_rolls_back(bob, checklist, client_for, committed_outbox):
    client = client_for(bob)
    committed_outbox.mark()
    item = checklist.items.first()
    assert client.patch(f"/api/items/{item.pk}/", {"text": "new", "bogus": 1}, format="json").status_code == 400
    assert client.patch(f"/api/items/{item.pk}/", {"text": "new"}, format="json",
                        HTTP_IF_MATCH='"99"').status_code == 412
    assert committed_outbox.since() == []
    assert Item.objects.get(pk=item.pk).text == item.text


# --- admin ----------------------------------------------------------------------------

@pytest.fixture
def admin_client(make_user):
    make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    assert client.login(username="root", password="pw-root")
    return client


def test_admin_save(admin_client, checklist, committed_outbox, django_user_model):
    item = checklist.items.get(text="Milk")
    committed_outbox.mark()
    r = admin_client.post(
        f"/admin/checklists/item/{item.pk}/change/",
        {"checklist": checklist.pk, "text": "Whole milk", "done": "on", "position": 0},
        HTTP_X_REQUEST_ID="admin-req-1",
    )
    assert r.status_code == 302, r.content[:2000]
    assert r["X-Request-ID"] == "admin-req-1"
    [row] = committed_outbox.rows()
    root = django_user_model.objects.get(username="root")
    assert (row["entity"], row["op"], sorted(row["changed"])) == ("item", "update", ["done", "text"])
    assert (row["source"], row["actor"], row["request_id"]) == ("admin", f"user:{root.pk}", "admin-req-1")


def test_admin_add_checklist_adds_owner_membership(admin_client, alice, committed_outbox):
    committed_outbox.mark()
    data = {"title": "From admin", "owner": alice.pk}
    for prefix in ("memberships", "items"):
        data.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0,
                     f"{prefix}-MIN_NUM_FORMS": 0, f"{prefix}-MAX_NUM_FORMS": 1000})
    r = admin_client.post("/admin/checklists/checklist/add/", data)
    assert r.status_code == 302, r.content[:3000]
    c = Checklist.objects.get(title="From admin")
    assert Membership.objects.get(checklist=c).role == "owner"
    rows = committed_outbox.rows()
    assert [(r["entity"], r["op"]) for r in rows] == [("checklist", "insert"), ("membership", "insert")]
    assert {r["source"] for r in rows} == {"admin"}


def test_admin_invalid_form_writes_nothing(admin_client, checklist, committed_outbox):
    item = checklist.items.get(text="Milk")
    committed_outbox.mark()
    r = admin_client.post(f"/admin/checklists/item/{item.pk}/change/",
                          {"checklist": checklist.pk, "text": "", "position": "x"})
    assert r.status_code == 200  # the form again, with errors
    assert committed_outbox.since() == []


def test_admin_bulk_delete_action(admin_client, checklist, committed_outbox):
    committed_outbox.mark()
    r = admin_client.post("/admin/checklists/checklist/",
                          {"action": "delete_selected", "_selected_action": [checklist.pk], "post": "yes"})
    assert r.status_code == 302
    rows = committed_outbox.rows()
    assert sorted((r["entity"], r["op"]) for r in rows) == sorted(
        [("item", "delete")] * 2 + [("membership", "delete")] * 3 + [("checklist", "delete")])
    assert {r["source"] for r in rows} == {"admin"} and len({r["request_id"] for r in rows}) == 1


# --- management commands ---------------------------------------------------------------

def test_management_command_in_process_records_shell(committed_outbox):
    """The mechanism manage.py uses: a process default applied to each new connection."""
    committed_outbox.mark()
    connection.close()
    provenance.set_process_default(provenance.Provenance(actor="os:test:seed_demo", source="shell", request_id="r1"))
    try:
        call_command("seed_demo", stdout=io.StringIO())
    finally:
        provenance.set_process_default(None)
        connection.close()  # drop the connection that carries the shell default
    rows = committed_outbox.rows()
    assert sorted((r["entity"], r["op"]) for r in rows) == sorted(
        [("checklist", "insert")] + [("membership", "insert")] * 2 + [("item", "insert")] * 4)
    assert {(r["source"], r["actor"], r["request_id"]) for r in rows} == {("shell", "os:test:seed_demo", "r1")}
    committed_outbox.mark()
    call_command("seed_demo", stdout=io.StringIO())  # idempotent: nothing new
    assert committed_outbox.since() == []
    Item.objects.filter(text="Buy groceries").update(done=True)  # back to no provenance
    assert [r["source"] for r in committed_outbox.rows()] == ["sql"]


def test_manage_py_subprocess_records_shell(db_url, committed_outbox):
    committed_outbox.mark()
    env = {**os.environ, "DATABASE_URL": db_url}
    out = subprocess.run([sys.executable, "manage.py", "seed_demo"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "alice / alice-demo" in out.stdout and "admin / admin-demo" in out.stdout
    rows = committed_outbox.rows()
    assert len(rows) == 7
    assert {r["source"] for r in rows} == {"shell"}
    assert all(r["actor"].startswith("os:") and r["actor"].endswith(":seed_demo") for r in rows)
