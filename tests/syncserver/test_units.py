"""Pure logic: protocol parsing/encoding, origins, config, tokens, rate limit, hub routing and resume."""
from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings, strategies as st

from runtime import tokens
from runtime.settings import SettingError
from stack.keys import KeySet
from syncserver import pagelatency, protocol
from syncserver.config import from_env
from syncserver.hub import CatchUpResult, Hub, removes, revoked_users
from syncserver.origins import OriginPolicy, normalize_origin
from syncserver.ratelimit import TokenBucket

KEYS = KeySet.generate()
ENV = {"DATABASE_URL": "postgresql://x/y", "SYNC_DEVELOPMENT": "1", **KEYS.sync_env()}


# -- protocol ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,code", [
    ("{", "bad_json"), ('"x"', "bad_message"), ("[]", "bad_message"), ('{"type":"x"}', "bad_message"),
    ('{"type":"auth"}', "bad_message"), ('{"type":"auth","token":5}', "bad_message"),
    ('{"type":"subscribe","topic":"t","since":-1}', "bad_message"),
    ('{"type":"subscribe","topic":"t","since":true}', "bad_message"),
    ('{"type":"subscribe","topic":"t","since":1.5}', "bad_message"),
    ('{"type":"subscribe","topic":"","since":1}', "bad_message"),
    ('{"type":"unsubscribe","topic":null}', "bad_message"),
    ('{"type":"subscribe","topic":"checklist:1\\u0000","since":0}', "bad_message"),
    ('{"type":"subscribe","topic":"checklist:\\ud800","since":0}', "bad_message"),
    ('{"type":"ping","pad":"' + "é" * 600 + '"}', "too_large"),
    ('{"type":"latency"}', "bad_message"), ('{"type":"latency","samples":[]}', "bad_message"),
    ('{"type":"latency","samples":5}', "bad_message"), ('{"type":"latency","samples":["5"]}', "bad_message"),
    ('{"type":"latency","samples":[true]}', "bad_message"), ('{"type":"latency","samples":[NaN]}', "bad_message"),
    ('{"type":"latency","samples":[Infinity]}', "bad_message"), ('{"type":"latency","samples":[1e999]}', "bad_message"),
    ('{"type":"latency","samples":[null]}', "bad_message"), ('{"type":"latency","samples":[[1]]}', "bad_message"),
    ('{"type":"latency","samples":[' + ",".join(["1"] * 33) + "]}", "bad_message"),
])
def test_parse_rejects(text, code):
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.parse(text, 1024)
    assert exc.value.code == code


def test_latency_reports_parse_and_admit_only_bounded_values_at_a_bounded_rate():
    assert protocol.parse('{"type":"latency","samples":[1, 2.5, 0]}', 1024) == protocol.Latency((1.0, 2.5, 0.0))
    allowance = TokenBucket(pagelatency.RATE, pagelatency.BURST, now=0.0)
    kept, out_of_range, over_rate = pagelatency.admit([3.0, -1.0, 60_001.0, 1e300, 60_000.0], allowance)
    assert (kept, out_of_range, over_rate) == ([0.003, 60.0], 3, 0)
    # A flood: the burst, then nothing until the allowance refills.
    allowance = TokenBucket(pagelatency.RATE, pagelatency.BURST, now=time.monotonic())
    kept, _, over_rate = pagelatency.admit([5.0] * 1000, allowance)
    assert len(kept) <= pagelatency.BURST + 1 and over_rate >= 1000 - pagelatency.BURST - 1


