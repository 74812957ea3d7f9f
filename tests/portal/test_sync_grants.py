"""sync_grants(): the sync server's authority, in SQL (portal/checklists/sql/schema.sql).

Who: it must agree with the portal's Python rule (permissions.can_watch) on any
memberships and any topics, odd ones included (a Hypothesis property against that
model). From where: the history floor, the last tpos before the transaction that began
the user's current membership of the list, through real captured writes and sequencing.
"""
from __future__ import annotations

import psycopg
import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings, strategies as st

from portal.checklists import permissions
from portal.checklists.models import Checklist, Membership

USERS, LISTS = 3, 3
ODD_TOPICS = ["checklist:0", "checklist:01", "checklist:-1", "checklist:1 ", " checklist:1", "checklist:1\n",
              "checklist:", "checklist", "Checklist:1", "item:1", "checklist:1.0", "checklist:١", "",
              "checklist:9223372036854775807", "checklist:9223372036854775808", "checklist:99999999999999999999",
              "checklist:1:2", "_heartbeat", "checklist:%", "checklist:1' OR '1'='1"]


def sql_grants(user_id: int, topics: list[str]) -> dict[str, int | None]:
    with connection.cursor() as cur:
        cur.execute("SELECT topic, floor FROM sync_grants(%s, %s)", [user_id, topics])
        return dict(cur.fetchall())


@pytest.fixture
def world(django_user_model):
    users = [django_user_model.objects.create_user(f"u{i}") for i in range(USERS)]
    lists = [Checklist.objects.create(title=f"l{i}", owner=users[0]) for i in range(LISTS)]
    return users, lists


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sql_rule_agrees_with_permissions_can_watch(world, data):
    users, lists = world
    pairs = [(u, c) for u in range(USERS) for c in range(LISTS)]
    members = data.draw(st.sets(st.sampled_from(pairs)), label="memberships")
    real = [lists[c].topic for c in range(LISTS)]
    missing = [f"checklist:{lists[-1].pk + 1000 + i}" for i in range(2)]
    # Any text the sync server passes on (its protocol refuses NUL and lone surrogates,
    # which PostgreSQL cannot take: tests/syncserver/test_units.py).
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
    topics = data.draw(st.lists(st.one_of(st.sampled_from(real + missing + ODD_TOPICS), text), max_size=12),
                       label="topics")
    who = data.draw(st.integers(0, USERS - 1), label="user")
    with transaction.atomic():
        Membership.objects.filter(checklist__in=lists).delete()
        for u, c in members:
            Membership.objects.create(checklist=lists[c], user=users[u], role=Membership.EDITOR)
        expected = {t for t in topics if permissions.can_watch(users[who], t)}
        assert set(sql_grants(users[who].pk, topics)) == expected
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_topic_that_is_no_bigint_is_no_error(world):
    users, lists = world
    Membership.objects.create(checklist=lists[0], user=users[1], role=Membership.VIEWER)
    assert set(sql_grants(users[1].pk, ["checklist:99999999999999999999", lists[0].topic, "x"])) == {lists[0].topic}
    assert permissions.checklist_of_topic("checklist:9223372036854775808") is None


# -- the history floor, through committed writes -------------------------------------------

