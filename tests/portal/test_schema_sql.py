"""The schema `manage.py migrate` builds is exactly what the schema files declare.

migrations/schema.sql (the outbox) and portal/checklists/sql/schema.sql (what the demo app
adds) are the source of truth a reader opens; the numbered files beside them are the steps
Django applies. A scratch database gets the two schema files only (on stand-in copies of the
app's tables, which Django creates); its catalog description of every object the files own
must equal the migrated test database's. This fails on a numbered step that does not reach
the declared state, on a schema file edited without a step, and on a Django migration that
changes one of these objects behind the files' back.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from psycopg import sql

from portal.outbox.sqlfiles import SCHEMA_FILE, SQL_DIR, ApplyStep

APP_SCHEMA_FILE = Path(__file__).resolve().parents[2] / "portal" / "checklists" / "sql" / "schema.sql"
# The app tables the app's schema file attaches triggers to (Django creates the tables).
APP_TABLES = ("checklists_checklist", "checklists_membership", "checklists_item")
OWNED = ("outbox%", "sync%", "checklists_schema_version")  # the names of the objects the schema files own


def describe(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every object the schema files own, as the catalog has it (sorted, so order-free)."""
    q = lambda text, params=(): sorted(tuple(r) for r in conn.execute(text, params).fetchall())  # noqa: E731
    owned = list(OWNED)
    return {
        "tables": q("""SELECT c.relname, c.relkind, coalesce(c.reloptions::text, '') FROM pg_class c
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'public' AND c.relname LIKE ANY(%s) AND c.relkind IN ('r', 'v', 'S')""",
                    (owned,)),
        "columns": q("""SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                               pg_get_expr(d.adbin, d.adrelid), a.attidentity, coalesce(co.collname, '')
                          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                          JOIN pg_namespace n ON n.oid = c.relnamespace
                          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                          LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
                         WHERE n.nspname = 'public' AND c.relname LIKE ANY(%s) AND c.relkind IN ('r', 'v')
                           AND a.attnum > 0 AND NOT a.attisdropped""", (owned,)),
        "constraints": q("""SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                             WHERE conrelid::regclass::text LIKE ANY(%s)""", (owned,)),
        "indexes": q("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename LIKE ANY(%s)", (owned,)),
        "views": q("SELECT viewname, definition FROM pg_views WHERE viewname LIKE ANY(%s)", (owned,)),
        "sequences": q("""SELECT sequencename, data_type, min_value, max_value, cycle FROM pg_sequences
                           WHERE sequencename LIKE ANY(%s)""", (owned,)),
        "domains": q("""SELECT t.typname, pg_get_constraintdef(c.oid) FROM pg_type t
                          JOIN pg_constraint c ON c.contypid = t.oid WHERE t.typname LIKE ANY(%s)""", (owned,)),
        "functions": q("""SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
                            JOIN pg_namespace n ON n.oid = p.pronamespace
                           WHERE n.nspname = 'public' AND p.proname LIKE ANY(%s)""", (owned,)),
        "triggers": q("""SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
                          WHERE NOT tgisinternal AND (tgrelid::regclass::text LIKE ANY(%s)
                                OR tgrelid::regclass::text = ANY(%s))""", (owned, list(APP_TABLES))),
    }


def stand_in_ddl(conn: psycopg.Connection, table: str) -> sql.Composed:
    """CREATE TABLE with a migrated table's columns (types and NOT NULL): enough for the
    triggers and functions the app's schema file puts on it."""
    cols = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (table,),
    ).fetchall()
    return sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} {}{}").format(sql.Identifier(n), sql.SQL(t), sql.SQL(" NOT NULL" if nn else ""))
                           for n, t, nn in cols),
    )


