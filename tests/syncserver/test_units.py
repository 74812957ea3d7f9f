"""Pure logic: protocol parsing/encoding, origins, config, tokens, rate limit, hub routing and resume."""
from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest

from syncserver import protocol, tokens
from syncserver.config import ConfigError, from_env
from syncserver.hub import CatchUpResult, Hub, revoked_users
from syncserver.origins import OriginPolicy, normalize_origin
from syncserver.ratelimit import TokenBucket

ENV = {"DATABASE_URL": "postgresql://x/y", "SYNC_DEVELOPMENT": "1"}


# -- protocol ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,code", [
    ("{", "bad_json"), ('"x"', "bad_message"), ("[]", "bad_message"), ('{"type":"x"}', "bad_message"),
    ('{"type":"auth"}', "bad_message"), ('{"type":"auth","token":5}', "bad_message"),
    ('{"type":"subscribe","topic":"t","since":-1}', "bad_message"),
    ('{"type":"subscribe","topic":"t","since":true}', "bad_message"),
    ('{"type":"subscribe","topic":"t","since":1.5}', "bad_message"),
    ('{"type":"subscribe","topic":"","since":1}', "bad_message"),
    ('{"type":"unsubscribe","topic":null}', "bad_message"),
    ('{"type":"ping","pad":"' + "é" * 600 + '"}', "too_large"),
])
def test_parse_rejects(text, code):
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse(text, 1024)
    assert exc.value.code == code


def test_parse_rejects_json_nested_beyond_the_parser_as_bad_json():
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse("[" * 5000, 16384)
    assert exc.value.code == "bad_json"


def test_parse_accepts_and_refs():
    assert protocol.parse('{"type":"subscribe","topic":"checklist:1","since":3}', 1024) == protocol.Subscribe("checklist:1", 3)
    assert protocol.parse(b'{"type":"auth","token":"a.b"}', 1024) == protocol.Auth("a.b")
    assert protocol.parse('{"type":"ping"}', 1024) == protocol.Ping(None)
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse('{"type":"subscribe","topic":"t"}', 1024)
    assert exc.value.ref == "subscribe"
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse(b"\xff", 1024)
    assert exc.value.code == "bad_json"
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse(7, 1024)
    assert exc.value.code == "bad_message"


def test_encoders_splice_envelopes_verbatim():
    raws = [b'{"v":1,"tpos":1,"data":{"t":"\xc3\xa9"}}', b'{"v":1,"tpos":2}']
    doc = json.loads(protocol.events('checklist:"1"', raws))
    assert doc == {"type": "events", "topic": 'checklist:"1"', "events": [json.loads(r) for r in raws]}
    assert json.loads(protocol.recovered("t", []))["events"] == []
    assert json.loads(protocol.error("bad_json", "x")) == {"type": "error", "code": "bad_json", "message": "x", "ref": None}


# -- origins, config, tokens, rate limit --------------------------------------------------

def test_origins():
    p = OriginPolicy({"http://localhost:8000", "https://app.example"})
    assert p.allows("http://LOCALHOST:8000") and p.allows("https://app.example:443") and p.allows(None)
    for bad in ("http://localhost:8001", "null", "https://app.example.evil", "http://app.example", "", "file://"):
        assert not p.allows(bad), bad
    assert normalize_origin("https://[::1]:443") == "https://[::1]"


def test_config_defaults_and_validation():
    c = from_env(ENV)
    assert (c.host, c.port, c.broker_url) == ("127.0.0.1", 8001, "tcp://127.0.0.1:5558")
    assert c.disabled_transports == ("htmlfile", "jsonp")
    assert c.allowed_origins == {"http://127.0.0.1:8000", "http://localhost:8000"}
    assert from_env({**ENV, "SYNC_TRANSPORTS": "websocket,xhr"}).disabled_transports == (
        "xhr_streaming", "eventsource", "htmlfile", "jsonp")
    assert from_env({**ENV, "SYNC_DISABLED_TRANSPORTS": ""}).disabled_transports == ()
    for bad in ({"SYNC_PORT": "x"}, {"SYNC_PORT": "70000"}, {"SYNC_BROKER_URL": "http://x"},
                {"SYNC_TOKEN_SECRET": ""}, {"SYNC_ALLOWED_ORIGINS": "*"}, {"SYNC_ALLOWED_ORIGINS": ""},
                {"SYNC_TRANSPORTS": "websocket", "SYNC_DISABLED_TRANSPORTS": "xhr"}, {"SYNC_TRANSPORTS": "carrier-pigeon"},
                {"SYNC_MAX_SUBSCRIPTIONS": "0"}, {"SYNC_RECENT_EVENTS": "-1"}, {"SYNC_MAX_MESSAGE_BYTES": "10"},
                {"SYNC_COALESCE_MS": "1001"}, {"SYNC_COALESCE_MS": "x"}):
        with pytest.raises(ConfigError):
            from_env({**ENV, **bad})


