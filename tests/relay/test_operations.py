"""status / replay / prune through the CLI, manage.py commands and the admin."""
import argparse
import io
import json
from datetime import timedelta

import psycopg
import pytest
import zmq
from django.core.management import call_command

from outbox_relay import admin_cli, operations
from outbox_relay.config import AdminConfig
from tests.relay.conftest import emit

pytestmark = pytest.mark.django_db(transaction=True)


def sequence_all(db_url: str, publish: bool = True) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        pos = [r[0] for r in conn.execute("SELECT r_pos FROM outbox_claim(100000, 0, 1000000)")]
        if publish and pos:
            conn.execute("SELECT * FROM outbox_claim(1, %s, 1000000)", (pos[-1],))
        return pos


def receive_all(sock: zmq.Socket, idle: float = 0.5) -> list[tuple[bytes, dict]]:
    got = []
    while sock.poll(int(idle * 1000)):
        topic, raw = sock.recv_multipart()
        got.append((topic, json.loads(raw)))
    return got


@pytest.fixture
def listening(stack):
    stack.start_broker()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    stack.keys.subscriber().apply(sock)
    sock.connect(stack.backend)
    yield sock
    sock.close(0)


def test_replay_by_pos_range_and_topic_keeps_positions(stack, listening):
    emit(stack.database_url, 4, topic="t:1")
    emit(stack.database_url, 3, topic="t:2")
    pos = sequence_all(stack.database_url)
    result = operations.replay(stack.database_url, stack.frontend, operations.Selection(from_pos=pos[1], to_pos=pos[5]),
                               curve=stack.keys.publisher())
    got = receive_all(listening)
    assert [m["pos"] for _, m in got] == pos[1:6] and result.count == 5
    operations.replay(stack.database_url, stack.frontend, operations.Selection(topic="t:2"), rate=50,
                      curve=stack.keys.publisher())
    got = receive_all(listening)
    assert [(t, m["pos"]) for t, m in got] == [(b"t:2", p) for p in pos[4:]]


def test_replay_dry_run_sends_nothing_and_says_what_would_go(stack, listening):
    emit(stack.database_url, 3, topic="t:9")
    pos = sequence_all(stack.database_url)
    out = io.StringIO()
    ns = argparse.Namespace(cmd="replay", from_pos=pos[0], to_pos=None, since=None, until=None, topic=None,
                            dry_run=True, rate=None, broker=stack.frontend, no_progress=True)
    admin_cli.run(ns, stack.database_url, out=out)
    assert receive_all(listening) == []
    text = out.getvalue()
    assert f"would replay 3 events, pos {pos[0]}..{pos[2]}" in text and f"pos={pos[1]} topic=t:9" in text


def test_replay_by_time_window(stack, listening):
    emit(stack.database_url, 2, topic="old")
    emit(stack.database_url, 2, topic="new")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET created_at = created_at - interval '2 days' WHERE topic = 'old'")
        since = conn.execute("SELECT now() - interval '1 day'").fetchone()[0]
    sequence_all(stack.database_url)
    operations.replay(stack.database_url, stack.frontend, operations.Selection(since=since), curve=stack.keys.publisher())
    assert {t for t, _ in receive_all(listening)} == {b"new"}


def test_prune_deletes_only_old_published_rows(db_url):
    emit(db_url, 3, topic="published")
    sequence_all(db_url, publish=True)
    emit(db_url, 2, topic="sequenced-not-published")
    sequence_all(db_url, publish=False)
    emit(db_url, 2, topic="unsequenced")
    emit(db_url, 1, topic="recent")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET sequenced_at = now() - interval '10 days', created_at = now() - interval '10 days'"
                     " WHERE topic <> 'recent'")
        dry = operations.prune(db_url, timedelta(days=7), dry_run=True)
        assert dry.deleted == 3 and dry.dry_run
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 8
        done = operations.prune(db_url, timedelta(days=7))
        assert done.deleted == 3
        left = dict(conn.execute("SELECT topic, count(*) FROM outbox GROUP BY topic").fetchall())
    assert left == {"sequenced-not-published": 2, "unsequenced": 2, "recent": 1}


