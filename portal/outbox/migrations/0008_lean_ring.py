from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0007_claim_plans")]

    operations = [RunSQLFile("0008_lean_ring.sql")]