class Db:
    """Committed SQL writes (captured by the triggers, one transaction each unless told),
    a relay-like sequencing of what they captured, and sync_grants() as the sync server calls it."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url, autocommit=True)

    def one(self, sql: str, *params):
        return self.conn.execute(sql, params).fetchone()

    def user(self, name: str) -> int:
        return self.one("INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
                        " is_staff, is_active, date_joined) VALUES ('!', false, %s, '', '', '', false, true, now())"
                        " RETURNING id", name)[0]

    def new_list(self, owner: int) -> int:
        """A list and its owner's membership in one transaction, as the portal makes them."""
        with self.conn.transaction():
            cid = self.one("INSERT INTO checklists_checklist (title, owner_id, created_at, version)"
                           " VALUES ('l', %s, now(), 1) RETURNING id", owner)[0]
            self.join(cid, owner)
        return cid

    def join(self, cid: int, user: int) -> int:
        return self.one("INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                        " VALUES (%s, %s, 'editor', 1) RETURNING id", cid, user)[0]

    def item(self, cid: int) -> None:
        self.one("INSERT INTO checklists_item (checklist_id, text, done, position, version)"
                 " VALUES (%s, 'x', false, 0, 1) RETURNING id", cid)

    def sequence(self) -> None:
        """Positions as the relay's claim gives them: transactions in order of their last row."""
        with self.conn.transaction():
            rows = self.conn.execute("SELECT id, topic, txid::text FROM outbox WHERE pos IS NULL ORDER BY id").fetchall()
            last = {tx: rid for rid, _t, tx in rows}
            pos = self.one("SELECT last_pos FROM outbox_relay_state WHERE id = 1 FOR UPDATE")[0]
            for rid, topic, _tx in sorted(rows, key=lambda r: (last[r[2]], r[0])):
                pos += 1
                tpos = self.one("INSERT INTO outbox_topic (topic, tpos) VALUES (%s, 1) ON CONFLICT (topic)"
                                " DO UPDATE SET tpos = outbox_topic.tpos + 1 RETURNING tpos", topic)[0]
                self.conn.execute("UPDATE outbox SET pos = %s, tpos = %s WHERE id = %s", (pos, tpos, rid))
            self.conn.execute("UPDATE outbox_relay_state SET last_pos = %s WHERE id = 1", (pos,))

    def tpos(self, cid: int) -> int:
        row = self.one("SELECT tpos FROM outbox_topic WHERE topic = %s", f"checklist:{cid}")
        return row[0] if row else 0

    def floor(self, user: int, cid: int) -> int | None | str:
        """The floor, or "denied" when the user may not watch the list."""
        row = self.one("SELECT floor FROM sync_grants(%s, %s)", user, [f"checklist:{cid}"])
        return "denied" if row is None else row[0]


@pytest.fixture
def sqldb(db_url):
    d = Db(db_url)
    yield d
    d.conn.close()


def test_the_floor_is_where_the_membership_began(sqldb):
    alice, bob = sqldb.user("alice"), sqldb.user("bob")
    cid = sqldb.new_list(alice)
    sqldb.item(cid)
    assert sqldb.floor(alice, cid) is None  # its event is not sequenced yet: unknown
    sqldb.sequence()
    assert sqldb.floor(alice, cid) == 0  # the list's own insert was in her membership's transaction
    assert sqldb.floor(bob, cid) == "denied"
    sqldb.item(cid)
    sqldb.join(cid, bob)
    assert sqldb.floor(bob, cid) is None
    sqldb.sequence()
    assert sqldb.tpos(cid) == 5 and sqldb.floor(bob, cid) == 4
    sqldb.item(cid)
    sqldb.sequence()
    assert sqldb.floor(bob, cid) == 4  # later writes do not move it


def test_rejoining_moves_the_floor_and_a_pruned_start_is_zero(sqldb):
    alice, bob = sqldb.user("alice"), sqldb.user("bob")
    cid = sqldb.new_list(alice)
    sqldb.join(cid, bob)
    sqldb.sequence()
    assert sqldb.floor(bob, cid) == 2
    sqldb.conn.execute("DELETE FROM checklists_membership WHERE checklist_id = %s AND user_id = %s", (cid, bob))
    sqldb.item(cid)
    assert sqldb.floor(bob, cid) == "denied"
    sqldb.join(cid, bob)
    sqldb.sequence()
    assert sqldb.floor(bob, cid) == 5  # removal 4, item 5, rejoin 6
    # Retention pruned the rejoin's event: the floor is 0 (a resume from before what is
    # left in the outbox is answered resync anyway).
    sqldb.conn.execute("DELETE FROM outbox WHERE topic = %s AND tpos <= 6", (f"checklist:{cid}",))
    assert sqldb.floor(bob, cid) == 0


def test_a_membership_moved_or_given_to_another_user_begins_again(sqldb):
    alice, bob, carol = sqldb.user("alice"), sqldb.user("bob"), sqldb.user("carol")
    a, b = sqldb.new_list(alice), sqldb.new_list(alice)
    mid = sqldb.join(a, bob)
    sqldb.item(b)
    sqldb.item(b)
    sqldb.sequence()
    sqldb.conn.execute("UPDATE checklists_membership SET checklist_id = %s WHERE id = %s", (b, mid))
    sqldb.sequence()
    assert sqldb.floor(bob, a) == "denied"
    assert sqldb.floor(bob, b) == sqldb.tpos(b) - 1 == 4
    sqldb.conn.execute("UPDATE checklists_membership SET role = 'viewer' WHERE id = %s", (mid,))
    sqldb.sequence()
    assert sqldb.floor(bob, b) == 4  # a role change is the same membership
    sqldb.conn.execute("UPDATE checklists_membership SET user_id = %s WHERE id = %s", (carol, mid))
    sqldb.sequence()
    assert sqldb.floor(carol, b) == sqldb.tpos(b) - 1 == 6
    assert sqldb.floor(bob, b) == "denied"


def test_one_statement_inserting_several_memberships_records_each_ones_event(sqldb):
    alice, bob, carol = sqldb.user("alice"), sqldb.user("bob"), sqldb.user("carol")
    cid = sqldb.new_list(alice)
    sqldb.sequence()
    with sqldb.conn.transaction():
        sqldb.item(cid)
        sqldb.conn.execute("INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                           " VALUES (%s, %s, 'editor', 1), (%s, %s, 'viewer', 1)", (cid, bob, cid, carol))
    sqldb.sequence()
    starts = sqldb.conn.execute(
        "SELECT m.user_id, o.entity, o.entity_id = m.id::text, o.tpos FROM checklists_membership m"
        " JOIN sync_membership_start s ON s.membership_id = m.id JOIN outbox o ON o.id = s.outbox_id"
        " WHERE m.checklist_id = %s ORDER BY o.tpos", (cid,)).fetchall()
    assert starts == [(alice, "membership", True, 2), (bob, "membership", True, 4), (carol, "membership", True, 5)]
    assert sqldb.floor(bob, cid) == sqldb.floor(carol, cid) == 2  # both began with that transaction


def test_a_membership_written_without_capture_is_recorded_without_an_event(db_url, sqldb):
    alice, bob = sqldb.user("alice"), sqldb.user("bob")
    cid = sqldb.new_list(alice)
    sqldb.sequence()
    # A fresh session that never wrote to the outbox (no currval), capture switched off.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE checklists_membership DISABLE TRIGGER outbox_capture_insert")
        try:
            conn.execute("INSERT INTO checklists_membership (checklist_id, user_id, role, version)"
                         " VALUES (%s, %s, 'editor', 1)", (cid, bob))
        finally:
            conn.execute("ALTER TABLE checklists_membership ENABLE TRIGGER outbox_capture_insert")
    assert sqldb.one("SELECT s.outbox_id FROM sync_membership_start s JOIN checklists_membership m"
                     " ON m.id = s.membership_id WHERE m.user_id = %s", bob) == (None,)
    assert sqldb.floor(bob, cid) == 0