def test_prune_walks_positions_in_chunks_and_stops_at_the_first_younger_row(db_url):
    emit(db_url, 5, topic="old")
    emit(db_url, 3, topic="young")
    sequence_all(db_url, publish=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET sequenced_at = now() - interval '10 days' WHERE topic = 'old'")
        assert operations.prune(db_url, timedelta(days=7), dry_run=True, chunk=2).deleted == 5
        progress: list[int] = []
        assert operations.prune(db_url, timedelta(days=7), chunk=2, on_progress=progress.append).deleted == 5
        assert progress == [2, 4, 5]
        left = dict(conn.execute("SELECT topic, count(*) FROM outbox GROUP BY topic").fetchall())
        assert left == {"young": 3}
        assert operations.prune(db_url, timedelta(days=7), chunk=2).deleted == 0


def test_status_and_management_commands(db_url):
    emit(db_url, 2, topic="t:s")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT outbox_emit('t:s', 'x', %s::jsonb)", (json.dumps({"b": "x" * 300}),))
        conn.execute("SELECT * FROM outbox_claim(2, 0, 100)")  # sequences the first two only
    s = operations.status(db_url)
    assert s.backlog == 1 and s.leader_alive is False and s.poison_rows == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT * FROM outbox_claim(10, 0, 100)")  # the big one becomes poison
    s = operations.status(db_url)
    assert s.backlog == 0 and s.poison_rows == 1
    out = io.StringIO()
    call_command("outbox_status", "--json", stdout=out)
    assert json.loads(out.getvalue())["poison_rows"] == 1
    out = io.StringIO()
    call_command("outbox_prune", "--older-than", "1d", "--dry-run", stdout=out)
    assert "would delete 0 published rows" in out.getvalue()
    out = io.StringIO()
    call_command("outbox_replay", "--topic", "t:s", "--dry-run", "--rate", "100/s", stdout=out)
    assert "would replay 3 events" in out.getvalue()
    assert "\n\n" not in out.getvalue(), "management commands print double-spaced lines"
    out = io.StringIO()
    call_command("outbox_status", stdout=out)
    assert "backlog" in out.getvalue() and "\n\n" not in out.getvalue()


@pytest.mark.parametrize("given,rate", [("100/s", 100.0), ("100", 100.0), ("2.5/s", 2.5)])
def test_replay_rate_is_events_per_second_as_documented(given, rate):
    assert admin_cli.parser().parse_args(["replay", "--rate", given]).rate == rate


@pytest.mark.parametrize("given", ["fast", "0", "-1/s", "100/min", "inf", "nan/s"])
def test_a_bad_replay_rate_is_a_usage_error(given, capsys):
    with pytest.raises(SystemExit) as exc:
        admin_cli.parser().parse_args(["replay", "--rate", given])
    assert exc.value.code == 2 and "--rate" in capsys.readouterr().err


def test_admin_lists_outbox_with_relay_status_and_replays(stack, listening, client, django_user_model, settings):
    # The portal reads OUTBOX_RELAY_BROKER_URL and the relay's keys at start (portal/settings.py).
    settings.OUTBOX_REPLAY = AdminConfig(broker_url=stack.frontend)  # no publisher key: refused, named
    emit(stack.database_url, 3, topic="checklist:5")
    pos = sequence_all(stack.database_url)
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    page = client.get("/admin/outbox/outboxevent/?topic=checklist%3A5")
    html = page.content.decode()
    assert page.status_code == 200 and "Relay status" in html and "checklist:5" in html
    assert f"<td>{pos[-1]}</td>" in html  # last assigned pos in the status box
    from portal.outbox.models import OutboxEvent
    ids = list(OutboxEvent.objects.filter(pos__in=pos[:2]).values_list("id", flat=True))
    resp = client.post("/admin/outbox/outboxevent/", {"action": "replay_selected", "_selected_action": ids}, follow=True)
    assert "Replay failed: OUTBOX_RELAY_CURVE_SECRET_KEY (or OUTBOX_RELAY_CURVE_SECRET_KEY_FILE) is not set" \
        in resp.content.decode()
    settings.OUTBOX_REPLAY = AdminConfig(broker_url=stack.frontend, curve=stack.keys.publisher())
    resp = client.post("/admin/outbox/outboxevent/", {"action": "replay_selected", "_selected_action": ids}, follow=True)
    assert "Replayed 2 events" in resp.content.decode()
    assert sorted(m["pos"] for _, m in receive_all(listening)) == pos[:2]
    assert client.get(f"/admin/outbox/outboxevent/{ids[0]}/change/").status_code == 200  # read-only view
    assert client.get("/admin/outbox/outboxevent/add/").status_code == 403


def _watermark(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT pruned_pos FROM outbox_relay_state WHERE id = 1").fetchone()[0]


def test_every_deletion_raises_the_retention_watermark_and_nothing_else_does(db_url):
    emit(db_url, 6, topic="t:w")
    pos = sequence_all(db_url, publish=True)
    emit(db_url, 2, topic="t:unsequenced")
    assert _watermark(db_url) == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET sequenced_at = now() - interval '10 days' WHERE pos <= %s", (pos[2],))
    assert operations.prune(db_url, timedelta(days=7)).deleted == 3
    assert _watermark(db_url) == pos[2] and operations.status(db_url).pruned_pos == pos[2]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM outbox WHERE pos IS NULL")  # no position: nothing to explain
        assert _watermark(db_url) == pos[2]
        conn.execute("DELETE FROM outbox WHERE pos = %s", (pos[4],))  # by hand, out of order
        assert _watermark(db_url) == pos[4]
        conn.execute("DELETE FROM outbox WHERE pos = %s", (pos[3],))  # below it: it never goes down
        assert _watermark(db_url) == pos[4]
        with conn.transaction():
            conn.execute("DELETE FROM outbox WHERE pos = %s", (pos[5],))
            raise psycopg.Rollback()
        assert _watermark(db_url) == pos[4]  # a rolled-back delete leaves it as it was
    assert "pruned up to pos:   " + str(pos[4]) in operations.format_status(operations.status(db_url))
