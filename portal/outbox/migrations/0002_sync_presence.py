from django.db import migrations

from portal.outbox.sqlfiles import ApplyStep


class Migration(migrations.Migration):
    """Presence across sync servers (migrations/0001_sync_presence.sql)."""

    dependencies = [("outbox", "0001_schema")]

    operations = [ApplyStep("outbox", 1, "0001_sync_presence.sql")]
