"""Every write of the checklist domain, in one place: the web UI (web/views.py) and the REST
API (api/views.py) both call these, so a rule of the domain (where a new item goes, who
becomes owner, what a membership change may touch) is written once.

Callers have checked permissions (permissions.py) and validated input, and run each call
inside their request's transaction. Every function returns the written row with the
version the database trigger gave it (the ETag, and what the page compares events with).
Capture needs nothing here: the triggers record every write, whoever makes it.
"""
from __future__ import annotations

from django.db import connection

from .models import Checklist, Item, Membership
from .ordering import position_changes, reorder

POSITION_MAX = 2**31 - 1  # Item.position is a PostgreSQL integer


class AlreadyMember(ValueError):
    """The user is a member of the checklist already (change the role instead)."""


def _lock(checklist: Checklist) -> None:
    """Serialize writes that read the list before writing to it (adds, reorders, shares):
    two of them at once must not both take the same last position."""
    Checklist.objects.select_for_update().filter(pk=checklist.pk).values_list("pk").first()


def _fresh(row):
    row.refresh_from_db(fields=["version"])
    return row


# --- checklists -----------------------------------------------------------------------

def create_checklist(owner, title: str) -> Checklist:
    """A new checklist; its creator is its owner (a membership, in the same transaction)."""
    checklist = Checklist.objects.create(title=title, owner=owner)
    Membership.objects.create(checklist=checklist, user=owner, role=Membership.OWNER)
    return _fresh(checklist)


def rename_checklist(checklist: Checklist, title: str) -> Checklist:
    checklist.title = title
    checklist.save(update_fields=["title"])
    return _fresh(checklist)


def delete_checklist(checklist: Checklist) -> None:
    """With its items and memberships (cascade): every member's live view ends."""
    checklist.delete()


# --- items ----------------------------------------------------------------------------

# One statement per new item: the position (last unless given), the row, and what the
# database decided (id, position, version: the version column's default) come back together.
# bigint arithmetic: the largest position plus one must not overflow an integer.
# Positional parameters (psycopg reorders named ones at a cost that shows in a batch).
_INSERT_ITEM = """
INSERT INTO checklists_item (checklist_id, text, done, position)
VALUES (%s, %s, %s, COALESCE(%s,
        (SELECT LEAST(COALESCE(MAX(position)::bigint + 1, 0), %s) FROM checklists_item WHERE checklist_id = %s)))
RETURNING id, position, version
"""


def _item_row(checklist_id: int, text: str, done: bool, position: int | None) -> list:
    return [checklist_id, text, done, position, POSITION_MAX, checklist_id]


def _loaded_item(**fields) -> Item:
    """An Item built from values the database returned, marked as loaded (a later save()
    updates it rather than inserting)."""
    item = Item(**fields)
    item._state.adding, item._state.db = False, connection.alias
    return item


def _built_item(checklist_id: int, text: str, done: bool, returned) -> Item:
    pk, position, version = returned
    return _loaded_item(id=pk, checklist_id=checklist_id, text=text, done=done, position=position, version=version)


def add_item(checklist: Checklist, text: str, *, done: bool = False, position: int | None = None,
             locked: bool = False) -> Item:
    """A new item; without a position it goes last (after the largest position, or at the
    largest possible one, where ties go by id: still last). locked=True: the caller holds
    the checklist's row lock already."""
    if not locked:
        _lock(checklist)
    with connection.cursor() as cur:
        cur.execute(_INSERT_ITEM, _item_row(checklist.pk, text, done, position))
        return _built_item(checklist.pk, text, done, cur.fetchone())


# An update of the fields a batch entry gives (NULL: keep). The version trigger keeps the
# version of an update that changes nothing, so a no-op entry captures no event.
_UPDATE_ITEM = """
UPDATE checklists_item SET text = COALESCE(%s, text), done = COALESCE(%s, done), position = COALESCE(%s, position)
 WHERE id = %s
RETURNING version
"""


