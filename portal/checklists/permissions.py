"""Who may do what with a checklist: the one place the rules live.

The UI, the REST API and the sync-token endpoint all ask these functions; the sync
server has no copy of the rules, it trusts tokens the portal signed after asking here.
"""
from __future__ import annotations

from django.db.models import QuerySet

from .models import Checklist, Membership

WRITE_ROLES = (Membership.OWNER, Membership.EDITOR)


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
