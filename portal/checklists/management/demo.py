"""The demo data `manage.py seed_demo` creates. Idempotent: a second run changes nothing
in the tracked tables (so it produces no outbox rows) and only resets the passwords."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from ..models import Checklist, Item, Membership

USERS = {"alice": "alice-demo", "bob": "bob-demo"}
ADMIN = ("admin", "admin-demo")
TITLE = "Weekend trip"
ITEMS = ["Book the cabin", "Pack sleeping bags", "Buy groceries", "Charge the camera"]


@transaction.atomic
def seed() -> dict[str, str]:
    """Create the demo users, superuser and shared checklist; returns username -> password."""
    User = get_user_model()
    users = {}
    for name, password in USERS.items():
        user, _ = User.objects.get_or_create(username=name, defaults={"email": f"{name}@example.com"})
        user.set_password(password)
        user.save(update_fields=["password"])
        users[name] = user
    admin_user, _ = User.objects.get_or_create(username=ADMIN[0], defaults={"email": "admin@example.com"})
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.set_password(ADMIN[1])
    admin_user.save()

    alice, bob = users["alice"], users["bob"]
    checklist = Checklist.objects.filter(title=TITLE, owner=alice).order_by("id").first()
    if checklist is None:
        checklist = Checklist.objects.create(title=TITLE, owner=alice)
    Membership.objects.get_or_create(checklist=checklist, user=alice, defaults={"role": Membership.OWNER})
    Membership.objects.get_or_create(checklist=checklist, user=bob, defaults={"role": Membership.EDITOR})
    for position, text in enumerate(ITEMS):
        Item.objects.get_or_create(checklist=checklist, text=text, defaults={"position": position})
    return {**USERS, ADMIN[0]: ADMIN[1]}
