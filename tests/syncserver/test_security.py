"""Authorization, origins, session-id injection, revocation, malformed input, limits."""
from __future__ import annotations

import json
import time

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpclient import HTTPClientError

from stack.sockjs_client import connect, session_path
from tests.syncserver.harness import ORIGIN, new_topic, sync_stack, token

pytestmark = pytest.mark.django_db(transaction=True)
EVIL = "http://evil.example"


async def test_refused_subscriptions_deliver_nothing(db_url):
    topic, other = new_topic(db_url), new_topic(db_url)
    async with sync_stack(db_url) as stack:
        cases = {
            "no token": (None, "unauthenticated"),
            "forged": (token([topic], secret="not-the-secret"), "bad_token"),
            "expired": (token([topic], ttl=10, now=time.time() - 60), "token_expired"),
            "other topic": (token([other]), "forbidden_topic"),
            "garbage": ("abc.def", "bad_token"),
        }
        clients = []
        for name, (tok, code) in cases.items():
            c = await connect("rawwebsocket", stack.sockjs_url)
            clients.append(c)
            if tok is not None:
                reply = await c.auth(tok)
                if code != "forbidden_topic":
                    assert reply["type"] == "error" and reply["code"] == code, name
                    assert reply["ref"] == "auth"
                    code = "unauthenticated"  # the subscribe that follows is refused too
            await c.subscribe(topic, 0)
            err = await c.recv()
            assert err["type"] == "error" and err["code"] == code and err["ref"] == "subscribe", (name, err)
        await stack.relay.items(topic, 2)
        for c in clients:
            assert await c.quiet(0.3) == []
            await c.close()


async def test_foreign_origin_is_refused_on_every_transport(db_url):
    async with sync_stack(db_url, disabled_transports=()) as stack:
        for raw in (True, False):
            with pytest.raises(HTTPClientError) as exc:
                await connect("rawwebsocket" if raw else "websocket", stack.sockjs_url, EVIL)
            assert "403" in str(exc.value)
        http = AsyncHTTPClient(force_instance=True)
        try:
            path = session_path()
            for method, url in [("POST", f"/sync/{path}/xhr"), ("POST", f"/sync/{path}/xhr_streaming"),
                                ("GET", f"/sync/{path}/eventsource"), ("POST", f"/sync/{path}/xhr_send"),
                                ("GET", "/sync/info"), ("OPTIONS", "/sync/info"), ("OPTIONS", f"/sync/{path}/xhr"),
                                ("GET", f"/sync/{path}/htmlfile?c=x"), ("GET", f"/sync/{path}/jsonp?c=x")]:
                resp = await http.fetch(HTTPRequest(stack.base + url, method=method, headers={"Origin": EVIL},
                                                    body=b"[]" if method == "POST" else None), raise_error=False)
                assert resp.code == 403, (method, url, resp.code)
                assert "Access-Control-Allow-Origin" not in resp.headers
            ok = await http.fetch(HTTPRequest(stack.base + "/sync/info", headers={"Origin": ORIGIN}))
            assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
            bare = await http.fetch(HTTPRequest(stack.base + "/sync/info"))
            assert "Access-Control-Allow-Origin" not in bare.headers  # never "*"
        finally:
            http.close()


async def test_htmlfile_and_jsonp_are_off_by_default(db_url):
    async with sync_stack(db_url, disabled_transports=("htmlfile", "jsonp")) as stack:
        http = AsyncHTTPClient(force_instance=True)
        try:
            for url in ("htmlfile?c=x", "jsonp?c=x"):
                resp = await http.fetch(f"{stack.base}/sync/{session_path()}/{url}", raise_error=False)
                assert resp.code == 404
            resp = await http.fetch(HTTPRequest(f"{stack.base}/sync/{session_path()}/jsonp_send", method="POST",
                                                body=b"d=[]"), raise_error=False)
            assert resp.code == 404
        finally:
            http.close()


async def test_a_message_injected_into_another_clients_session_gains_nothing(db_url):
    mine, secret_topic = new_topic(db_url, [1]), new_topic(db_url, [2])
    async with sync_stack(db_url) as stack:
        victim = await connect("xhr_streaming", stack.sockjs_url, ORIGIN)
        attacker = await connect("rawwebsocket", stack.sockjs_url)
        try:
            await victim.auth(token([mine], user_id=1, username="victim"))
            await victim.subscribe(mine, 0)
            assert (await victim.recv())["type"] == "subscribed"
            # The attacker knows the victim's session id and posts into it.
            attacker_token = token([secret_topic], user_id=2, username="mallory")
            assert await victim.post_send(json.dumps([json.dumps({"type": "auth", "token": attacker_token})]),
                                          origin=EVIL) == 403
            # Without an Origin (not a browser): accepted by SockJS, but identity cannot switch,
            # the victim's token does not grant the attacker's topic, and replies go to the victim.
            await victim.post_send(json.dumps([json.dumps({"type": "auth", "token": attacker_token})]), origin=None)
            err = await victim.recv()
            assert err["code"] == "bad_token"
            await victim.post_send(json.dumps([json.dumps({"type": "subscribe", "topic": secret_topic, "since": 0})]))
            assert (await victim.recv())["code"] == "forbidden_topic"
            await stack.relay.items(secret_topic, 1)
            await stack.relay.items(mine, 1)
            assert [e["tpos"] for e in (await victim.recv_type("events"))["events"]] == [1]
            assert await attacker.quiet(0.3) == []
            assert await victim.quiet(0.2) == []
        finally:
            await victim.close()
            await attacker.close()


