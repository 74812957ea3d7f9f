from pathlib import Path

from django.db import migrations

from portal.outbox.sqlfiles import RunSQLFile

# The sync server's authority (who may watch checklist:<id> now, and from which tpos):
# domain rules, so they live with the checklists app, in portal/checklists/sql/. Not in
# the top-level migrations/: those build the outbox alone (benchmarks apply them to a
# database without these tables).
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


class Migration(migrations.Migration):
    dependencies = [("checklists", "0001_initial"), ("outbox", "0008_lean_ring")]

    operations = [RunSQLFile("0002_sync_grants.sql", directory=SQL_DIR)]
