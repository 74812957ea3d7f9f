from pathlib import Path

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from portal.outbox.sqlfiles import RunSQLFile

# The app's SQL (capture of its tables, the sync server's authority): portal/checklists/sql/.
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("outbox", "0001_schema"),
    ]

    operations = [
        migrations.CreateModel(
            name="Checklist",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("version", models.BigIntegerField(default=1, editable=False)),
                ("owner", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="owned_checklists", to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["title", "id"]},
        ),
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("text", models.CharField(max_length=500)),
                ("done", models.BooleanField(default=False)),
                ("position", models.IntegerField(default=0)),
                ("version", models.BigIntegerField(default=1, editable=False)),
                ("checklist", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="items", to="checklists.checklist")),
            ],
            options={"ordering": ["position", "id"]},
        ),
        migrations.CreateModel(
            name="Membership",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("role", models.CharField(choices=[("owner", "Owner"), ("editor", "Editor"), ("viewer", "Viewer")], default="editor", max_length=10)),
                ("version", models.BigIntegerField(default=1, editable=False)),
                ("checklist", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to="checklists.checklist")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["checklist_id", "user_id"]},
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.UniqueConstraint(fields=("checklist", "user"), name="one_membership_per_user"),
        ),
        RunSQLFile("schema.sql", directory=SQL_DIR),
    ]
