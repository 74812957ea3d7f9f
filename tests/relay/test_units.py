"""Pure parts: envelope, continuity decisions, configuration (no I/O)."""
from datetime import datetime, timedelta, timezone

import pytest

from outbox_relay import envelope, operations
from outbox_relay.config import RelayConfig, broker_config, relay_config
from outbox_relay.gaps import Action, Continuity, OutboxView, Skip
from runtime.settings import SettingError
from stack.keys import KeySet

KEYS = KeySet.generate()

ROW = {"pos": 7, "tpos": 3, "topic": "checklist:1", "txid": 991, "entity": "item", "entity_id": "5",
       "op": "update", "version": 2, "data": {"id": 5, "text": "é"}, "changed": ["text"], "actor": "u1",
       "source": "api", "request_id": "r1", "created_at": datetime(2025, 1, 2, 3, 4, 5, 6, timezone.utc),
       "tx_last": True}


def test_envelope_round_trip_keeps_raw_bytes():
    raw = envelope.encode(ROW)
    ev = envelope.decode(raw)
    assert (ev.pos, ev.tpos, ev.topic, ev.tx, ev.id, ev.op, ev.version) == (7, 3, "checklist:1", "991", "5", "update", 2)
    assert ev.data == {"id": 5, "text": "é"} and ev.changed == ["text"] and ev.tx_last is True
    assert ev.committed_at == "2025-01-02T03:04:05.000006Z"
    assert ev.raw == raw and ev.error is None


def test_poison_envelope_has_no_data_and_says_why():
    ev = envelope.decode(envelope.encode({**ROW, "error": "too big"}))
    assert ev.data is None and ev.error == "too big" and ev.pos == 7


def test_heartbeat_and_bad_messages():
    hb = envelope.decode_message(b"_heartbeat", envelope.encode_heartbeat(42))
    assert isinstance(hb, envelope.Heartbeat) and hb.pos == 42
    for bad in (b"nope", b"[]", b'{"v": 2, "pos": 1}', b'{"v": 1, "pos": 1}'):
        with pytest.raises(envelope.EnvelopeError):
            envelope.decode(bad)
    with pytest.raises(envelope.EnvelopeError):
        envelope.decode(envelope.encode_heartbeat(1))


def test_continuity_delivers_in_order_and_drops_duplicates():
    c = Continuity(delivered=10, stale_after=3)
    assert c.on_event(11, 0).action is Action.DELIVER and c.advance(11)
    assert c.on_event(11, 0).action is Action.DROP
    assert c.on_event(5, 0).action is Action.DROP
    gap = c.on_event(15, 0)
    assert gap.action is Action.CATCH_UP and gap.target == 15
    assert not c.advance(13)  # out of order is refused
    assert c.on_heartbeat(11, 0).action is Action.DROP
    hb = c.on_heartbeat(20, 0)
    assert hb.action is Action.CATCH_UP and hb.target == 20


def test_continuity_staleness():
    c = Continuity(delivered=0, stale_after=3)
    assert not c.is_stale(100)  # never heard: the caller starts the timer
    c.heard(100)
    assert not c.is_stale(102.9) and c.is_stale(103)
    c.on_heartbeat(0, 103)
    assert not c.is_stale(105)


def test_skip_only_below_the_watermark():
    c = Continuity(delivered=4, stale_after=1)
    assert c.skip_to(9, pruned_pos=9) == [(5, 9)] and c.delivered == 9
    assert c.skip_to(3, pruned_pos=9) == []
    assert c.skip_to(20, pruned_pos=12) == [(10, 12)] and c.delivered == 12  # never past pruned_pos
    assert c.skip_to(20, pruned_pos=12) == []


def test_relay_config_defaults_and_parsing():
    assert relay_config(KEYS.relay_env()) == RelayConfig(curve=KEYS.publisher())
    assert RelayConfig().batch_size == 2000 and RelayConfig().poll_interval == 1.0
    assert RelayConfig().metrics_port == 9101 and RelayConfig().broker_url == "tcp://127.0.0.1:5557"
    cfg = relay_config({"OUTBOX_RELAY_BATCH_SIZE": "10", "OUTBOX_RELAY_POLL_INTERVAL": "0.25", **KEYS.relay_env(),
                        "OUTBOX_RELAY_METRICS_PORT": "0", "OUTBOX_RELAY_CLAIM_INTERVAL": "0", "UNRELATED": "x"})
    assert (cfg.batch_size, cfg.poll_interval, cfg.metrics_port, cfg.claim_interval) == (10, 0.25, 0, 0.0)


