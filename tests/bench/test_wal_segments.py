"""bench.wal_segments: its boundary bookkeeping (pure), and one short run on the real server."""
from __future__ import annotations

import psycopg

from bench import wal_segments


def test_a_boundary_is_judged_by_the_longest_commit_on_either_side():
    files = ["A", "A", "A", "B", "B", "C", "C"]
    seconds = [0.001, 0.001, 0.070, 0.002, 0.001, 0.001, 0.030]
    got = wal_segments.boundaries(files, seconds, existed={"C"})
    # B's stall came in the commit before the first seen in B (its LSN was read before its
    # commit record went into B), C's in the second; recycled: its file existed before.
    assert got == [{"segment": "B", "recycled": False, "commit_ms": 70.0},
                   {"segment": "C", "recycled": True, "commit_ms": 30.0}]
    assert wal_segments.boundaries(["A", "A"], [0.5, 0.5], set()) == []


def test_a_short_run_measures_every_commit_and_reads_the_settings(scratch_db):
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        wal_segments.create_probe(conn)
    got = wal_segments.measure(scratch_db, seconds=0.5, rate=200, size=2000, init_zero=None)
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        written = conn.execute("SELECT count(*) FROM wal_probe WHERE length(v) = 2000").fetchone()[0]
    assert got["commits"] == 100
    assert written == wal_segments.ROWS  # every row was rewritten with a payload of that size
    assert 0 < got["commit_p50_ms"] <= got["commit_p99_ms"] <= got["commit_max_ms"]
    assert got["settings"]["wal_init_zero"] in ("on", "off")
    assert got["created"]["n"] + got["recycled"]["n"] == len(got["boundaries"])
