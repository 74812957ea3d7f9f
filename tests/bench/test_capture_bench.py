"""bench.capture_bench's scratch databases: built from the schema as it stands (it once read
only the numbered steps, so `outbox_track` was missing and the command failed at once)."""
from __future__ import annotations

import uuid

import psycopg

from bench import capture_bench
from runtime.database import database_url, with_dbname


def test_the_scratch_database_has_the_schema_and_tracks_its_bench_table():
    admin = with_dbname(database_url(), "postgres")
    name = f"capture_bench_test_{uuid.uuid4().hex[:8]}"
    try:
        url = capture_bench.make_db(admin, name, None)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO bench_item (checklist_id, text) VALUES (7, 'x')")
            assert conn.execute("SELECT topic, op FROM outbox").fetchall() == [("checklist:7", "insert")]
            assert conn.execute("SELECT count(*) FROM plain_item").fetchone()[0] == capture_bench.MAX_WRITERS
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