def write_items(checklist: Checklist, entries: list[dict], current: dict[int, Item]) -> list[Item]:
    """A batch of writes to one checklist, in order, in the caller's transaction: an entry
    with an "id" updates that item (one of `current`: items of this checklist the caller
    has locked), one without adds an item as add_item would (each new item without a
    position goes after everything before it, earlier entries included). The caller holds
    the checklist's lock. Returns the items as written, in the entries' order.

    One statement per entry, in order (so the capture triggers write one outbox row per
    entry, in the entries' order), sent as one pipeline: a round trip for the whole batch,
    not one per entry."""
    if not entries:
        return []
    connection.ensure_connection()
    cursors = []
    try:
        with connection.connection.pipeline():
            for entry in entries:
                cur = connection.cursor()
                cursors.append(cur)
                if "id" in entry:
                    cur.execute(_UPDATE_ITEM, [entry.get("text"), entry.get("done"), entry.get("position"), entry["id"]])
                else:
                    cur.execute(_INSERT_ITEM, _item_row(checklist.pk, entry["text"], entry.get("done", False),
                                                        entry.get("position")))
        returned = [cur.fetchone() for cur in cursors]
    finally:
        for cur in cursors:
            cur.close()
    items = []
    for entry, row in zip(entries, returned):
        if "id" in entry:
            item = current[entry["id"]]
            for name in ("text", "done", "position"):
                if name in entry:
                    setattr(item, name, entry[name])
            item.version = row[0]
            # A later entry may name the same item: it starts from this state. (The view
            # refuses repeated ids, but this stays true without that rule.)
            items.append(_loaded_item(id=item.pk, checklist_id=item.checklist_id, text=item.text, done=item.done,
                                      position=item.position, version=item.version))
        else:
            items.append(_built_item(checklist.pk, entry["text"], entry.get("done", False), row))
    return items


_UPDATABLE = {"text": "text", "done": "done", "position": "position", "checklist_id": "checklist_id"}


def update_item(item: Item, *, text: str | None = None, done: bool | None = None, position: int | None = None,
                checklist_id: int | None = None) -> Item:
    """Change the given fields of a locked item. A new checklist_id moves it to that list
    (the caller checked the user may edit both): its viewers see a delete on the old
    list's topic and an insert on the new one. The version the trigger gives the row comes
    back with the UPDATE (RETURNING): no second read."""
    fields = {"text": text, "done": done, "position": position, "checklist_id": checklist_id}
    changed = [name for name, value in fields.items() if value is not None]
    if not changed:
        return _fresh(item)
    for name in changed:
        setattr(item, name, fields[name])
    sets = ", ".join(f'"{_UPDATABLE[name]}" = %s' for name in changed)
    with connection.cursor() as cur:
        cur.execute(f"UPDATE checklists_item SET {sets} WHERE id = %s RETURNING version",
                    [fields[name] for name in changed] + [item.pk])
        row = cur.fetchone()
    if row is None:
        raise Item.DoesNotExist(f"item {item.pk} no longer exists")
    item.version = row[0]
    return item


def move_item(checklist: Checklist, item_id: int, *, direction: str | None = None,
              index: int | None = None) -> list[Item]:
    """Move an item up or down, or to an index, renumbering only the rows whose position
    changes; returns those rows in their new order."""
    _lock(checklist)
    items = list(checklist.items.select_for_update().order_by("position", "id"))
    order = reorder([i.pk for i in items], item_id, direction=direction, index=index)
    changes = position_changes({i.pk: i.position for i in items}, order)
    for changed_id, position in changes.items():
        Item.objects.filter(pk=changed_id).update(position=position)
    return list(Item.objects.filter(pk__in=list(changes)).order_by("position", "id"))


def delete_item(item: Item) -> int:
    """Delete a locked item; returns the version its delete event carries (the trigger
    records a delete as one more version of the row)."""
    version = item.version + 1
    item.delete()
    return version


# --- members --------------------------------------------------------------------------

def share(checklist: Checklist, user, role: str) -> Membership:
    """Make a user a member (editor or viewer); AlreadyMember if they are one."""
    _lock(checklist)
    if Membership.objects.filter(checklist=checklist, user=user).exists():
        raise AlreadyMember(f"{user.get_username()} is already a member")
    return _fresh(Membership.objects.create(checklist=checklist, user=user, role=role))


def change_role(membership: Membership, role: str) -> Membership:
    membership.role = role
    membership.save(update_fields=["role"])
    return _fresh(membership)


def remove_member(membership: Membership) -> None:
    """End a membership: the member's live subscriptions to the list end at once."""
    membership.delete()
