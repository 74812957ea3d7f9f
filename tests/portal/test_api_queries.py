"""How many SQL statements an API write costs: pinned, so a change that adds a round trip
to the hot path (an extra permission lookup, a re-read of the version, a savepoint,
provenance set and cleared around the transaction) fails here rather than only in the bench.

Counted as deployed (transaction=True: the request's own BEGIN and COMMIT, no test
transaction around it), with a token whose last_used_at is fresh (one request first).
Not a timing test.
"""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.checklists.models import Item
from portal.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


def statements(ctx: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split()[0].upper() for q in ctx.captured_queries]


@pytest.fixture
def bob_client(client_for, bob, checklist):
    client = client_for(bob)
    assert client.get(f"/api/items/{checklist.items.first().pk}/").status_code == 200  # last_used_at now fresh
    return client


def test_item_create_costs_five_statements(bob_client, checklist, bob):
    with CaptureQueriesContext(connection) as ctx:
        r = bob_client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Tea"}, format="json")
    assert r.status_code == 201, r.content
    # BEGIN, the token with its user (stating the provenance), the list's lock with bob's
    # role, the INSERT (position and version returned), COMMIT.
    assert statements(ctx) == ["BEGIN", "SELECT", "SELECT", "INSERT", "COMMIT"], ctx.captured_queries
    row = OutboxEvent.objects.order_by("-id").first()
    assert (row.op, row.source, row.actor) == ("insert", "api", f"user:{bob.pk}:token:{bob.api_tokens.get().pk}")
    assert r.json()["position"] == 2 and r.json()["version"] == 1


def test_item_edit_costs_five_statements(bob_client, checklist):
    item = checklist.items.first()
    with CaptureQueriesContext(connection) as ctx:
        r = bob_client.patch(f"/api/items/{item.pk}/", {"done": True}, format="json", HTTP_IF_MATCH='"1"')
    assert r.status_code == 200, r.content
    # BEGIN, token and provenance, the item locked with bob's role, UPDATE ... RETURNING version, COMMIT.
    assert statements(ctx) == ["BEGIN", "SELECT", "SELECT", "UPDATE", "COMMIT"], ctx.captured_queries
    assert r["ETag"] == '"2"' and Item.objects.get(pk=item.pk).version == 2


def test_refused_create_writes_nothing_and_costs_no_more(bob_client, checklist, carol, client_for):
    """A viewer's create: refused by the same single lookup, rolled back."""
    viewer = client_for(carol)
    viewer.get(f"/api/items/{checklist.items.first().pk}/")
    before = OutboxEvent.objects.count()
    with CaptureQueriesContext(connection) as ctx:
        r = viewer.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Tea"}, format="json")
    assert r.status_code == 403
    assert statements(ctx) == ["BEGIN", "SELECT", "SELECT", "ROLLBACK"], ctx.captured_queries
    assert OutboxEvent.objects.count() == before


def test_session_authenticated_create_states_provenance_apart(checklist, bob):
    """A browser session's API write: the session and user lookups, then provenance."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(bob)
    with CaptureQueriesContext(connection) as ctx:
        r = client.post(f"/api/checklists/{checklist.pk}/items/", {"text": "Tea"}, format="json")
    assert r.status_code == 201
    sql = [q["sql"] for q in ctx.captured_queries]
    assert sum("set_config('outbox.actor'" in q for q in sql) == 1, sql
    row = OutboxEvent.objects.order_by("-id").first()
    assert (row.source, row.actor) == ("api", f"user:{bob.pk}")



@pytest.mark.parametrize("method, path", [
    ("get", "/api/items/{big}/"), ("patch", "/api/items/{big}/"), ("delete", "/api/items/{big}/"),
    ("post", "/api/checklists/{big}/items/"), ("post", "/api/checklists/{big}/items/batch/"),
])
def test_plain_sql_lookups_answer_out_of_range_ids_with_404(bob_client, method, path):
    """The hot lookups are plain SQL (portal/checklists/lookups.py): an id beyond bigint
    matches nothing there too, as it did through the ORM (never a 500)."""
    body = {"items": [{"text": "x"}]} if path.endswith("batch/") else {"text": "x", "done": True}
    for big in (2**63, 10**30):
        r = getattr(bob_client, method)(path.format(big=big), body, format="json")
        assert r.status_code == 404, (big, r.content)
