"""Every test that uses the database starts with the relay's tables as migrations leave
them (tests/conftest.py), whatever the tests before it sequenced: Django's flush does not
touch outbox_topic, outbox_relay_state or outbox_doorbell.

The first two tests run in this order (pytest-django keeps file order among
transactional tests): the first leaves positions behind, the second must not see them."""
import psycopg
import pytest

from tests.conftest import reset_relay_tables
from tests.relay.conftest import emit

pytestmark = pytest.mark.django_db(transaction=True)


def relay_tables(url: str) -> tuple:
    with psycopg.connect(url, autocommit=True) as conn:
        return (conn.execute("SELECT topic, tpos FROM outbox_topic ORDER BY topic").fetchall(),
                conn.execute("SELECT last_pos, published_pos, leader, leader_since, heartbeat_at"
                             " FROM outbox_relay_state").fetchone(),
                conn.execute("SELECT armed FROM outbox_doorbell").fetchone())


AT_REST = ([], (0, 0, None, None, None), (True,))


def test_a_test_that_sequences_leaves_positions_behind(db_url):
    emit(db_url, 3, topic="checklist:1")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT * FROM outbox_claim(100, 0, 1000000)")
        conn.execute("UPDATE outbox_relay_state SET published_pos = last_pos, leader = 'gone',"
                      " leader_since = now(), heartbeat_at = now()")
        conn.execute("SELECT outbox_set_doorbell(false)")
    tables = relay_tables(db_url)
    assert tables[0] == [("checklist:1", 3)] and tables[1][:3] == (3, 3, "gone") and tables[2] == (False,)


def test_the_next_test_starts_from_a_freshly_migrated_state(db_url):
    assert relay_tables(db_url) == AT_REST


def test_a_relay_still_connected_fails_the_set_up_at_once(db_url):
    with psycopg.connect(db_url, autocommit=True, application_name="outbox-relay"):
        with pytest.raises(pytest.fail.Exception, match="still connected"):
            reset_relay_tables(db_url, wait=0.2)
    reset_relay_tables(db_url, wait=5)  # gone once its connection is closed


def test_rows_left_in_the_outbox_fail_the_set_up(db_url):
    emit(db_url, 1)
    with pytest.raises(pytest.fail.Exception, match="the outbox holds 1 rows"):
        reset_relay_tables(db_url)