def test_a_topic_spaces_its_flushes_only_while_they_take_half_the_loop_or_more():
    from syncserver.hub import spacing

    duty, window = 0.0, 0.0
    for _ in range(3000):  # a topic with few subscribers: 0.5 ms flushes at 1,000 tx/s
        duty, window = spacing(duty, 0.001, 0.0005, 0.0)
    assert duty == pytest.approx(0.5, abs=0.05)
    duty, window = 0.0, 0.0
    for _ in range(3000):  # 0.2 ms flushes at 1,000 tx/s: each transaction goes at once
        duty, window = spacing(duty, 0.001, 0.0002, 0.0)
    assert window == 0.0
    for _ in range(100):  # thousands of subscribers: 30 ms flushes back to back
        duty, window = spacing(duty, 0.03, 0.03, 0.0)
    # A third of the flush: the topic's writes then take at most about 3/4 of the loop.
    assert window == pytest.approx(0.01)
    assert 0.03 / (0.03 + window) == pytest.approx(0.75)
    assert spacing(5.0, 1e9, 0.001, 0.002) == (0.002, 0.002)  # long quiet: forgotten


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
    assert c.curve == KEYS.subscriber()
    assert from_env({**ENV, "SYNC_TRANSPORTS": "websocket,xhr"}).disabled_transports == (
        "xhr_streaming", "eventsource", "htmlfile", "jsonp")
    assert from_env({**ENV, "SYNC_DISABLED_TRANSPORTS": ""}).disabled_transports == ()
    for bad in ({"SYNC_PORT": "x"}, {"SYNC_PORT": "70000"}, {"SYNC_BROKER_URL": "http://x"},
                {"SYNC_TOKEN_SECRET": ""}, {"SYNC_ALLOWED_ORIGINS": "*"}, {"SYNC_ALLOWED_ORIGINS": ""},
                {"SYNC_TRANSPORTS": "websocket", "SYNC_DISABLED_TRANSPORTS": "xhr"}, {"SYNC_TRANSPORTS": "carrier-pigeon"},
                {"SYNC_MAX_SUBSCRIPTIONS": "0"}, {"SYNC_RECENT_EVENTS": "-1"}, {"SYNC_MAX_MESSAGE_BYTES": "10"},
                {"SYNC_COALESCE_MS": "1001"}, {"SYNC_COALESCE_MS": "x"},
                {"SYNC_CURVE_SECRET_KEY": ""}, {"SYNC_BROKER_PUBLIC_KEY": "nope"}):
        with pytest.raises(SettingError):
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


class FakeAuthority:
    """Grants from a table {(user, topic): floor or None}; pairs not in it get `default`
    (a grant from 0 unless told otherwise). Answers at once, like a database that is never
    slow; `gate` holds the answers back."""

    def __init__(self, grants=None, default=0, fail=False):
        self.grants, self.default, self.fail, self.calls = dict(grants or {}), default, fail, 0
        self.gate: asyncio.Event | None = None

    def check(self, user_id, topic):
        self.calls += 1
        fut = asyncio.get_running_loop().create_future()

        def answer():
            if self.fail:
                fut.set_exception(OSError("database is down"))
                return
            floor = self.grants.get((user_id, topic), self.default)
            fut.set_result(None if floor == "none" else SimpleNamespace(floor=floor))
        if self.gate is None:
            answer()
        else:
            asyncio.ensure_future(self.gate.wait()).add_done_callback(lambda _: answer())
        return fut


def make_hub(catchup=None, authority=None, **kwargs) -> Hub:
    return Hub(catchup if catchup is not None else FakeCatchUp(),
               authority=authority if authority is not None else FakeAuthority(), **kwargs)


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
    hub = make_hub(FakeCatchUp(), flush_delay=0.01)
    a, b, other = Sink(), Sink(2), Sink(3)
    await hub.subscribe(a, "t", 0)
    await hub.subscribe(b, "t", 0)
    await hub.subscribe(other, "u", 0)
    hub.on_event(ev(1, tx_last=False))
    assert a.tpos() == []  # held until the transaction ends
    hub.on_event(ev(2))
    assert a.tpos() == []  # ... and until the rest of this turn's burst is routed
    await asyncio.sleep(0)
    assert a.tpos() == b.tpos() == [1, 2] and other.tpos() == []
    assert a.prepared[-1] is b.prepared[-1]  # one encoded message shared
    hub.on_event(ev(3, tx_last=False))  # tx_last lost: flushed after flush_delay anyway
    await asyncio.sleep(0.05)
    assert a.tpos() == [1, 2, 3]
    hub.on_event(ev(3))  # a repeat
    assert a.tpos() == [1, 2, 3]


