"""Bad input against the real sync server process, on every enabled transport, while a
well-behaved client watches committed changes: random and malformed SockJS frames, huge
frames, invalid UTF-8, floods of subscribes, forged (bit-flipped), expired and replayed
tokens. The server answers with errors or closes the offender, stays up, delivers
nothing to the attackers, and the bystander misses, duplicates and reorders nothing."""
from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import pytest

from chaos import db
from chaos.checker import check_all
from chaos.load import Load
from chaos.recorder import start_clients
from chaos.trial import _snapshot_fn, make_cluster
from runtime.tokens import mint
from stack.cluster import ORIGIN, TOKEN_SECRET, Cluster
from stack.sockjs_client import SessionClosed, http_post, make_client

pytestmark = pytest.mark.django_db(transaction=True)
LEAK_TYPES = {"events", "recovered", "subscribed", "authed"}


def random_payload(rng: random.Random, valid_token: str) -> str | bytes:
    choice = rng.randrange(12)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))            # binary noise
    if choice == 1:
        return b'["' + bytes([0xff, 0xfe, 0xc3]) + b'"]'                                  # invalid UTF-8
    if choice == 2:
        return json.dumps([json.dumps({"type": "ping", "pad": "x" * (2 << 20)})])        # huge frame
    if choice == 3:
        return "[" * rng.randrange(1, 60)                    # nesting (deep nesting: see the xfail below)
    if choice == 4:
        return json.dumps([json.dumps(rng.choice([None, 1, [], {}, "subscribe", {"type": None}]))])
    if choice == 5:
        return json.dumps([json.dumps({"type": "subscribe", "topic": f"checklist:{rng.randrange(10**6)}",
                                       "since": rng.choice([0, -1, 2**70, "1", None])})] * 50)  # flood
    if choice == 6:
        flipped = list(valid_token)
        i = rng.randrange(len(flipped))
        flipped[i] = "A" if flipped[i] != "A" else "B"
        return json.dumps([json.dumps({"type": "auth", "token": "".join(flipped)})])      # forged
    if choice == 7:
        expired = mint(TOKEN_SECRET, user_id=1, username="x", topics=["checklist:1"], ttl=10, now=time.time() - 100)
        return json.dumps([json.dumps({"type": "auth", "token": expired})])
    if choice == 8:
        return json.dumps([json.dumps({"type": "auth", "token": "x" * 100_000})])
    if choice == 9:
        return json.dumps({"not": "an array"})
    if choice == 10:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 200)))
    return json.dumps([json.dumps({"type": "unsubscribe", "topic": "checklist:1"})])