async def test_membership_removal_ends_the_subscription_at_once(db_url):
    topic = new_topic(db_url, [7, 8])
    async with sync_stack(db_url) as stack:
        alice = await connect("rawwebsocket", stack.sockjs_url)
        bob = await connect("xhr_streaming", stack.sockjs_url, ORIGIN)
        try:
            for c, uid in ((alice, 7), (bob, 8)):
                await c.auth(token([topic], user_id=uid))
                await c.subscribe(topic, 0)
                assert (await c.recv())["type"] == "subscribed"
            await stack.relay.commit(topic, [{"entity": "membership", "id": 5, "op": "update",
                                              "data": {"user_id": 7, "role": "viewer"}}])
            assert (await alice.recv_type("events"))["events"][0]["data"]["role"] == "viewer"  # still a member
            await bob.recv_type("events")
            await stack.relay.commit(topic, [{"entity": "item", "id": 1}, {"entity": "membership", "id": 5, "op": "delete",
                                                                          "data": {"user_id": 7, "role": "viewer"}}])
            assert await alice.recv() == {"type": "revoked", "topic": topic}
            assert len((await bob.recv_type("events"))["events"]) == 2
            await stack.relay.items(topic, 2)
            assert await alice.quiet(0.4) == []
            # Both transactions, in one message or two (a busy topic's may share one).
            assert sum(len(m["events"]) for m in await bob.quiet(0.4) if m["type"] == "events") == 2
            # Resuming across the removal is refused too.
            await alice.subscribe(topic, 1)
            assert await alice.recv() == {"type": "revoked", "topic": topic}
        finally:
            await alice.close()
            await bob.close()


async def test_malformed_input_gets_errors_and_the_connection_keeps_working(db_url):
    topic, a, b = new_topic(db_url), new_topic(db_url), new_topic(db_url)
    async with sync_stack(db_url, max_message_bytes=1024, max_subscriptions=2) as stack:
        raw = await connect("rawwebsocket", stack.sockjs_url)
        framed = await connect("websocket", stack.sockjs_url)
        try:
            cases = [
                ("{not json", "bad_json"),
                ("[1,2]", "bad_message"),
                (json.dumps({"type": "subscribe", "topic": topic, "since": "0"}), "bad_message"),
                (json.dumps({"type": "subscribe", "topic": 5, "since": 0}), "bad_message"),
                (json.dumps({"type": "nope"}), "bad_message"),
                (json.dumps({"type": "ping", "pad": "x" * 5000}), "too_large"),
                (json.dumps({"type": "unsubscribe", "topic": topic}), "not_subscribed"),
            ]
            for c in (raw, framed):
                for text, code in cases:
                    await c.send(text)
                    msg = await c.recv()
                    assert msg["type"] == "error" and msg["code"] == code, (text[:40], msg)
            await raw.send_frame(b"\xff\xfe{", binary=True)  # invalid UTF-8
            assert (await raw.recv())["code"] == "bad_json"
            await framed.send_frame(json.dumps([7]))  # a SockJS message that is not a string
            assert (await framed.recv())["code"] == "bad_message"
            for c in (raw, framed):
                await c.send({"type": "ping", "id": [1, "x"]})
                assert await c.recv() == {"type": "pong", "id": [1, "x"]}
                await c.auth(token([topic, a, b]))
                await c.subscribe(topic, 0)
                assert (await c.recv())["type"] == "subscribed"
                await c.subscribe(a, 0)
                assert (await c.recv())["type"] == "subscribed"
                await c.subscribe(b, 0)
                assert (await c.recv())["code"] == "too_many_subscriptions"
            await stack.relay.items(topic, 1)
            for c in (raw, framed):
                assert [e["tpos"] for e in (await c.recv_type("events"))["events"]] == [1]
            # The server is healthy for a newcomer.
            fresh = await connect("xhr", stack.sockjs_url, ORIGIN)
            await fresh.send({"type": "ping", "id": 1})
            assert await fresh.recv() == {"type": "pong", "id": 1}
            await fresh.close()
        finally:
            await raw.close()
            await framed.close()


async def test_flooding_is_rate_limited(db_url):
    async with sync_stack(db_url) as stack:
        c = await connect("rawwebsocket", stack.sockjs_url)
        try:
            for i in range(400):
                await c.send({"type": "ping", "id": i})
            got = []
            while len(got) < 400:
                got.append(await c.recv())
            assert any(m["type"] == "error" and m["code"] == "rate_limited" for m in got)
            assert got[0] == {"type": "pong", "id": 0}
        finally:
            await c.close()
