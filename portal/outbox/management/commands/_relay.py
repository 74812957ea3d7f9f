"""Shared by the outbox_* commands: the DSN of Django's own database connection."""
from django.db import connection

from stack.database import database_url, with_dbname


def django_dsn() -> str:
    # The settings' database name wins (it differs under the test runner).
    return with_dbname(database_url(), connection.settings_dict["NAME"])