async def attacker(kind: str, base: str, seed: int, valid_token: str, seen: list) -> int:
    """Sends ~60 bad messages over one transport (reopening a session when closed)."""
    rng = random.Random(seed)
    sent = 0
    t = None
    while sent < 60:
        try:
            if t is None:
                t = make_client(kind, base, ORIGIN)
                await t.open()
            payload = random_payload(rng, valid_token)
            if kind == "websocket":
                await t.send_frame(payload)
            else:
                body = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
                status, resp = await http_post(t.url + "/xhr_send", body, {"Origin": ORIGIN}, 10.0)
                # The SockJS protocol answers broken JSON on xhr_send with 500 "Broken JSON encoding.";
                # any other 5xx is an unhandled error.
                assert status < 500 or resp == b"Broken JSON encoding.", (status, resp[:200])
            sent += 1
            while not t.inbox.empty():
                frame_kind, msgs = t.inbox.get_nowait()
                if frame_kind == "close":
                    raise SessionClosed("closed")
                seen.extend(m for m in msgs if isinstance(m, dict))
        except (SessionClosed, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            if t is not None:
                t.abort()
            t = None
            sent += 1
    if t is not None:
        t.abort()
    return sent


def test_fuzz_on_every_transport_leaves_the_server_up_and_other_clients_whole(db_url):
    cluster = make_cluster(db_url, relays=1)
    try:
        cluster.start()
        asyncio.run(asyncio.wait_for(_scenario(cluster), 150))
    finally:
        cluster.stop()


async def _scenario(cluster: Cluster) -> None:
    dsn = cluster.database_url
    user_id, username, topics = db.create_fixtures(dsn, checklists=1, tag=uuid.uuid4().hex[:8])
    import psycopg
    with psycopg.connect(dsn) as conn:
        snaps = {t: db.snapshot(conn, t) for t in topics}
    bystanders = start_clients(
        3, transports=["websocket", "xhr_streaming", "xhr"], topics=topics,
        start_tpos={t: s[0] for t, s in snaps.items()}, start_state={t: s[1] for t, s in snaps.items()},
        sockjs_url=cluster.sockjs_url, origin=ORIGIN, snapshot_fn=_snapshot_fn(dsn),
        token_fn=lambda ts: mint(TOKEN_SECRET, user_id=user_id, username=username, topics=ts))
    deadline = time.monotonic() + 20
    while not all(set(c.records) <= c.live for c in bystanders):
        assert time.monotonic() < deadline, "bystanders did not subscribe"
        await asyncio.sleep(0.05)
    # A valid token for someone else's topic, replayed by the attackers (only its bits are flipped).
    other_token = mint(TOKEN_SECRET, user_id=999, username="mallory", topics=["checklist:424242"])
    load = Load(dsn, topics, writers=1, rate=20.0).start()
    seen: list[dict] = []
    try:
        sent = await asyncio.gather(*[attacker(kind, cluster.sockjs_url, i, other_token, seen)
                                      for i, kind in enumerate(["websocket", "xhr_streaming", "xhr"] * 2)])
    finally:
        await load.stop()
    assert sum(sent) >= 300
    assert cluster.sync is not None and cluster.sync.alive(), cluster.sync.output()[-2000:]
    leaks = [m for m in seen if m.get("type") in LEAK_TYPES]
    assert leaks == [], leaks[:3]
    assert any(m.get("type") == "error" for m in seen), "the server never answered with an error"
    # The bystanders are whole.
    from chaos.trial import _wait_caught_up
    assert await _wait_caught_up(dsn, topics, bystanders, None, 30) is not None
    for c in bystanders:
        await c.stop()
    with psycopg.connect(dsn) as conn:
        truth = db.truth(conn, topics, {t: s[0] for t, s in snaps.items()})
        state = db.db_state(conn, topics)
    totals = check_all([(c.name, r) for c in bystanders for r in c.records.values()], truth, state)
    assert load.stats.events > 0
    assert totals.ok, totals
    # A newcomer still gets served.
    t = make_client("xhr", cluster.sockjs_url, ORIGIN)
    await t.open()
    await t.send({"type": "ping", "id": 7})
    kind, msgs = await t.frames(5)
    while kind != "messages":
        kind, msgs = await t.frames(5)
    assert {"type": "pong", "id": 7} in msgs
    t.abort()


def test_token_replayed_for_another_topic_and_foreign_origin_deliver_nothing(db_url):
    cluster = make_cluster(db_url, relays=1)
    try:
        cluster.start()
        asyncio.run(asyncio.wait_for(_replay(cluster), 60))
    finally:
        cluster.stop()


async def _replay(cluster: Cluster) -> None:
    dsn = cluster.database_url
    alice_id, alice, alice_topics = db.create_fixtures(dsn, checklists=1, tag="a" + uuid.uuid4().hex[:6])
    _, _, bob_topics = db.create_fixtures(dsn, checklists=1, tag="b" + uuid.uuid4().hex[:6])
    alice_token = mint(TOKEN_SECRET, user_id=alice_id, username=alice, topics=alice_topics)
    for kind in ("websocket", "xhr_streaming", "xhr"):
        t = make_client(kind, cluster.sockjs_url, ORIGIN)
        await t.open()
        # The same (valid) token replayed on a second session is alice again, never bob.
        await t.send({"type": "auth", "token": alice_token},
                     {"type": "subscribe", "topic": bob_topics[0], "since": 0})
        got: list[dict] = []
        load = Load(dsn, bob_topics, writers=1, rate=30.0).start()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                k, msgs = await t.frames(0.5)
            except asyncio.TimeoutError:
                continue
            if k == "messages":
                got.extend(msgs)
        await load.stop()
        t.abort()
        assert load.stats.events > 0
        types = [m.get("type") for m in got]
        assert "authed" in types and "events" not in types and "subscribed" not in types, (kind, got)
        assert any(m.get("code") == "forbidden_topic" for m in got), (kind, got)
        # A foreign Origin cannot even open the session.
        evil = make_client(kind, cluster.sockjs_url, "http://evil.example")
        with pytest.raises(Exception):
            await evil.open(timeout=3)
        evil.abort()


def test_deeply_nested_json_is_answered_as_broken_not_with_a_traceback(db_url):
    cluster = Cluster(db_url, relays=0)
    try:
        cluster.start_broker()
        cluster.start_sync()

        async def send() -> tuple[int, bytes]:
            t = make_client("xhr", cluster.sockjs_url, ORIGIN)
            await t.open()
            try:
                return await http_post(t.url + "/xhr_send", b"[" * 5000, {"Origin": ORIGIN}, 10.0)
            finally:
                t.abort()
        status, body = asyncio.run(send())
        time.sleep(0.3)
        assert cluster.sync is not None and cluster.sync.alive()
        assert "Traceback" not in cluster.sync.output()
        assert body == b"Broken JSON encoding."
    finally:
        cluster.stop()


def test_broker_forgery_with_keys_on_is_accepted_nowhere_and_skips_nothing(db_url):
    """Anonymous, unknown-key and wrong-role peers on the broker's ports forge events at
    the next positions and heartbeats far ahead, and try to read everything, while writers
    commit and clients on every transport watch (chaos/forgery.py). The checker sees every
    committed change exactly once, in order, with the database's content; the spies read
    nothing (the fault raises otherwise)."""
    from chaos.faults import FAULTS
    from chaos.trial import run_trial
    from tests.chaos.test_faults import OPTS

    cluster = make_cluster(db_url, relays=1)
    try:
        cluster.start()
        result = asyncio.run(asyncio.wait_for(
            run_trial(cluster, "forge broker messages", FAULTS["forge broker messages"], OPTS), 120))
    finally:
        cluster.stop()
    detail = f"{result.totals} notes={result.notes}\n{cluster.outputs()[-3000:]}"
    assert result.committed > 0 and any("forged messages sent" in n for n in result.notes), detail
    assert result.totals.ok and result.db_holes == 0 and result.recovery is not None, detail
    assert result.totals.resyncs == 0, detail  # nothing was skipped that a client then had to reload
    assert "pruned" not in cluster.outputs() and "beyond what the outbox" not in cluster.outputs(), detail
    assert "broker refused" in cluster.broker.output(), detail
