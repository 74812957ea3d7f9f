from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    # Trigger and schema changes only (op/source become domains over text: the models'
    # TextFields still describe them). run_before keeps one leaf: 0004 was written
    # against 0002 and does not depend on this file's changes, nor they on it.
    dependencies = [("outbox", "0002_relay")]
    run_before = [("outbox", "0004_relay_speed")]

    operations = [RunSQLFile("0003_lean_capture.sql")]
