"""Django migrations that apply plain SQL: a schema file, and the numbered steps after it.

Each owner of SQL keeps one file with its schema as it stands, the source of truth a reader
opens: migrations/schema.sql for the outbox, portal/checklists/sql/schema.sql for what the
checklists app adds. A new database is built from that file (RunSQLFile, in the owner's
first Django migration). A change to a released schema edits the file AND adds a numbered
step beside it, NNNN_name.sql, applied by the owner's next Django migration (ApplyStep): the
step takes a database built from an older schema to the new one, and is skipped on a
database whose schema file already included it. Each owner records the number of the last
step its database includes in a one-row table, `<owner>_schema_version`, which the schema
file sets (to the number of the last step it includes) and every applied step raises.
tests/portal/test_schema_sql.py checks that migrating yields exactly the schema files.
"""
from __future__ import annotations

from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
SCHEMA_FILE = SQL_DIR / "schema.sql"


class EarlierHistory(RuntimeError):
    """The database was built by an unreleased schema history that nothing migrates."""


def refuse_an_earlier_history(apps, schema_editor) -> None:
    """The outbox's first migration builds it from the schema file; a database that has an
    outbox already was built by the unreleased migration history before the schema file
    (outbox 0001_outbox..0011, or 0001_baseline..0002). Say so in one line rather than fail
    on CREATE TABLE."""
    with schema_editor.connection.cursor() as cur:
        cur.execute("SELECT to_regclass('outbox') IS NOT NULL")
        if cur.fetchone()[0]:
            raise EarlierHistory(
                "this database was built by an earlier, unreleased history of the outbox schema and cannot"
                " be migrated; make it again: drop the database DATABASE_URL names, or without DATABASE_URL"
                " run `make stop-db && rm -rf .pgdata`")


class RunSQLFile(migrations.RunSQL):
    """RunSQL whose SQL is one file of migrations/ (or of `directory`, for an app's own SQL);
    not reversible: the schema only moves forward."""

    def __init__(self, name: str, directory: Path | str | None = None, **kwargs):
        self.file_name = name
        self.directory = Path(directory) if directory is not None else None
        super().__init__((self.directory or SQL_DIR).joinpath(name).read_text(),
                         reverse_sql=migrations.RunSQL.noop, **kwargs)

    def deconstruct(self):
        kwargs = {"directory": str(self.directory)} if self.directory is not None else {}
        return (self.__class__.__qualname__, [self.file_name], kwargs)


class ApplyStep(migrations.RunPython):
    """Step `number` of `owner`'s schema (the file `name` in `directory`): run it, then record
    the number, unless the database includes it already (built from a schema file that did)."""

    def __init__(self, owner: str, number: int, name: str, directory: Path | str | None = None):
        self.owner, self.number, self.file_name = owner, number, name
        self.directory = Path(directory) if directory is not None else None
        super().__init__(self.forward, migrations.RunPython.noop)

    @property
    def path(self) -> Path:
        return (self.directory or SQL_DIR) / self.file_name

    def forward(self, apps, schema_editor) -> None:
        with schema_editor.connection.cursor() as cur:
            cur.execute(f"SELECT version FROM {self.owner}_schema_version")
            if cur.fetchone()[0] >= self.number:
                return
            cur.execute(self.path.read_text())
            cur.execute(f"UPDATE {self.owner}_schema_version SET version = %s", [self.number])

    def deconstruct(self):
        kwargs = {"directory": str(self.directory)} if self.directory is not None else {}
        return (self.__class__.__qualname__, [self.owner, self.number, self.file_name], kwargs)
