"""Minimal SockJS client transports (websocket, xhr-streaming, xhr-polling) for test clients.

Each transport opens a session, sends JSON protocol messages and yields received ones. They
are deliberately thin and abortable at any moment (a chaos client must be killable like a
browser tab): the xhr transports speak HTTP/1.1 over raw asyncio streams for that reason.
SockJS frames: "o" open, "h" heartbeat, 'a["..."]' messages, 'c[code,"reason"]' close.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import string
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

log = logging.getLogger(__name__)

TRANSPORTS = ("websocket", "xhr_streaming", "xhr")


class SessionClosed(ConnectionError):
    """The SockJS session ended (close frame, connection lost, or the server forgot it)."""


def session_path(base_url: str) -> str:
    server = f"{random.randint(0, 999):03d}"
    session = "".join(random.choices(string.ascii_lowercase + string.digits, k=16))
    return f"{base_url.rstrip('/')}/{server}/{session}"


def parse_frame(frame: str) -> tuple[str, list[Any]]:
    """('open'|'heartbeat'|'messages'|'close', payload). Messages are decoded JSON objects
    (a message that is not JSON is returned as the raw string)."""
    if frame == "o":
        return "open", []
    if frame == "h":
        return "heartbeat", []
    if frame.startswith("a"):
        out: list[Any] = []
        for text in json.loads(frame[1:]):
            try:
                out.append(json.loads(text))
            except ValueError:
                out.append(text)
        return "messages", out
    if frame.startswith("c"):
        return "close", json.loads(frame[1:])
    raise ValueError(f"unknown SockJS frame {frame[:40]!r}")


class Transport:
    name = ""

    def __init__(self, base_url: str, origin: str | None):
        self.url = session_path(base_url)
        self.origin = origin
        self.inbox: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
        self.closed = False
        # Cleared = stop reading the socket (a frozen tab): the websocket transport then
        # stops pulling frames, so TCP backpressure reaches the server.
        self.reading = asyncio.Event()
        self.reading.set()

    async def open(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    async def send_raw(self, body: str) -> None:
        raise NotImplementedError

    async def send(self, *messages: dict[str, Any]) -> None:
        await self.send_raw(json.dumps([json.dumps(m) for m in messages]))

    async def frames(self, timeout: float) -> tuple[str, list[Any]]:
        """The next frame; raises TimeoutError or SessionClosed."""
        kind, payload = await asyncio.wait_for(self.inbox.get(), timeout)
        if kind == "close":
            raise SessionClosed(f"closed: {payload}")
        return kind, payload

    def _deliver(self, frame: str) -> None:
        try:
            self.inbox.put_nowait(parse_frame(frame))
        except ValueError:
            log.warning("bad frame %r", frame[:80])

    def abort(self) -> None:
        raise NotImplementedError


class WebSocketTransport(Transport):
    name = "websocket"

    def __init__(self, base_url: str, origin: str | None):
        super().__init__(base_url, origin)
        self.conn: WebSocketClientConnection | None = None
        self._reader: asyncio.Task | None = None

    async def write(self, payload: str | bytes) -> None:
        """One raw websocket message (tests send malformed frames with it)."""
        if self.conn is None or self.conn.protocol is None:
            raise SessionClosed("websocket closed")
        try:
            await self.conn.write_message(payload, binary=isinstance(payload, bytes))
        except (WebSocketClosedError, StreamClosedError) as exc:
            raise SessionClosed("websocket closed") from exc

    async def open(self, timeout: float = 5.0) -> None:
        url = self.url.replace("http://", "ws://", 1) + "/websocket"
        headers = {"Origin": self.origin} if self.origin else {}
        self.conn = await asyncio.wait_for(
            websocket_connect(HTTPRequest(url, headers=headers, connect_timeout=timeout), max_message_size=64 << 20),
            timeout)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.conn is not None
        while True:
            await self.reading.wait()
            msg = await self.conn.read_message()
            if msg is None:
                self.inbox.put_nowait(("close", [0, "connection lost"]))
                return
            self._deliver(msg if isinstance(msg, str) else msg.decode("utf-8", "replace"))

    async def send_raw(self, body: str) -> None:
        if self.conn is None or self.conn.protocol is None:
            raise SessionClosed("websocket closed")
        try:
            await self.conn.write_message(body)
        except (WebSocketClosedError, StreamClosedError) as exc:
            raise SessionClosed("websocket closed") from exc

    def abort(self) -> None:
        self.closed = True
        if self._reader:
            self._reader.cancel()
        if self.conn is not None:
            stream = getattr(self.conn.protocol, "stream", None) if self.conn.protocol else None
            if stream is not None:
                stream.close()  # drop TCP without a close handshake, like a killed tab
            else:
                self.conn.close()


async def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float,
                    on_chunk=None) -> tuple[int, bytes]:
    """One HTTP/1.1 POST with Connection: close; body chunks are passed to on_chunk as they arrive."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 80), timeout)
    try:
        head = [f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                f"Host: {parts.netloc}", "Connection: close", f"Content-Length: {len(body)}",
                "Content-Type: text/plain;charset=UTF-8"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        if not status_line:
            raise SessionClosed("no response")
        status = int(status_line.split()[1])
        resp_headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            resp_headers[k.strip().lower()] = v.strip()
        collected = bytearray()

        def emit(data: bytes) -> None:
            if on_chunk:
                on_chunk(data)
            else:
                collected.extend(data)

        if resp_headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readline()
                if not size_line:
                    break
                size = int(size_line.strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    break
                emit(await reader.readexactly(size))
                await reader.readline()
        elif "content-length" in resp_headers:
            emit(await reader.readexactly(int(resp_headers["content-length"])))
        else:
            while chunk := await reader.read(65536):
                emit(chunk)
        return status, bytes(collected)
    finally:
        writer.close()


class XhrTransport(Transport):
    """xhr (polling): one POST per frame batch. xhr_streaming: a long POST streaming frames,
    reopened on the same session when the server ends it (as sockjs-client does)."""

    def __init__(self, base_url: str, origin: str | None, streaming: bool):
        super().__init__(base_url, origin)
        self.streaming = streaming
        self.name = "xhr_streaming" if streaming else "xhr"
        self._poller: asyncio.Task | None = None
        self._opened = False

    @property
    def _headers(self) -> dict[str, str]:
        return {"Origin": self.origin} if self.origin else {}

    async def open(self, timeout: float = 5.0) -> None:
        self._poller = asyncio.ensure_future(self._poll())
        kind, _ = await self.frames(timeout)
        if kind != "open":
            raise SessionClosed(f"expected open frame, got {kind}")

    async def _poll(self) -> None:
        buf = bytearray()
        prelude = [self.streaming]

        def on_chunk(data: bytes) -> None:
            buf.extend(data)
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                text = line.decode("utf-8", "replace")
                if prelude[0] and text and set(text) == {"h"} and len(text) > 1:
                    prelude[0] = False  # the 2 KiB "hhh..." prelude that defeats proxy buffering
                    continue
                self._frame(text)

        suffix = "/xhr_streaming" if self.streaming else "/xhr"
        try:
            while not self.closed:
                buf.clear()
                prelude[0] = self.streaming
                status, _ = await http_post(self.url + suffix, b"", self._headers, 10.0, on_chunk)
                if status != 200:
                    raise SessionClosed(f"{suffix} answered {status}")
        except (OSError, asyncio.IncompleteReadError, SessionClosed, ValueError) as exc:
            self.inbox.put_nowait(("close", [0, f"receiver ended: {exc}"]))

    def _frame(self, text: str) -> None:
        if not text:
            return
        if text == "o":
            if self._opened:
                # A second open frame: the server forgot our session (it restarted).
                self.inbox.put_nowait(("close", [0, "session lost"]))
                self.closed = True
                return
            self._opened = True
        self._deliver(text)

    async def send_raw(self, body: str) -> None:
        status, resp = await http_post(self.url + "/xhr_send", body.encode("utf-8"), self._headers, 10.0)
        if status not in (200, 204):
            raise SessionClosed(f"xhr_send answered {status}: {resp[:100]!r}")

    def abort(self) -> None:
        self.closed = True
        if self._poller:
            self._poller.cancel()


def make_transport(kind: str, base_url: str, origin: str | None) -> Transport:
    if kind == "websocket":
        return WebSocketTransport(base_url, origin)
    if kind in ("xhr_streaming", "xhr"):
        return XhrTransport(base_url, origin, streaming=kind == "xhr_streaming")
    raise ValueError(f"unknown transport {kind!r}; expected one of {TRANSPORTS}")
