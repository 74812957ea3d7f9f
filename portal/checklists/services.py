"""Every write of the checklist domain, in one place: the web UI (web/views.py) and the REST
API (api/views.py) both call these, so a rule of the domain (where a new item goes, who
becomes owner, what a membership change may touch) is written once.

Callers have checked permissions (permissions.py) and validated input, and run each call
inside their request's transaction. Every function returns the written row with the
version the database trigger gave it (the ETag, and what the page compares events with).
Capture needs nothing here: the triggers record every write, whoever makes it.
"""
from __future__ import annotations

from django.db.models import Max

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

def add_item(checklist: Checklist, text: str, *, done: bool = False, position: int | None = None) -> Item:
    """A new item; without a position it goes last (after the largest position, or at the
    largest possible one, where ties go by id: still last)."""
    _lock(checklist)
    if position is None:
        last = checklist.items.aggregate(m=Max("position"))["m"]
        position = 0 if last is None else min(last + 1, POSITION_MAX)
    return _fresh(Item.objects.create(checklist=checklist, text=text, done=done, position=position))


def update_item(item: Item, *, text: str | None = None, done: bool | None = None, position: int | None = None,
                checklist_id: int | None = None) -> Item:
    """Change the given fields of a locked item. A new checklist_id moves it to that list
    (the caller checked the user may edit both): its viewers see a delete on the old
    list's topic and an insert on the new one."""
    fields = {"text": text, "done": done, "position": position, "checklist_id": checklist_id}
    changed = [name for name, value in fields.items() if value is not None]
    for name in changed:
        setattr(item, name, fields[name])
    if changed:
        item.save(update_fields=changed)
    return _fresh(item)


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
