from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_outbox")]

    operations = [RunSQLFile("0002_relay.sql")]
