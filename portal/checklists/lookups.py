"""The reads on every API write's path, as plain SQL: a user's role together with the row
it guards, locked, in one statement.

Why not the ORM: building and compiling these querysets cost 0.5-0.8 ms of CPU per request
(measured: more than a third of a create's Python time besides the driver), for statements
whose text never changes. The rule itself (a member's role decides; permissions.py says
what each role may do) is unchanged; tests/portal/test_api_queries.py pins the statements.
"""
from __future__ import annotations

from django.db import connection

from .models import Item

# FOR NO KEY UPDATE: it conflicts with itself and with services._lock's FOR UPDATE (all that
# adds need to serialize), not with the KEY SHARE lock another transaction's foreign-key
# check takes on this list (an item moved here meanwhile: no deadlock). Joined with the
# membership, so a non-member locks nothing.
_ROLE_LOCKING_CHECKLIST = """
SELECT m.role, c.version
  FROM checklists_checklist c
  JOIN checklists_membership m ON m.checklist_id = c.id AND m.user_id = %s
 WHERE c.id = %s
   FOR NO KEY UPDATE OF c
"""

_ITEM_WITH_ROLE = """
SELECT i.id, i.checklist_id, i.text, i.done, i.position, i.version,
       (SELECT m.role FROM checklists_membership m WHERE m.checklist_id = i.checklist_id AND m.user_id = %s)
  FROM checklists_item i
 WHERE i.id = %s
"""
_ITEM_FIELDS = ("id", "checklist_id", "text", "done", "position", "version")


def role_locking_checklist(checklist_id: int, user_id: int) -> tuple[str, int] | None:
    """(the user's role, the checklist's version) with the checklist's row locked, or None
    (no such checklist, or the user is not a member: then nothing is locked)."""
    with connection.cursor() as cur:
        cur.execute(_ROLE_LOCKING_CHECKLIST, [user_id, checklist_id])
        row = cur.fetchone()
    return None if row is None else (row[0], row[1])


def item_with_role(item_id: int, user_id: int, *, lock: bool = False) -> tuple[Item, str | None] | None:
    """The item and the user's role in its checklist (None: not a member), or None if there
    is no such item. lock=True: the item's row is locked (FOR UPDATE) for the transaction."""
    with connection.cursor() as cur:
        cur.execute(_ITEM_WITH_ROLE + (" FOR UPDATE OF i" if lock else ""), [user_id, item_id])
        row = cur.fetchone()
    if row is None:
        return None
    values = dict(zip(_ITEM_FIELDS, row))
    # from_db takes the values in the model's field order (the query's order need not be it).
    attnames = [f.attname for f in Item._meta.concrete_fields]
    return Item.from_db(connection.alias, attnames, [values[name] for name in attnames]), row[6]
