from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0006_claim_in_place")]

    operations = [RunSQLFile("0007_claim_plans.sql")]
