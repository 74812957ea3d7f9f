"""Read-side models of the outbox tables.

The tables themselves are created by migrations/*.sql (the source of truth); these
models exist so the admin can browse them and so Django's test runner truncates the
outbox between tests. Never change a table by editing a model: add a .sql file.
"""
from django.contrib.postgres.fields import ArrayField
from django.db import models


class OutboxEvent(models.Model):
    OPS = [("insert", "insert"), ("update", "update"), ("delete", "delete"), ("event", "event")]
    SOURCES = [("api", "api"), ("ui", "ui"), ("admin", "admin"), ("shell", "shell"), ("sql", "sql")]

    id = models.BigAutoField(primary_key=True)
    # xid8 in the database; Django only reads it, as text.
    txid = models.TextField(editable=False)
    topic = models.TextField()
    entity = models.TextField()
    entity_id = models.TextField()
    op = models.TextField(choices=OPS)
    data = models.JSONField()
    changed = ArrayField(models.TextField(), default=list)
    version = models.BigIntegerField(null=True)
    actor = models.TextField(null=True)
    source = models.TextField(choices=SOURCES, default="sql")
    request_id = models.TextField(null=True)
    created_at = models.DateTimeField()
    pos = models.BigIntegerField(null=True, unique=True)
    tpos = models.BigIntegerField(null=True)
    tx_last = models.BooleanField(null=True)
    sequenced_at = models.DateTimeField(null=True)
    error = models.TextField(null=True)

    class Meta:
        db_table = "outbox"
        ordering = ["-id"]
        verbose_name = "outbox event"
        # Row contents (item texts, who wrote, request ids) of every checklist: more than
        # view_outboxevent (positions, topics, status) grants. Superusers have it.
        permissions = [("view_outbox_payload", "Can view outbox event payloads (data, changed, actor, request id)")]

    def __str__(self) -> str:
        return f"#{self.id} {self.op} {self.entity}:{self.entity_id} on {self.topic}"


class OutboxTopic(models.Model):
    topic = models.TextField(primary_key=True)
    tpos = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "outbox_topic"


class RelayState(models.Model):
    id = models.IntegerField(primary_key=True)
    last_pos = models.BigIntegerField()
    published_pos = models.BigIntegerField()
    leader = models.TextField(null=True)
    leader_since = models.DateTimeField(null=True)
    heartbeat_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "outbox_relay_state"
