from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    # Written against 0002; 0003_lean_capture declares run_before this one, so the graph
    # keeps one leaf and the SQL files run in file-name order, as bench/ applies them.
    dependencies = [("outbox", "0002_relay")]

    operations = [RunSQLFile("0004_relay_speed.sql")]
