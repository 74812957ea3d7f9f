from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile


class Migration(migrations.Migration):
    dependencies = [("outbox", "0009_commit_order")]

    operations = [RunSQLFile("0010_retention_watermark.sql")]
