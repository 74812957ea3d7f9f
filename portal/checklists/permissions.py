"""Who may do what with a checklist: the one place the rules live.

The UI, the REST API and the sync-token endpoint all ask these functions. The sync
server has no copy of the rules: it verifies tokens the portal signed after asking
here, and at every subscribe asks the database through sync_grants(), this module's
can_watch() in SQL (portal/checklists/sql/schema.sql;
tests/portal/test_sync_grants.py proves the two agree).
"""
from __future__ import annotations

import re

from django.db.models import QuerySet

from .models import Checklist, Membership

WRITE_ROLES = (Membership.OWNER, Membership.EDITOR)
TOPIC_RE = re.compile(r"checklist:([1-9][0-9]{0,18})")
MAX_ID = 2**63 - 1  # bigint


def role_of(user, checklist: Checklist | int) -> str | None:
    if not getattr(user, "is_authenticated", False):
        return None
    checklist_id = checklist if isinstance(checklist, int) else checklist.pk
    return (
        Membership.objects.filter(checklist_id=checklist_id, user_id=user.pk).values_list("role", flat=True).first()
    )


def visible_checklists(user) -> QuerySet[Checklist]:
    """Checklists the user is a member of (only members see a checklist)."""
    if not getattr(user, "is_authenticated", False):
        return Checklist.objects.none()
    return Checklist.objects.filter(memberships__user_id=user.pk).distinct()


def can_view(user, checklist: Checklist | int) -> bool:
    return role_of(user, checklist) is not None


def can_edit(user, checklist: Checklist | int) -> bool:
    return role_of(user, checklist) in WRITE_ROLES


def can_manage(user, checklist: Checklist | int) -> bool:
    """Rename, delete and share: owners only."""
    return role_of(user, checklist) == Membership.OWNER


def checklist_of_topic(topic: object) -> int | None:
    """The checklist id of a sync topic "checklist:<id>" (canonical digits, in range), else None."""
    match = TOPIC_RE.fullmatch(topic) if isinstance(topic, str) else None
    if match is None:
        return None
    checklist_id = int(match.group(1))
    return checklist_id if checklist_id <= MAX_ID else None


def can_watch(user, topic: object) -> bool:
    """May the user watch this sync topic now: a member of checklist N watches "checklist:N"."""
    checklist_id = checklist_of_topic(topic)
    return checklist_id is not None and can_view(user, checklist_id)
