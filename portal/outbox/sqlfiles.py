"""Django migrations that apply the plain SQL files in the top-level migrations/ folder.

The .sql files are the one source of truth for the outbox schema and the capture
triggers; a Django migration only says which file to run, so `manage.py migrate`
sets up everything.
"""
from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def sql_files() -> list[Path]:
    return sorted(SQL_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


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
