from django.db import migrations

from portal.outbox.sqlfiles import ApplyStep


class Migration(migrations.Migration):
    """Cheaper update capture (migrations/0002_cheaper_update_capture.sql)."""

    dependencies = [("outbox", "0002_sync_presence")]

    operations = [ApplyStep("outbox", 2, "0002_cheaper_update_capture.sql")]