@pytest.mark.django_db(transaction=True)
def test_migrating_yields_exactly_the_schema_files(db_url, scratch_db):
    with psycopg.connect(db_url, autocommit=True) as migrated, psycopg.connect(scratch_db, autocommit=True) as scratch:
        scratch.execute(SCHEMA_FILE.read_text())
        for table in APP_TABLES:
            scratch.execute(stand_in_ddl(migrated, table))
        scratch.execute(APP_SCHEMA_FILE.read_text())
        declared, actual = describe(scratch), describe(migrated)
    assert declared["functions"] and declared["triggers"] and declared["sequences"], "the description saw nothing"
    for part in declared:
        extra = sorted(set(actual[part]) - set(declared[part]))
        missing = sorted(set(declared[part]) - set(actual[part]))
        assert not extra and not missing, (
            f"{part}: migrating made {[x[:2] for x in extra]}, the schema files declare {[x[:2] for x in missing]}")
    assert {t for t, *_ in declared["triggers"]} >= set(APP_TABLES)


@pytest.mark.django_db
def test_the_description_sees_a_difference():
    """The comparison can fail: a changed default, an option, a function body all show."""
    connection.ensure_connection()
    conn = connection.connection  # Django's psycopg connection, inside the test transaction
    before = describe(conn)
    conn.execute("ALTER TABLE outbox ALTER COLUMN source SET DEFAULT 'api'")
    conn.execute("ALTER TABLE outbox SET (fillfactor = 70)")
    conn.execute("CREATE OR REPLACE FUNCTION outbox_source() RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'x' $$")
    after = describe(conn)
    for part in ("columns", "tables", "functions"):
        assert before[part] != after[part], part  # undone when the test transaction rolls back


def test_every_numbered_step_is_applied_by_a_django_migration_in_order():
    """No numbered step is left out (it would never reach a database) or applied twice, and
    each owner's steps run in the order of their numbers, each number being its file's."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    steps: list[ApplyStep] = []
    plan = []
    for leaf in loader.graph.leaf_nodes():
        for key in loader.graph.forwards_plan(leaf):
            if key not in plan:
                plan.append(key)
    for key in plan:
        steps += [op for op in loader.graph.nodes[key].operations if isinstance(op, ApplyStep)]
    for directory in (SQL_DIR, APP_SCHEMA_FILE.parent):
        files = sorted(p for p in directory.glob("*.sql") if re.match(r"\d{4}_", p.name))
        assert [s.path for s in steps if s.path.parent == directory] == files, directory
    for step in steps:
        assert int(step.file_name[:4]) == step.number, step.file_name


@pytest.mark.django_db
def test_a_step_runs_once_and_never_where_the_schema_included_it(tmp_path):
    """A database built from a schema file that includes a step skips it; an older one runs it
    once and records its number."""
    editor = SimpleNamespace(connection=connection)
    with connection.cursor() as cur:
        cur.execute("SELECT version FROM outbox_schema_version")
        included = cur.fetchone()[0]  # the last step the schema file includes
        step = included + 1
        step_file = tmp_path / f"{step:04d}_probe.sql"
        step_file.write_text("CREATE TABLE outbox_step_probe (id int);")
        ApplyStep("outbox", included, step_file.name, tmp_path).forward(None, editor)  # included: skipped
        cur.execute("SELECT to_regclass('outbox_step_probe') IS NULL")
        assert cur.fetchone()[0]
        ApplyStep("outbox", step, step_file.name, tmp_path).forward(None, editor)
        ApplyStep("outbox", step, step_file.name, tmp_path).forward(None, editor)  # again: skipped, no error
        cur.execute("SELECT version, to_regclass('outbox_step_probe') IS NOT NULL FROM outbox_schema_version")
        assert cur.fetchone() == (step, True)
        cur.execute("DROP TABLE outbox_step_probe")
        ApplyStep("outbox", step, step_file.name, tmp_path).forward(None, editor)  # a database that has the step
        cur.execute("SELECT to_regclass('outbox_step_probe') IS NULL")
        assert cur.fetchone()[0]  # undone when the test transaction rolls back
