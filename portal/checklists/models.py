"""The Cloud Checklist domain: checklists, their members and their items.

Every table here is tracked by the outbox capture triggers (see migration 0001): each
row carries a `version` the trigger owns, and every write produces an outbox row on
the topic `checklist:<id>` in the same transaction.
"""
from django.conf import settings
from django.db import models

TEXT_MAX = 500
TITLE_MAX = 200


def checklist_topic(checklist_id: int) -> str:
    return f"checklist:{checklist_id}"


class Checklist(models.Model):
    title = models.CharField(max_length=TITLE_MAX)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_checklists")
    created_at = models.DateTimeField(auto_now_add=True)
    # Owned by the database trigger; Django never decides it.
    version = models.BigIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["title", "id"]

    def __str__(self) -> str:
        return self.title

    @property
    def topic(self) -> str:
        return checklist_topic(self.pk)


class Membership(models.Model):
    OWNER, EDITOR, VIEWER = "owner", "editor", "viewer"
    ROLES = [(OWNER, "Owner"), (EDITOR, "Editor"), (VIEWER, "Viewer")]

    checklist = models.ForeignKey(Checklist, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=ROLES, default=EDITOR)
    version = models.BigIntegerField(default=1, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["checklist", "user"], name="one_membership_per_user")]
        ordering = ["checklist_id", "user_id"]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.checklist}"


class Item(models.Model):
    checklist = models.ForeignKey(Checklist, on_delete=models.CASCADE, related_name="items")
    text = models.CharField(max_length=TEXT_MAX)
    done = models.BooleanField(default=False)
    position = models.IntegerField(default=0)
    version = models.BigIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["position", "id"]
        # A list's items in their order, and its last position (where a new item goes:
        # services.add_item reads MAX(position) at every add, which without this index
        # reads every item of the list).
        indexes = [models.Index(fields=["checklist", "position", "id"], name="item_checklist_position")]

    def __str__(self) -> str:
        return self.text
