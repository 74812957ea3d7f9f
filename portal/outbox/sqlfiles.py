"""Django migrations that apply plain SQL files: migrations/NNNN_name.sql for the outbox,
portal/checklists/sql/NNNN_name.sql for the checklists app.

migrations/schema.sql (and portal/checklists/sql/schema.sql) show each schema as it stands;
the numbered files are the steps that reach it, and a Django migration only says which file
to run, so `manage.py migrate` sets up everything.
"""
from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


SCHEMA_FILE = SQL_DIR / "schema.sql"


class PreSquashDatabase(RuntimeError):
    """The database holds the outbox of the unreleased history before the squash."""


def refuse_pre_squash_database(apps, schema_editor) -> None:
    """The squashed baseline creates the outbox; a database that has one already was built by
    the unreleased migration history before it (outbox 0001_outbox..0011). Nothing moves it
    forward: it must be made again, which this says in one line instead of failing on
    CREATE TABLE."""
    with schema_editor.connection.cursor() as cur:
        cur.execute("SELECT to_regclass('outbox') IS NOT NULL")
        if cur.fetchone()[0]:
            raise PreSquashDatabase(
                "this database was built by the outbox migrations from before they were squashed (never"
                " released); make it again: drop the database DATABASE_URL names, or without DATABASE_URL"
                " run `make stop-db && rm -rf .pgdata`")


def read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text()


class RunSQLFile(migrations.RunSQL):
    """RunSQL whose SQL is one file of migrations/ (or of `directory`, for an app's own SQL:
    portal/checklists/sql/); not reversible (the SQL files only move forward)."""

    def __init__(self, name: str, directory: Path | str | None = None, **kwargs):
        self.file_name = name
        self.directory = Path(directory) if directory is not None else None
        text = (self.directory / name).read_text() if self.directory is not None else read_sql(name)
        super().__init__(text, reverse_sql=migrations.RunSQL.noop, **kwargs)

    def deconstruct(self):
        kwargs = {"directory": str(self.directory)} if self.directory is not None else {}
        return (self.__class__.__qualname__, [self.file_name], kwargs)
