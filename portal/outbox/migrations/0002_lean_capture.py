from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_baseline")]

    operations = [RunSQLFile("0002_lean_capture.sql")]
