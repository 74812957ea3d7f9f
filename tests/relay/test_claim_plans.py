"""The claim's plans, as the relay makes them (once per session, generic), stay linear in
the batch whatever statistics the outbox had when they were made (see outbox_claim in migrations/schema.sql).

The plans are read with auto_explain (EXPLAIN ANALYZE of every statement the claim runs,
sent to this client as JSON notices): counting work, not timing it. Planned on an empty
outbox, 0006's numbering re-ran an aggregate over the batch once per batch row, and its
head query scanned the whole outbox."""
from __future__ import annotations

import json

import psycopg
import pytest

from outbox_relay import sequencer
from outbox_relay.relay import GENERIC_PLANS_SQL
from tests.relay.conftest import emit

pytestmark = pytest.mark.django_db(transaction=True)

AUTO_EXPLAIN = ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0", "SET auto_explain.log_analyze = on",
                "SET auto_explain.log_timing = off", "SET auto_explain.log_nested_statements = on",
                "SET auto_explain.log_format = json", "SET auto_explain.log_level = notice")
# Per-row lookups: fine to repeat once per batch row (each is one index descent), alone or
# under the Result/Limit of a scalar subquery (0009's "where does this transaction end").
INDEX_LOOKUPS = {"Index Scan", "Index Only Scan"}
LOOKUP_WRAPPERS = {"Result", "Limit"}


def is_per_row_lookup(node: dict) -> bool:
    if node["Node Type"] in INDEX_LOOKUPS:
        return True
    children = node.get("Plans", ())
    return node["Node Type"] in LOOKUP_WRAPPERS and bool(children) and all(map(is_per_row_lookup, children))


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def load_auto_explain(conn: psycopg.Connection) -> None:
    """LOAD 'auto_explain', or skip: it is a contrib module, which a server may lack (the
    embedded pgserver that `make test` uses without DATABASE_URL does)."""
    try:
        conn.execute(AUTO_EXPLAIN[0])
    except psycopg.errors.UndefinedFile as exc:
        pytest.skip(f"this PostgreSQL server has no auto_explain module ({str(exc).strip()})")


def run_claim_explained(conn: psycopg.Connection, batch: int) -> tuple[list, list[dict]]:
    plans: list[dict] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1])["Plan"])

    for statement in AUTO_EXPLAIN[1:]:
        conn.execute(statement)
    conn.add_notice_handler(on_notice)
    rows = conn.execute(sequencer.CLAIM_SQL, (batch, 0, 1_000_000, True), prepare=True).fetchall()
    conn.remove_notice_handler(on_notice)
    return rows, plans


def test_a_claim_planned_on_an_empty_outbox_repeats_no_work_per_row(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_auto_explain(conn)
        conn.execute("ANALYZE outbox")  # the statistics of a new (or emptied) outbox: no rows
        conn.execute(GENERIC_PLANS_SQL)
        # The first claim plans the claim's statements, as a relay's first claim does.
        assert conn.execute(sequencer.CLAIM_SQL, (2000, 0, 1_000_000, True), prepare=True).fetchall() == []
        for topic in range(10):  # then a backlog: 300 rows, 3 to a transaction, on 10 topics
            emit(db_url, 30, topic=f"t:{topic}", per_tx=3)
        rows, plans = run_claim_explained(conn, 2000)

    assert len(rows) == 300 and [r[0] for r in rows] == list(range(1, 301))
    assert len(plans) >= 4, "auto_explain did not report the claim's statements"
    every = [n for plan in plans for n in nodes(plan)]
    repeated = [(n["Node Type"], n.get("Relation Name"), n["Actual Loops"]) for n in every
                if n["Actual Loops"] > 1 and not is_per_row_lookup(n)]
    assert repeated == [], f"plan nodes run again for each row: {repeated}"
    scans = [n.get("Relation Name") for n in every if n["Node Type"] == "Seq Scan"]
    assert "outbox" not in scans, "the claim scans the whole outbox"
