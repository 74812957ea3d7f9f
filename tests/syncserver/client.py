"""A small Python client of the sync server, for tests and the benchmark.

Speaks the browser protocol over three SockJS transports: raw WebSocket
(/sync/websocket), SockJS-framed WebSocket (/sync/<server>/<session>/websocket) and
xhr-streaming / xhr-polling over plain HTTP (frames: o, h, a[...], c[...]).
Received protocol messages land in a queue; SockJS heartbeats ("h") are consumed here,
our own {"type":"heartbeat"} messages are kept in `heartbeats` and skipped by recv().
"""
from __future__ import annotations

import asyncio
import json
import random
import string
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect


class Closed(Exception):
    pass


def session_path() -> str:
    sid = "".join(random.choices(string.ascii_lowercase + string.digits, k=12))
    return f"{random.randint(0, 999):03d}/{sid}"


class BaseClient:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.heartbeats: list[dict] = []
        self.opened = asyncio.Event()
        self.close_frame: list | None = None
        self.closed = asyncio.Event()

    # -- frames -----------------------------------------------------------------------
    def _frame(self, frame: str) -> None:
        if not frame or frame == "h":
            return
        kind = frame[0]
        if kind == "o":
            self.opened.set()
        elif kind == "a":
            for text in json.loads(frame[1:]):
                self._message(text)
        elif kind == "c":
            self.close_frame = json.loads(frame[1:])
            self._closed()
        else:
            raise AssertionError(f"unexpected SockJS frame {frame[:80]!r}")

    def _message(self, text: str) -> None:
        msg = json.loads(text)
        if msg.get("type") == "heartbeat":
            self.heartbeats.append(msg)
        else:
            self.queue.put_nowait(msg)

    def _closed(self) -> None:
        self.closed.set()
        self.queue.put_nowait(Closed())

    # -- protocol ---------------------------------------------------------------------
    async def recv(self, timeout: float = 10.0) -> dict:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        if isinstance(item, Closed):
            self.queue.put_nowait(item)  # stays closed for later calls
            raise item
        return item

    async def recv_type(self, kind: str, timeout: float = 10.0) -> dict:
        msg = await self.recv(timeout)
        assert msg["type"] == kind, f"expected {kind}, got {msg}"
        return msg

    async def quiet(self, seconds: float = 0.5) -> list[dict]:
        """Whatever arrives within `seconds` (expected: nothing)."""
        got: list = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                break
            if isinstance(item, Closed):
                self.queue.put_nowait(item)
                break
            got.append(item)
        return got

    async def send(self, msg: Any) -> None:
        await self.send_text(msg if isinstance(msg, str) else json.dumps(msg))

    async def auth(self, token: str) -> dict:
        await self.send({"type": "auth", "token": token})
        return await self.recv()

    async def subscribe(self, topic: str, since: int) -> None:
        await self.send({"type": "subscribe", "topic": topic, "since": since})

    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WebSocketClient(BaseClient):
    def __init__(self, base: str, raw: bool = True, origin: str | None = None, path: str | None = None):
        super().__init__()
        self.raw = raw
        ws_base = base.replace("http://", "ws://")
        self.url = f"{ws_base}/sync/websocket" if raw else f"{ws_base}/sync/{path or session_path()}/websocket"
        self.origin = origin
        self.conn = None
        self._reader: asyncio.Task | None = None

    async def connect(self, timeout: float = 10.0) -> "WebSocketClient":
        headers = {"Origin": self.origin} if self.origin else {}
        self.conn = await asyncio.wait_for(websocket_connect(HTTPRequest(self.url, headers=headers)), timeout)
        self._reader = asyncio.create_task(self._read())
        if not self.raw:
            await asyncio.wait_for(self.opened.wait(), timeout)
        return self

    async def _read(self) -> None:
        while True:
            data = await self.conn.read_message()
            if data is None:
                self._closed()
                return
            if self.raw:
                self._message(data if isinstance(data, str) else data.decode())
            else:
                self._frame(data)

    async def send_text(self, text: str) -> None:
        await self.conn.write_message(text if self.raw else json.dumps([text]))

    async def send_frame(self, data: str | bytes, binary: bool = False) -> None:
        """A WebSocket frame exactly as given (to test malformed input)."""
        await self.conn.write_message(data, binary=binary)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self._reader is not None:
            self._reader.cancel()


class XhrStreamingClient(BaseClient):
    def __init__(self, base: str, origin: str | None = None, path: str | None = None):
        super().__init__()
        self.base = f"{base}/sync/{path or session_path()}"
        self.origin = origin
        self.http = AsyncHTTPClient(force_instance=True)
        self._buf = ""
        self._task: asyncio.Task | None = None
        self.status: int | None = None

    def _headers(self) -> dict:
        return {"Origin": self.origin} if self.origin else {}

    async def connect(self, timeout: float = 10.0) -> "XhrStreamingClient":
        self._task = asyncio.create_task(self._stream())
        done, _ = await asyncio.wait([self._task, asyncio.ensure_future(self.opened.wait())], timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()  # raises the HTTP error
        if not self.opened.is_set():
            raise TimeoutError("no open frame")
        return self

    def _chunk(self, chunk: bytes) -> None:
        self._buf += chunk.decode()
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line and set(line) != {"h"} or line == "h":
                self._frame(line)

    async def _stream(self) -> None:
        try:
            resp = await self.http.fetch(HTTPRequest(f"{self.base}/xhr_streaming", method="POST", body=b"",
                                                     headers=self._headers(), streaming_callback=self._chunk,
                                                     request_timeout=3600))
            self.status = resp.code
        finally:
            if not self.closed.is_set():
                self._closed()

    async def send_text(self, text: str) -> None:
        await self.post_send(json.dumps([text]))

    async def post_send(self, body: str | bytes, origin: str | None = None) -> int:
        headers = {"Content-Type": "text/plain"}
        if origin or self.origin:
            headers["Origin"] = origin or self.origin
        try:
            resp = await self.http.fetch(HTTPRequest(f"{self.base}/xhr_send", method="POST", body=body, headers=headers))
            return resp.code
        except HTTPClientError as exc:
            return exc.code

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.http.close()


class XhrPollingClient(BaseClient):
    def __init__(self, base: str, origin: str | None = None, path: str | None = None):
        super().__init__()
        self.base = f"{base}/sync/{path or session_path()}"
        self.origin = origin
        self.http = AsyncHTTPClient(force_instance=True)
        self._task: asyncio.Task | None = None
        self.responses: list = []  # (status, headers, body) of each poll

    async def poll_once(self, timeout: float = 30.0):
        headers = {"Origin": self.origin} if self.origin else {}
        resp = await self.http.fetch(HTTPRequest(f"{self.base}/xhr", method="POST", body=b"", headers=headers,
                                                 request_timeout=timeout), raise_error=False)
        self.responses.append(resp)
        if resp.code == 200:
            for line in resp.body.decode().split("\n"):
                if line:
                    self._frame(line)
        return resp

    async def connect(self, timeout: float = 10.0) -> "XhrPollingClient":
        resp = await self.poll_once(timeout)
        if resp.code != 200:
            raise HTTPClientError(resp.code)
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while not self.closed.is_set():
            resp = await self.poll_once()
            if resp.code != 200:
                self._closed()

    async def send_text(self, text: str) -> None:
        headers = {"Content-Type": "text/plain", **({"Origin": self.origin} if self.origin else {})}
        await self.http.fetch(HTTPRequest(f"{self.base}/xhr_send", method="POST", body=json.dumps([text]), headers=headers))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.http.close()
