"""outbox_track compiles each tracked table's capture functions, with the table's entity
name, topic column and prefix written into them as literals (migrations/schema.sql,
"Capture"); outbox_untrack removes them; step 0003 moves a database whose tables the
generic, argument-reading functions captured onto compiled ones.

Names and values that need quoting must come out as the same data, never as code: the
entity, prefix and topic column here carry quotes, spaces and a backslash.
"""
from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from portal.outbox.sqlfiles import SCHEMA_FILE, SQL_DIR

TABLE = '"odd ""table"""'  # the table odd "table"
ENTITY = "it's"
TOPIC_COL = "Group Id"
PREFIX = "g'r\\p"


def _events(conn) -> list[tuple]:
    return conn.execute("SELECT topic, entity, entity_id, op, changed FROM outbox ORDER BY id").fetchall()


def _capture_functions(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT proname FROM pg_proc WHERE proname LIKE 'outbox\\_capture\\_%' ORDER BY proname")]


@pytest.fixture
def outbox_db(scratch_db):
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(SCHEMA_FILE.read_text())
        conn.execute(f'CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, "{TOPIC_COL}" int NOT NULL,'
                     ' note text NOT NULL, version bigint NOT NULL DEFAULT 0)')
        yield conn


def _write(conn) -> None:
    conn.execute(f"""INSERT INTO {TABLE} ("{TOPIC_COL}", note) VALUES (7, 'a')""")
    conn.execute(f"UPDATE {TABLE} SET note = 'b'")
    conn.execute(f"UPDATE {TABLE} SET note = 'b'")  # no change: no event
    conn.execute(f'UPDATE {TABLE} SET "{TOPIC_COL}" = 8')  # a move: delete on 7, insert on 8
    conn.execute(f"DELETE FROM {TABLE}")


EXPECTED = [
    ("g'r\\p:7", ENTITY, "1", "insert", []),
    ("g'r\\p:7", ENTITY, "1", "update", ["note"]),
    ("g'r\\p:7", ENTITY, "1", "delete", [TOPIC_COL]),
    ("g'r\\p:8", ENTITY, "1", "insert", [TOPIC_COL]),
    ("g'r\\p:8", ENTITY, "1", "delete", []),
]


def test_a_tracked_table_gets_its_own_capture_functions_and_names_need_no_care(outbox_db):
    outbox_db.execute("SELECT outbox_track(%s, %s, %s, %s)", (TABLE, ENTITY, TOPIC_COL, PREFIX))
    outbox_db.execute("SELECT outbox_track(%s, %s, %s, %s)", (TABLE, ENTITY, TOPIC_COL, PREFIX))  # idempotent
    assert _capture_functions(outbox_db) == [
        'outbox_capture_delete_odd "table"', "outbox_capture_function",
        'outbox_capture_insert_odd "table"', 'outbox_capture_update_odd "table"']
    _write(outbox_db)
    assert _events(outbox_db) == EXPECTED


def test_untracking_removes_the_triggers_and_the_functions(outbox_db):
    outbox_db.execute("SELECT outbox_track(%s, %s, %s, %s)", (TABLE, ENTITY, TOPIC_COL, PREFIX))
    outbox_db.execute("SELECT outbox_untrack(%s)", (TABLE,))
    outbox_db.execute("SELECT outbox_untrack(%s)", (TABLE,))  # idempotent
    assert _capture_functions(outbox_db) == ["outbox_capture_function"]
    assert outbox_db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass",
                             (TABLE,)).fetchone()[0] == 0
    _write(outbox_db)
    assert _events(outbox_db) == []


def test_step_3_compiles_capture_for_every_table_the_generic_functions_captured(outbox_db):
    """A database of schema step 2: its tables' triggers call the generic functions with the
    table's arguments (entity, topic column, prefix with its colon). The step tracks each of
    them again with those arguments, keeps a trigger an operator disabled disabled, and drops
    the generic functions. (The stand-ins here
    only have the generic functions' names: the step reads the triggers, not the bodies.)"""
    outbox_db.execute("DROP FUNCTION outbox_untrack(regclass); DROP FUNCTION outbox_capture_function(regclass, text)")
    for kind in ("insert", "update", "delete"):
        outbox_db.execute(f"CREATE FUNCTION outbox_capture_{kind}() RETURNS trigger LANGUAGE plpgsql"
                          " AS $$ BEGIN RETURN NULL; END $$")
        outbox_db.execute(f"CREATE TRIGGER outbox_capture_{kind} AFTER {kind} ON {TABLE} FOR EACH ROW"
                          f" EXECUTE FUNCTION outbox_capture_{kind}(%s, %s, %s)"
                          % tuple(sql.Literal(v).as_string(outbox_db) for v in (ENTITY, TOPIC_COL, PREFIX + ":")))
    # An operator switched the capture of deletes off: the step must not switch it back on.
    outbox_db.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER outbox_capture_delete")
    outbox_db.execute((SQL_DIR / "0003_capture_per_table.sql").read_text())
    assert "outbox_capture_insert" not in _capture_functions(outbox_db)
    assert len(_capture_functions(outbox_db)) == 4
    _write(outbox_db)
    assert _events(outbox_db) == EXPECTED[:-1]  # all but the delete