async def test_resume_from_ring_outbox_and_resync():
    hub = make_hub(FakeCatchUp([ev(i) for i in range(1, 6)], latest=5), recent_events=2)
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


async def test_events_held_by_the_window_fill_a_resume_the_outbox_can_no_longer_serve():
    # What made the test above flaky on a slow runner (under the old 1 ms default window),
    # pinned on purpose: events routed but not sent yet (they go at the end of this turn,
    # or of a window) when a resume reads the outbox reach the new subscription's buffer
    # while the read is out, and complete it.
    hub = make_hub(FakeCatchUp([ev(i) for i in range(1, 6)], latest=5), recent_events=2)
    for i in range(1, 6):
        hub.on_event(ev(i))  # all five wait for the end of this turn
    hub.catchup.events = [ev(4), ev(5)]  # 2 and 3 pruned
    s = Sink()
    assert await hub.subscribe(s, "t", 1) == "recovered_outbox" and s.tpos() == [2, 3, 4, 5]
    hub.on_event(ev(6))
    await asyncio.sleep(0.1)
    assert s.tpos() == [2, 3, 4, 5, 6]  # nothing twice


async def test_live_events_during_catch_up_are_merged_without_gaps_or_duplicates():
    cu = FakeCatchUp([ev(i) for i in range(1, 4)], latest=3)
    cu.gate = asyncio.Event()
    hub = make_hub(cu, recent_events=0, coalesce=0)
    s = Sink()
    task = asyncio.ensure_future(hub.subscribe(s, "t", 0))
    await asyncio.sleep(0)
    for i in (3, 4, 5):  # 3 both in the outbox read and live; 4, 5 only live
        hub.on_event(ev(i))
        # Routed now, not at the end of a coalescing window (which lasts as long as the
        # last flush took, so it may or may not have passed when the next event comes):
        # the subscription under catch-up must buffer all three.
        hub.flush("t")
    assert s.got == []
    cu.gate.set()
    assert await task == "recovered_outbox"
    assert s.tpos() == [1, 2, 3, 4, 5] and s.got[-1]["tpos"] == 5
    hub.on_event(ev(6))
    await asyncio.sleep(0)
    assert s.tpos() == [1, 2, 3, 4, 5, 6]


async def test_revocation_and_unsubscribe():
    hub = make_hub(FakeCatchUp())
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
                          ev(2, entity="membership", op="insert", data={"user_id": 1})]) == {}


async def test_removal_then_re_add_in_one_batch_still_ends_the_subscription():
    hub = make_hub(FakeCatchUp())
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
    hub = make_hub(cu)
    s = Sink()
    task = asyncio.ensure_future(hub.subscribe(s, "t", 0))
    await asyncio.sleep(0)
    hub.remove_sink(s)
    cu.gate.set()
    assert await task == "ended" and s.got == []


# -- hub: authority ------------------------------------------------------------------------

def member_ev(tpos, user_id, op):
    return ev(tpos, entity="membership", op=op, data={"user_id": user_id, "role": "editor"})


async def test_the_grant_decides_every_subscribe_and_its_floor_bounds_the_resume():
    cu = FakeCatchUp([ev(i) for i in range(1, 9)], latest=8)
    auth = FakeAuthority({(1, "t"): 5, (2, "t"): "none", (3, "t"): None})
    hub = make_hub(cu, auth)
    a, b, c = Sink(1), Sink(2), Sink(3)
    assert await hub.subscribe(a, "t", 4) == "resync" and a.got == [{"type": "resync", "topic": "t", "tpos": 5}]
    assert await hub.subscribe(a, "t", 5) == "recovered_outbox" and a.tpos() == [6, 7, 8]
    assert await hub.subscribe(b, "t", 8) == "revoked" and b.got == [{"type": "revoked", "topic": "t"}]
    assert await hub.subscribe(c, "t", 8) == "resync"  # membership not sequenced yet
    hub.on_event(ev(9))
    await asyncio.sleep(0)
    assert a.tpos() == [6, 7, 8, 9] and b.tpos() == [] and c.tpos() == []
    assert not hub.is_subscribed(b, "t") and not hub.is_subscribed(c, "t")


