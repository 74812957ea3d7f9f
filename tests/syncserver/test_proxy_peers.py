"""A SockJS session is read and written only by its peer, also behind reverse proxies.

Real HTTP requests from different loopback source addresses (127.0.0.2 plays the proxy,
127.0.0.3 a client that talks to the sync server directly) carrying X-Forwarded-For, as a
proxy or an attacker would send it. The victim uses xhr-polling: between its polls the
session has no reader, which is when another peer could attach and take its messages.
"""
from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from runtime.peers import parse_trusted
from stack.sockjs_client import session_path
from tests.syncserver.harness import ORIGIN, new_topic, sync_stack, token

pytestmark = pytest.mark.django_db(transaction=True)

PROXY, PROXY_2, STRANGER = "127.0.0.2", "127.0.0.4", "127.0.0.3"
VICTIM, MALLORY = "198.51.100.1", "198.51.100.2"


class Peer:
    """Requests to one session from one source address, optionally as a proxy forwarding `xff`."""

    def __init__(self, base: str, path: str, source: str = "127.0.0.1", xff: str | None = None):
        self.base, self.path, self.source, self.xff = base, path, source, xff
        self.http = AsyncHTTPClient(force_instance=True)

    def _request(self, transport: str, method: str = "POST", body: bytes | None = b"", timeout: float = 5.0,
                 **kwargs) -> HTTPRequest:
        headers = {"Origin": ORIGIN, "Content-Type": "text/plain"}
        if self.xff:
            headers["X-Forwarded-For"] = self.xff
        return HTTPRequest(f"{self.base}/sync/{self.path}/{transport}", method=method, body=body, headers=headers,
                           network_interface=self.source, request_timeout=timeout, **kwargs)

    async def poll(self) -> list[str]:
        resp = await self.http.fetch(self._request("xhr"), raise_error=False)
        assert resp.code == 200, resp.code
        return [line for line in resp.body.decode().split("\n") if line]

    async def send(self, *messages: dict) -> int:
        body = json.dumps([json.dumps(m) for m in messages]).encode()
        resp = await self.http.fetch(self._request("xhr_send", body=body), raise_error=False)
        return resp.code

    async def stream(self, transport: str, seconds: float = 1.0) -> str:
        """What a streaming read of the session yields within `seconds`."""
        chunks: list[bytes] = []
        method = "GET" if transport == "eventsource" else "POST"
        req = self._request(transport, method=method, body=None if method == "GET" else b"", timeout=seconds,
                            streaming_callback=chunks.append)
        await self.http.fetch(req, raise_error=False)
        return b"".join(chunks).decode()

    def close(self) -> None:
        self.http.close()


def messages(frames: list[str]) -> list[dict]:
    return [json.loads(m) for f in frames if f.startswith("a") for m in json.loads(f[1:])]


async def open_subscribed(victim: Peer, topic: str) -> None:
    assert await victim.poll() == ["o"]
    assert await victim.send({"type": "auth", "token": token([topic])}) == 204
    assert messages(await victim.poll())[0]["type"] == "authed"
    assert await victim.send({"type": "subscribe", "topic": topic, "since": 0}) == 204
    assert messages(await victim.poll())[0]["type"] == "subscribed"


async def assert_cannot_touch(intruder: Peer, victim: Peer, stack, topic: str) -> None:
    """With events waiting in the victim's session: the intruder neither reads them (on any
    reading transport) nor writes into the session; the victim then gets them all."""
    await stack.relay.items(topic, 2)
    frames = await intruder.poll()
    assert not messages(frames), f"another peer read the session: {frames}"
    assert frames and frames[0].startswith("c[2010"), frames
    for transport in ("xhr_streaming", "eventsource"):
        body = await intruder.stream(transport)
        assert "a[" not in body, f"{transport}: another peer read the session: {body[-300:]!r}"
    assert await intruder.send({"type": "unsubscribe", "topic": topic}) == 404
    got = []
    while len(got) < 2:
        got += [e["tpos"] for m in messages(await victim.poll()) if m["type"] == "events" for e in m["events"]]
    assert got == [1, 2]


async def test_without_a_proxy_another_address_can_neither_read_nor_write_a_session(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        path = session_path()
        victim, intruder = Peer(stack.base, path), Peer(stack.base, path, source=STRANGER)
        try:
            await open_subscribed(victim, topic)
            await assert_cannot_touch(intruder, victim, stack, topic)
        finally:
            victim.close()
            intruder.close()


async def test_behind_a_trusted_proxy_another_client_can_neither_read_nor_write_a_session(db_url):
    """Before SYNC_TRUSTED_PROXIES, both came from the proxy's address: mallory, behind the
    same proxy as the victim, read the victim's events and wrote into the session."""
    topic = new_topic(db_url)
    async with sync_stack(db_url, trusted_proxies=parse_trusted(PROXY)) as stack:
        path = session_path()
        victim = Peer(stack.base, path, source=PROXY, xff=VICTIM)
        mallory = Peer(stack.base, path, source=PROXY, xff=f"{VICTIM}, {MALLORY}")  # spoofed left part
        try:
            await open_subscribed(victim, topic)
            await assert_cannot_touch(mallory, victim, stack, topic)
        finally:
            victim.close()
            mallory.close()


async def test_an_untrusted_peer_cannot_claim_another_address(db_url):
    topic = new_topic(db_url)
    async with sync_stack(db_url, trusted_proxies=parse_trusted(PROXY)) as stack:
        path = session_path()
        victim = Peer(stack.base, path, source=PROXY, xff=VICTIM)
        forger = Peer(stack.base, path, source=STRANGER, xff=VICTIM)  # not a proxy: its header is ignored
        try:
            await open_subscribed(victim, topic)
            await assert_cannot_touch(forger, victim, stack, topic)
        finally:
            victim.close()
            forger.close()


async def test_a_client_reaching_the_server_through_several_proxies_keeps_its_session(db_url):
    """Consecutive polls of one client through two proxy instances: one peer, not two (before,
    the second proxy's address differed and the session refused its own client)."""
    topic = new_topic(db_url)
    async with sync_stack(db_url, trusted_proxies=parse_trusted(f"{PROXY},{PROXY_2}")) as stack:
        path = session_path()
        first, second = Peer(stack.base, path, source=PROXY, xff=VICTIM), Peer(stack.base, path, source=PROXY_2,
                                                                                   xff=VICTIM)
        try:
            assert await first.poll() == ["o"]
            assert await second.send({"type": "auth", "token": token([topic])}) == 204
            assert messages(await second.poll())[0]["type"] == "authed"
            assert await first.send({"type": "subscribe", "topic": topic, "since": 0}) == 204
            assert messages(await second.poll())[0]["type"] == "subscribed"
            await stack.relay.items(topic, 1)
            got = []
            while not got:
                got = [m for m in messages(await first.poll()) if m["type"] == "events"]
            assert [e["tpos"] for e in got[0]["events"]] == [1]
        finally:
            first.close()
            second.close()
