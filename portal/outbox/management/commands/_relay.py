"""Shared by the outbox_* commands: the DSN of Django's own database connection."""
from django.conf import settings
from django.db import connection

from runtime.database import with_dbname


def django_dsn() -> str:
    # The settings' database name wins (it differs under the test runner).
    return with_dbname(settings.DATABASE_URL, connection.settings_dict["NAME"])
