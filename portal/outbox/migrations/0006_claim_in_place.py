from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0005_drain_index")]

    operations = [RunSQLFile("0006_claim_in_place.sql")]
