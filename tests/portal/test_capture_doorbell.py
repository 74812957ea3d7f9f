"""The doorbell as writers ring it (migrations/schema.sql): the capture trigger and
outbox_emit NOTIFY outbox themselves, once per transaction, only while the doorbell is armed,
only if the transaction commits something; raw INSERTs (and COPY) into outbox ring too,
through the defaults of id and txid: any that leaves out either. A real LISTEN connection
observes each case."""
from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = 0.3  # seconds without a notification that count as "did not ring"


@pytest.fixture
def doorbell(db_url):
    """(listener, set_armed): a LISTEN outbox connection, and a switch for the armed flag."""
    with psycopg.connect(db_url, autocommit=True) as admin, psycopg.connect(db_url, autocommit=True) as listener:
        before = admin.execute("SELECT armed FROM outbox_doorbell WHERE id = 1").fetchone()[0]
        listener.execute("LISTEN outbox")

        def set_armed(armed: bool) -> None:
            admin.execute("SELECT outbox_set_doorbell(%s)", (armed,))

        set_armed(True)
        try:
            yield listener, set_armed
        finally:
            set_armed(before)


def rings(listener: psycopg.Connection, timeout: float = QUIET) -> int:
    """Notifications on channel outbox within timeout (stops at the first)."""
    return sum(1 for n in listener.notifies(timeout=timeout, stop_after=1) if n.channel == "outbox")


def write(db_url: str, *statements: str, commit: bool = True) -> None:
    with psycopg.connect(db_url) as conn:
        for s in statements:
            conn.execute(s)
        conn.commit() if commit else conn.rollback()


def test_capture_rings_when_armed_once_per_transaction(checklist, db_url, doorbell):
    listener, _ = doorbell
    ins = (f"INSERT INTO checklists_item (checklist_id, text, done, position, version)"
           f" VALUES ({checklist.pk}, 'x', false, 5, 1)")
    write(db_url, ins, ins, f"UPDATE checklists_item SET done = true WHERE checklist_id = {checklist.pk}")
    assert rings(listener, timeout=5) == 1
    assert rings(listener) == 0  # NOTIFY folds within a transaction, and the trigger rang once


def test_capture_does_not_ring_when_disarmed_or_rolled_back_or_noop(checklist, db_url, doorbell):
    listener, set_armed = doorbell
    write(db_url, f"UPDATE checklists_item SET done = NOT done WHERE checklist_id = {checklist.pk}", commit=False)
    write(db_url, f"UPDATE checklists_item SET text = text WHERE checklist_id = {checklist.pk}")  # no event
    assert rings(listener) == 0
    set_armed(False)
    write(db_url, f"UPDATE checklists_item SET done = NOT done WHERE checklist_id = {checklist.pk}")
    assert rings(listener) == 0


def test_rolled_back_savepoint_rings_again_later(checklist, db_url, doorbell):
    listener, _ = doorbell
    with psycopg.connect(db_url) as conn:
        conn.execute("SAVEPOINT s")
        conn.execute(f"UPDATE checklists_item SET done = NOT done WHERE checklist_id = {checklist.pk}")
        conn.execute("ROLLBACK TO SAVEPOINT s")  # discards the NOTIFY, and the "rung" flag with it
        conn.execute(f"UPDATE checklists_checklist SET title = 'Renamed' WHERE id = {checklist.pk}")
        conn.commit()
    assert rings(listener, timeout=5) == 1


def test_emit_and_raw_insert_ring(db_url, doorbell):
    listener, set_armed = doorbell
    write(db_url, "SELECT outbox_emit('t:1', 'ping', '{}')")
    assert rings(listener, timeout=5) == 1
    raw = "INSERT INTO outbox (topic, entity, entity_id, op, data) VALUES ('t:1', 'ping', '', 'event', '{}')"
    write(db_url, raw, raw)
    assert rings(listener, timeout=5) == 1
    set_armed(False)
    write(db_url, raw, "SELECT outbox_emit('t:1', 'ping', '{}')")
    assert rings(listener) == 0


def test_a_raw_insert_that_passes_its_own_txid_rings(db_url, doorbell):
    """Capture and outbox_emit pass txid themselves; so may a hand-written INSERT. It rings
    all the same, through id's default."""
    listener, _ = doorbell
    write(db_url, "INSERT INTO outbox (txid, topic, entity, entity_id, op, data)"
                  " VALUES (pg_current_xact_id(), 't:1', 'ping', '', 'event', '{}')")
    assert rings(listener, timeout=5) == 1
    with psycopg.connect(db_url) as conn:  # COPY fills defaults too
        with conn.cursor().copy("COPY outbox (topic, entity, entity_id, op, data) FROM STDIN") as copy:
            copy.write_row(("t:1", "ping", "", "event", "{}"))
    assert rings(listener, timeout=5) == 1


def test_op_and_source_still_constrained(db_url):
    """0001's CHECKs became domain constraints: the same values are refused."""
    insert = "INSERT INTO outbox (topic, entity, entity_id, op, data, source) VALUES ('t:1', 'x', '', %s, '{}', %s)"
    with psycopg.connect(db_url) as conn:
        for op, source in (("upsert", "sql"), ("event", "cron")):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(insert, (op, source))
            conn.rollback()
        conn.execute(insert, ("event", "sql"))  # and the valid ones pass
        conn.rollback()