async def test_a_failed_check_answers_resync_and_a_removal_during_the_check_revokes():
    hub = make_hub(FakeCatchUp(), FakeAuthority(fail=True))
    s = Sink(1)
    assert await hub.subscribe(s, "t", 0) == "resync" and s.got[0]["type"] == "resync"
    auth = FakeAuthority()
    auth.gate = asyncio.Event()
    hub = make_hub(FakeCatchUp(), auth)
    s = Sink(1)
    task = asyncio.ensure_future(hub.subscribe(s, "t", 0))
    await asyncio.sleep(0)
    hub.on_event(member_ev(1, 1, "delete"))  # the removal arrives while the check is out
    hub.flush("t")
    auth.gate.set()
    assert await task == "revoked"
    assert s.got == [{"type": "revoked", "topic": "t"}]
    hub.on_event(ev(2))
    assert s.tpos() == [] and not hub.is_subscribed(s, "t")


async def test_a_removal_before_a_rejoin_seen_late_on_the_stream_revokes_nobody():
    """Bob was removed (tpos 5) and added again (6); the sync server's stream lags behind
    the database, so the old removal arrives while his new subscription's check is out, or
    after it went live from the outbox. The grant (floor 5, from the rejoin) says it ended
    an earlier membership: it revokes neither (CI saw 'revoked' once where a resume from
    before the rejoin must be told resync)."""
    history = [member_ev(5, 1, "delete"), member_ev(6, 1, "insert")]
    auth = FakeAuthority({(1, "t"): 5})
    auth.gate = asyncio.Event()
    hub = make_hub(FakeCatchUp(history, latest=6), auth)
    early = Sink(1)
    task = asyncio.ensure_future(hub.subscribe(early, "t", 2))
    await asyncio.sleep(0)
    hub.on_event(ev(4))
    hub.on_event(member_ev(5, 1, "delete"))  # the stream catches up while the check is out
    hub.flush("t")
    auth.gate.set()
    assert await task == "resync" and early.got == [{"type": "resync", "topic": "t", "tpos": 5}]

    hub = make_hub(FakeCatchUp(history, latest=6), FakeAuthority({(1, "t"): 5}))
    late = Sink(1)
    assert await hub.subscribe(late, "t", 5) == "recovered_outbox" and late.tpos() == [6]
    hub.on_event(member_ev(5, 1, "delete"))  # the stream delivers what the outbox read had
    hub.flush("t")
    hub.on_event(member_ev(6, 1, "insert"))
    hub.on_event(ev(7))
    hub.flush("t")
    assert late.tpos() == [6, 7] and hub.is_subscribed(late, "t")
    hub.on_event(member_ev(8, 1, "delete"))  # a removal of this membership still ends it
    hub.flush("t")
    assert late.got[-1] == {"type": "revoked", "topic": "t"} and not hub.is_subscribed(late, "t")


async def test_a_replay_never_carries_what_followed_a_removal_even_after_a_rejoin():
    events = [ev(1), member_ev(2, 1, "delete"), ev(3), member_ev(4, 1, "insert"), ev(5)]
    hub = make_hub(FakeCatchUp(events, latest=5))
    s = Sink(1)
    assert await hub.subscribe(s, "t", 0) == "revoked"
    assert s.got == [{"type": "revoked", "topic": "t"}]
    assert removes(events, 1) and not removes(events, 2) and revoked_users(events) == {}


