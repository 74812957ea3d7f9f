from django.contrib.postgres.fields import ArrayField
from django.db import migrations, models

from portal.outbox.sqlfiles import RunSQLFile, refuse_an_earlier_history


class Migration(migrations.Migration):
    """The outbox schema, built from migrations/schema.sql; the models only describe it."""

    initial = True
    dependencies = []

    operations = [
        migrations.RunPython(refuse_an_earlier_history, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            database_operations=[RunSQLFile("schema.sql")],
            state_operations=[
                migrations.CreateModel(
                    name="OutboxEvent",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("txid", models.TextField(editable=False)),
                        ("topic", models.TextField()),
                        ("entity", models.TextField()),
                        ("entity_id", models.TextField()),
                        ("op", models.TextField(choices=[("insert", "insert"), ("update", "update"), ("delete", "delete"), ("event", "event")])),
                        ("data", models.JSONField()),
                        ("changed", ArrayField(models.TextField(), default=list)),
                        ("version", models.BigIntegerField(null=True)),
                        ("actor", models.TextField(null=True)),
                        ("source", models.TextField(choices=[("api", "api"), ("ui", "ui"), ("admin", "admin"), ("shell", "shell"), ("sql", "sql")], default="sql")),
                        ("request_id", models.TextField(null=True)),
                        ("created_at", models.DateTimeField()),
                        ("pos", models.BigIntegerField(null=True, unique=True)),
                        ("tpos", models.BigIntegerField(null=True)),
                        ("tx_last", models.BooleanField(null=True)),
                        ("sequenced_at", models.DateTimeField(null=True)),
                        ("error", models.TextField(null=True)),
                    ],
                    options={
                        "db_table": "outbox",
                        "ordering": ["-id"],
                        "verbose_name": "outbox event",
                        "permissions": [("view_outbox_payload",
                                         "Can view outbox event payloads (data, changed, actor, request id)")],
                    },
                ),
                migrations.CreateModel(
                    name="OutboxTopic",
                    fields=[("topic", models.TextField(primary_key=True, serialize=False)), ("tpos", models.BigIntegerField())],
                    options={"db_table": "outbox_topic", "managed": False},
                ),
                migrations.CreateModel(
                    name="RelayState",
                    fields=[
                        ("id", models.IntegerField(primary_key=True, serialize=False)),
                        ("last_pos", models.BigIntegerField()),
                        ("published_pos", models.BigIntegerField()),
                        ("leader", models.TextField(null=True)),
                        ("leader_since", models.DateTimeField(null=True)),
                        ("heartbeat_at", models.DateTimeField(null=True)),
                    ],
                    options={"db_table": "outbox_relay_state", "managed": False},
                ),
            ],
        ),
    ]