def test_token_checks():
    tok = tokens.mint("s", user_id=1, username="a", topics=["checklist:1"], ttl=60)
    assert tokens.verify("s", tok).allows("checklist:1") and not tokens.verify("s", tok).allows("checklist:2")
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify("other", tok)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify("s", tok, now=time.time() + 61)


def test_token_bucket():
    b = TokenBucket(rate=1, burst=2, now=0)
    assert b.take(0) and b.take(0) and not b.take(0) and b.take(1.0) and not b.take(1.0)


# -- hub ----------------------------------------------------------------------------------

def ev(tpos, topic="t", tx_last=True, entity="item", op="update", data=None):
    doc = {"tpos": tpos, "topic": topic, "entity": entity, "op": op, "data": data or {}}
    return SimpleNamespace(pos=tpos, tpos=tpos, topic=topic, entity=entity, op=op, data=data or {}, tx_last=tx_last,
                           committed_at="2024-01-01T00:00:00.000000Z", raw=json.dumps(doc).encode())


class Sink:
    def __init__(self, user_id=1):
        self.user_id = user_id
        self.got: list[dict] = []
        self.prepared: list = []

    def send_prepared(self, m):
        self.prepared.append(m)
        self.got.append(json.loads(m.text))

    def tpos(self):
        return [e["tpos"] for m in self.got if m["type"] in ("events", "recovered") for e in m["events"]]


class FakeCatchUp:
    def __init__(self, events=(), latest=0):
        self.events, self.latest, self.calls = list(events), latest, 0
        self.gate: asyncio.Event | None = None

    async def read(self, topic, since, limit):
        self.calls += 1
        if self.gate:
            await self.gate.wait()
        return CatchUpResult([e for e in self.events if e.tpos > since][:limit], self.latest)


async def test_routing_encodes_once_per_topic_and_groups_transactions():
    hub = Hub(FakeCatchUp(), flush_delay=0.01)
    a, b, other = Sink(), Sink(2), Sink(3)
    await hub.subscribe(a, "t", 0)
    await hub.subscribe(b, "t", 0)
    await hub.subscribe(other, "u", 0)
    hub.on_event(ev(1, tx_last=False))
    assert a.tpos() == []  # held until the transaction ends
    hub.on_event(ev(2))
    assert a.tpos() == b.tpos() == [1, 2] and other.tpos() == []
    assert a.prepared[-1] is b.prepared[-1]  # one encoded message shared
    hub.on_event(ev(3, tx_last=False))  # tx_last lost: flushed after flush_delay anyway
    await asyncio.sleep(0.05)
    assert a.tpos() == [1, 2, 3]
    hub.on_event(ev(3))  # a repeat
    assert a.tpos() == [1, 2, 3]


async def test_resume_from_ring_outbox_and_resync():
    hub = Hub(FakeCatchUp([ev(i) for i in range(1, 6)], latest=5), recent_events=2)
    for i in range(1, 6):
        hub.on_event(ev(i))
    s = Sink()
    assert await hub.subscribe(s, "t", 5) == "live"
    assert await hub.subscribe(s, "t", 3) == "recovered_ring" and s.tpos() == [4, 5]
    assert hub.catchup.calls == 0
    s2 = Sink()
    assert await hub.subscribe(s2, "t", 1) == "recovered_outbox" and s2.tpos() == [2, 3, 4, 5]
    assert s2.got[-1] == {"type": "subscribed", "topic": "t", "tpos": 5}
    hub.catchup.events = [ev(4), ev(5)]  # 2 and 3 pruned
    s3 = Sink()
    assert await hub.subscribe(s3, "t", 1) == "resync" and s3.got == [{"type": "resync", "topic": "t", "tpos": 5}]
    assert not hub.is_subscribed(s3, "t")
    s4 = Sink()
    assert await hub.subscribe(s4, "t", 9) == "resync"  # ahead of the outbox
    hub.max_recover_events = 2
    assert await hub.subscribe(Sink(), "t", 0) == "resync"  # too far behind