async def test_end_where_ends_live_and_resuming_subscriptions_with_their_message():
    cu = FakeCatchUp([], latest=0)
    hub = make_hub(cu)
    s = Sink(1)
    assert await hub.subscribe(s, "a", 0) == "live"
    cu.gate = asyncio.Event()
    task = asyncio.ensure_future(hub.subscribe(s, "b", 0))  # still reading the outbox
    await asyncio.sleep(0)
    ended = hub.end_where(s, lambda topic: protocol.error("token_expired", "x", "subscribe", topic))
    cu.gate.set()
    assert await task == "ended" and sorted(ended) == ["a", "b"]
    hub.on_event(ev(2, topic="a"))
    hub.on_event(ev(2, topic="b"))
    await asyncio.sleep(0)
    assert [(m["type"], m.get("topic")) for m in s.got] == [("subscribed", "a"), ("error", "a"), ("error", "b")]
    assert hub.subscription_count(s) == 0


def test_browsers_see_writers_as_rest_shows_them():
    from outbox_relay.envelope import decode, encode
    from syncserver.redaction import for_browsers, public_actor

    assert public_actor("user:12:token:7") == "user:12" and public_actor("user:12") == "user:12"
    for other in ("os:root", "user:", "user:12x", "users:1", "", None, 5, "sql"):
        assert public_actor(other) is None, other
    row = {"pos": 3, "tpos": 2, "topic": "checklist:1", "txid": 9, "entity": "item", "entity_id": "4", "op": "update",
           "version": 2, "data": {"text": "é"}, "changed": ["text"], "actor": "user:12:token:7", "source": "api",
           "request_id": "abc", "created_at": "2024-01-01T00:00:00.000000Z", "tx_last": True}
    event = for_browsers(decode(encode(row)))
    doc = json.loads(event.raw)
    assert doc["actor"] == "user:12" and "request_id" not in doc and doc["data"] == {"text": "é"}
    assert list(doc) == ["v", "pos", "tpos", "topic", "tx", "entity", "id", "op", "version", "data", "changed",
                         "actor", "source", "committed_at", "tx_last"]
    assert event.actor == "user:12" and event.request_id is None and event.tpos == 2
    poison = json.loads(for_browsers(decode(encode({**row, "error": "too large"}))).raw)
    assert poison["data"] is None and poison["error"] == "too large"


async def test_a_topic_postgresql_cannot_take_is_refused_without_a_query():
    from syncserver.authority import DatabaseAuthority

    authority = DatabaseAuthority(pool=None)  # would fail if asked
    for topic in ("checklist:1\x00", "checklist:\ud800"):
        assert await authority.check(7, topic) is None
    assert authority.queries == 0


async def test_a_membership_given_to_another_user_makes_every_subscriber_of_the_topic_check_again():
    cu = FakeCatchUp([], latest=0)
    hub = make_hub(cu)
    old_holder, other = Sink(1), Sink(2)
    for s in (old_holder, other):
        assert await hub.subscribe(s, "t", 0) == "live"
    handed = ev(1, entity="membership", op="update", data={"user_id": 3, "role": "editor"})
    handed.changed = ["user_id"]
    role_only = ev(1, entity="membership", op="update", data={"user_id": 2, "role": "viewer"})
    role_only.changed = ["role"]
    from syncserver.hub import changes_hands
    assert changes_hands([handed]) and not changes_hands([role_only]) and not changes_hands([ev(1)])
    hub.on_event(handed)
    await asyncio.sleep(0)
    for s in (old_holder, other):
        assert s.got[-1] == {"type": "resync", "topic": "t", "tpos": 1} and s.tpos() == []
        assert not hub.is_subscribed(s, "t")
    # In a replay too.
    cu.events, cu.latest = [handed], 1
    late = Sink(1)
    assert await hub.subscribe(late, "t", 0) == "resync"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["actor", "request_id", "source", "text", '"actor":', "x\\"]), inner,
                         max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(actor=st.none() | st.text(max_size=20) | st.sampled_from(["user:5", "user:5:token:9", "os:root", 'user:1"x']),
       request_id=st.none() | st.text(max_size=20), data=_json, error=st.none() | st.text(max_size=20),
       changed=st.lists(st.sampled_from(["actor", "request_id", "text"]), max_size=3),
       pg_format=st.booleans())
