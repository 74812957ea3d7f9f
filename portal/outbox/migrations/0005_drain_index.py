from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0004_relay_speed")]

    operations = [RunSQLFile("0005_drain_index.sql")]