@pytest.mark.parametrize("env, needle", [
    ({"OUTBOX_RELAY_BATCH_SIZE": "0"}, "OUTBOX_RELAY_BATCH_SIZE"),
    ({"OUTBOX_RELAY_BATCH_SIZE": "lots"}, "OUTBOX_RELAY_BATCH_SIZE"),
    ({"OUTBOX_RELAY_POLL_INTERVAL": "-1"}, "OUTBOX_RELAY_POLL_INTERVAL"),
    ({"OUTBOX_RELAY_METRICS_PORT": "70000"}, "OUTBOX_RELAY_METRICS_PORT"),
    ({"OUTBOX_RELAY_CLAIM_INTERVAL": "-0.002"}, "OUTBOX_RELAY_CLAIM_INTERVAL"),
    ({"OUTBOX_RELAY_BROKER_URL": "localhost:5557"}, "OUTBOX_RELAY_BROKER_URL"),
    ({"OUTBOX_RELAY_BATCHSIZE": "5"}, "unknown setting"),
])
def test_relay_config_rejects_bad_values(env, needle):
    with pytest.raises(SettingError, match=needle) as info:
        relay_config(env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("env, message", [
    ({"OUTBOX_RELAY_BATCH_SIZE": "0"}, "OUTBOX_RELAY_BATCH_SIZE=0 is out of range (must be >= 1)"),
    ({"OUTBOX_RELAY_BATCH_SIZE": "lots"}, "OUTBOX_RELAY_BATCH_SIZE='lots' is not an integer"),
    ({"OUTBOX_RELAY_METRICS_PORT": "70000"}, "OUTBOX_RELAY_METRICS_PORT=70000 is out of range [0, 65535]"),
    ({"OUTBOX_RELAY_POLL_INTERVAL": "0"}, "OUTBOX_RELAY_POLL_INTERVAL=0 is out of range (must be > 0)"),
    ({"OUTBOX_RELAY_CLAIM_INTERVAL": "soon"}, "OUTBOX_RELAY_CLAIM_INTERVAL='soon' is not a number"),
    ({"OUTBOX_RELAY_LOCK_RETRY": "inf"}, "OUTBOX_RELAY_LOCK_RETRY='inf' is not a finite number of seconds"),
    ({"OUTBOX_RELAY_POLL_INTERVAL": "nan"}, "OUTBOX_RELAY_POLL_INTERVAL='nan' is not a finite number of seconds"),
])
def test_relay_config_messages_give_the_name_and_the_value(env, message):
    with pytest.raises(SettingError) as info:
        relay_config(env)
    assert str(info.value) == message


def test_broker_config():
    cfg = broker_config(KEYS.broker_env())
    assert (cfg.frontend, cfg.backend) == ("tcp://127.0.0.1:5557", "tcp://127.0.0.1:5558")
    assert cfg.publishers == {KEYS.relay_public} and cfg.subscribers == {KEYS.syncserver_public}
    assert cfg.public_key == KEYS.broker_public and KEYS.broker not in repr(cfg)
    with pytest.raises(SettingError):
        broker_config({"OUTBOX_BROKER_FRONTEND": "tcp://127.0.0.1:1", "OUTBOX_BROKER_BACKEND": "tcp://127.0.0.1:1",
                       **KEYS.broker_env()})


def test_durations_and_times():
    assert operations.parse_duration("7d") == timedelta(days=7)
    assert operations.parse_duration("90s") == timedelta(seconds=90)
    with pytest.raises(ValueError):
        operations.parse_duration("soon")
    assert operations.parse_time("2025-01-01T00:00:00").tzinfo is not None


def test_selection_where_clause_combines_bounds():
    where, args = operations.Selection(from_pos=3, to_pos=9, topic="t:1").where()
    assert where == "o.pos IS NOT NULL AND o.pos >= %s AND o.pos <= %s AND o.topic = %s" and args == [3, 9, "t:1"]


def test_progress_bar_reaches_100_percent_on_one_line():
    import io
    out = io.StringIO()
    bar = operations.Progress(4, out=out, width=8)
    for _ in range(4):
        bar.update()
    text = out.getvalue()
    assert text.endswith("replay [########] 4/4 100.0%\n") and text.startswith("\rreplay [")