@example(actor="user:5", request_id="r", data=None, error="request_id", changed=[], pg_format=False)
def test_the_spliced_browser_envelope_equals_the_re_encoded_one(actor, request_id, data, error, changed, pg_format):
    from outbox_relay.envelope import decode, encode
    from syncserver.redaction import _splice, browser_raw, for_browsers, public_actor

    row = {"pos": 3, "tpos": 2, "topic": "checklist:1", "txid": 9, "entity": "item", "entity_id": "4", "op": "update",
           "version": 2, "data": data, "changed": changed, "actor": actor, "source": "api", "request_id": request_id,
           "created_at": "2024-01-01T00:00:00.000000Z", "tx_last": True, "error": error}
    raw = encode(row)
    if pg_format:  # PostgreSQL's json_build_object(...)::text spaces its separators
        raw = json.dumps(json.loads(raw), separators=(", ", " : "), ensure_ascii=False).encode()
    event = decode(raw)
    assert _splice(raw, public_actor(actor)) is not None  # the fast path is taken
    assert json.loads(for_browsers(event).raw) == json.loads(browser_raw(event))


def test_the_development_token_secret_needs_the_development_flag():
    prod = {"DATABASE_URL": "postgresql://x/y", **KEYS.sync_env()}
    for env in (prod, {**prod, "SYNC_TOKEN_SECRET": "dev-insecure-sync-secret"}, {**prod, "SYNC_DEVELOPMENT": "0"}):
        with pytest.raises(SettingError, match="SYNC_TOKEN_SECRET is the development default"):
            from_env(env)
    assert from_env({**prod, "SYNC_DEVELOPMENT": "1"}).development
    assert from_env({**prod, "SYNC_TOKEN_SECRET": "a-real-secret"}).token_secret == "a-real-secret"
    with pytest.raises(SettingError, match="SYNC_DEVELOPMENT"):
        from_env({**prod, "SYNC_DEVELOPMENT": "yes"})


def test_trusted_proxies_setting():
    assert from_env({**ENV, "SYNC_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"}).trusted_proxies[1].num_addresses == 1
    assert from_env(ENV).trusted_proxies == ()
    with pytest.raises(SettingError, match="SYNC_TRUSTED_PROXIES"):
        from_env({**ENV, "SYNC_TRUSTED_PROXIES": "proxy.internal"})


class Observer:
    """Hub.presence: records joins and leaves as (event, user, topic)."""

    def __init__(self):
        self.log = []

    def joined_sub(self, sub):
        self.log.append(("join", sub.sink.user_id, sub.topic))

    def left_sub(self, sub):
        self.log.append(("leave", sub.sink.user_id, sub.topic))


async def test_presence_joins_only_live_authorized_subscriptions_and_every_end_leaves():
    hub = make_hub(FakeCatchUp(), FakeAuthority({(9, "t"): "none"}))
    hub.presence = seen = Observer()
    alice, bob, carol, quiet = Sink(7), Sink(8), Sink(9), Sink(10)
    await hub.subscribe(alice, "t", 0, presence=True)
    await hub.subscribe(bob, "t", 0, presence=True)
    await hub.subscribe(carol, "t", 0, presence=True)   # not a member: revoked, never joins
    await hub.subscribe(quiet, "t", 0)                   # no presence asked: never joins
    assert seen.log == [("join", 7, "t"), ("join", 8, "t")]
    hub.on_event(ev(1, entity="membership", op="delete", data={"user_id": 8}))  # bob removed
    await asyncio.sleep(0.03)
    assert seen.log[-1] == ("leave", 8, "t")
    await hub.subscribe(alice, "t", 1, presence=True)  # a resubscribe: leaves, then joins again
    assert seen.log[-2:] == [("leave", 7, "t"), ("join", 7, "t")]
    hub.remove_sink(alice)  # the connection closed
    hub.remove_sink(quiet)
    assert seen.log[-1] == ("leave", 7, "t") and len(seen.log) == 6