async def test_live_events_during_catch_up_are_merged_without_gaps_or_duplicates():
    cu = FakeCatchUp([ev(i) for i in range(1, 4)], latest=3)
    cu.gate = asyncio.Event()
    hub = Hub(cu, recent_events=0, coalesce=0)  # every transaction flushed as it arrives
    s = Sink()
    task = asyncio.ensure_future(hub.subscribe(s, "t", 0))
    await asyncio.sleep(0)
    for i in (3, 4, 5):  # 3 both in the outbox read and live; 4, 5 only live
        hub.on_event(ev(i))
    assert s.got == []
    cu.gate.set()
    assert await task == "recovered_outbox"
    assert s.tpos() == [1, 2, 3, 4, 5] and s.got[-1]["tpos"] == 5
    hub.on_event(ev(6))
    assert s.tpos() == [1, 2, 3, 4, 5, 6]


async def test_revocation_and_unsubscribe():
    hub = Hub(FakeCatchUp())
    alice, bob = Sink(7), Sink(8)
    for s in (alice, bob):
        await hub.subscribe(s, "t", 0)
    hub.on_event(ev(1, entity="membership", op="update", data={"user_id": 7, "role": "viewer"}))
    # 2 and 3 arrive within one coalescing window: one batch, yet alice's access ends at 2.
    hub.on_event(ev(2, entity="membership", op="delete", data={"user_id": 7}))
    hub.on_event(ev(3))
    await asyncio.sleep(0.03)
    assert alice.got[-1] == {"type": "revoked", "topic": "t"} and alice.tpos() == [1]
    assert bob.tpos() == [1, 2, 3]
    assert hub.unsubscribe(bob, "t") and not hub.unsubscribe(bob, "t")
    hub.on_event(ev(4))
    await asyncio.sleep(0.03)
    assert bob.tpos() == [1, 2, 3]
    assert revoked_users([ev(1, entity="membership", op="delete", data={"user_id": 1}),
                          ev(2, entity="membership", op="insert", data={"user_id": 1})]) == set()


async def test_removal_then_re_add_in_one_batch_still_ends_the_subscription():
    hub = Hub(FakeCatchUp())
    alice = Sink(7)
    await hub.subscribe(alice, "t", 0)
    hub.on_event(ev(1))
    hub.on_event(ev(2, entity="membership", op="delete", data={"user_id": 7}))
    hub.on_event(ev(3, entity="membership", op="insert", data={"user_id": 7}))
    await asyncio.sleep(0.03)
    assert alice.tpos() == [1] and alice.got[-1] == {"type": "revoked", "topic": "t"}


async def test_closed_connection_is_dropped_even_mid_catch_up():
    cu = FakeCatchUp([ev(1)], latest=1)
    cu.gate = asyncio.Event()
    hub = Hub(cu)
    s = Sink()
    task = asyncio.ensure_future(hub.subscribe(s, "t", 0))
    await asyncio.sleep(0)
    hub.remove_sink(s)
    cu.gate.set()
    assert await task == "ended" and s.got == []


def test_the_development_token_secret_needs_the_development_flag():
    prod = {"DATABASE_URL": "postgresql://x/y"}
    for env in (prod, {**prod, "SYNC_TOKEN_SECRET": "dev-insecure-sync-secret"}, {**prod, "SYNC_DEVELOPMENT": "0"}):
        with pytest.raises(ConfigError, match="SYNC_TOKEN_SECRET is the development default"):
            from_env(env)
    assert from_env({**prod, "SYNC_DEVELOPMENT": "1"}).development
    assert from_env({**prod, "SYNC_TOKEN_SECRET": "a-real-secret"}).token_secret == "a-real-secret"
    with pytest.raises(ConfigError, match="SYNC_DEVELOPMENT"):
        from_env({**prod, "SYNC_DEVELOPMENT": "yes"})


def test_trusted_proxies_setting():
    assert from_env({**ENV, "SYNC_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"}).trusted_proxies[1].num_addresses == 1
    assert from_env(ENV).trusted_proxies == ()
    with pytest.raises(ConfigError, match="SYNC_TRUSTED_PROXIES"):
        from_env({**ENV, "SYNC_TRUSTED_PROXIES": "proxy.internal"})
