"""The schema `manage.py migrate` builds equals the schema migrations/*.sql declare.

A scratch database gets only the .sql files (and the outbox_track calls of the Django
migrations, in migration order), on stand-in tracked tables; its catalog description of
the outbox objects must equal the migrated test database's. This catches a Django
migration that changes an outbox object behind the SQL files' back, and an edited file.
"""
from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.special import RunSQL, SeparateDatabaseAndState
from psycopg import sql

from portal.outbox.sqlfiles import RunSQLFile
from stack.database import with_dbname

OUTBOX_TABLES = ("outbox", "outbox_topic", "outbox_relay_state", "outbox_doorbell")
TRACK_RE = re.compile(r"outbox_track\(\s*'([A-Za-z0-9_]+)'")


def capture_sql_in_migration_order() -> list[str]:
    """The SQL files, and the RunSQL statements that call outbox_track, as migrate runs them."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    plan = []
    for leaf in loader.graph.leaf_nodes():
        for key in loader.graph.forwards_plan(leaf):
            if key not in plan:
                plan.append(key)
    statements: list[str] = []

    def walk(ops):
        for op in ops:
            if isinstance(op, SeparateDatabaseAndState):
                walk(op.database_operations)
            elif isinstance(op, RunSQLFile):
                statements.append(op.sql)
            elif isinstance(op, RunSQL) and isinstance(op.sql, str) and "outbox_track" in op.sql:
                statements.append(op.sql)

    for key in plan:
        walk(loader.graph.nodes[key].operations)
    return statements


def describe(conn, tracked: list[str]) -> dict:
    tables = list(OUTBOX_TABLES)
    q = lambda text, params=(): sorted(tuple(r) for r in conn.execute(text, params).fetchall())  # noqa: E731
    return {
        "columns": q(
            """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid), a.attidentity
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped""", (tables,)),
        "constraints": q(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                 FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s)""", (tables,)),
        "indexes": q("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)", (tables,)),
        "functions": q(
            """SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'public' AND p.proname LIKE 'outbox%%'"""),
        "triggers": q(
            """SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
                WHERE NOT tgisinternal AND tgrelid::regclass::text = ANY(%s)""", (tables + tracked,)),
        "sequences": q("SELECT sequencename, data_type FROM pg_sequences WHERE sequencename LIKE 'outbox%%'"),
    }


def stand_in_ddl(conn, table: str) -> sql.Composed:
    """CREATE TABLE with the tracked table's columns (types only): enough for the triggers."""
    cols = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (table,),
    ).fetchall()
    return sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in cols),
    )


@pytest.fixture
def scratch_url(db_url):
    name = f"h_schema_{uuid.uuid4().hex[:12]}"
    admin_url = with_dbname(db_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(db_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.django_db(transaction=True)
def test_migrated_schema_equals_sql_files(db_url, scratch_url):
    statements = capture_sql_in_migration_order()
    tracked = sorted({t for s in statements for t in TRACK_RE.findall(s)})
    assert tracked, "no outbox_track calls found in the Django migrations"
    with psycopg.connect(db_url, autocommit=True) as migrated, psycopg.connect(scratch_url, autocommit=True) as scratch:
        for table in tracked:
            scratch.execute(stand_in_ddl(migrated, table))
        for statement in statements:
            scratch.execute(statement)
        expected, actual = describe(scratch, tracked), describe(migrated, tracked)
    for part in expected:
        assert actual[part] == expected[part], f"{part} differ from migrations/*.sql"
    assert {t for t, *_ in expected["triggers"]} >= set(tracked)
    defaults = {c[1]: c[4] for c in expected["columns"] if c[0] == "outbox"}
    assert (defaults["id"], defaults["txid"]) == ("outbox_id_ringing()", "outbox_txid_ringing()")  # raw INSERTs ring


@pytest.mark.django_db
def test_description_sees_a_difference():
    """The comparison can fail: a changed default shows up in the description."""
    connection.ensure_connection()
    conn = connection.connection  # Django's psycopg connection, inside the test transaction
    before = describe(conn, [])
    conn.execute("ALTER TABLE outbox ALTER COLUMN source SET DEFAULT 'api'")
    after = describe(conn, [])
    assert before["columns"] != after["columns"]  # undone when the test transaction rolls back
