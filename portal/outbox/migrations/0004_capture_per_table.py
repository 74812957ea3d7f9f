from django.db import migrations

from portal.outbox.sqlfiles import ApplyStep


class Migration(migrations.Migration):
    """Capture compiled per tracked table (migrations/0003_capture_per_table.sql)."""

    dependencies = [("outbox", "0003_cheaper_update_capture")]

    operations = [ApplyStep("outbox", 3, "0003_capture_per_table.sql")]
