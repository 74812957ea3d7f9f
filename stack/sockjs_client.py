"""One Python SockJS client, for the tests, chaos's browser-like recorders and bench's
measuring client. It speaks the sync server's transports:

- `websocket`: SockJS-framed WebSocket (/sync/<server>/<session>/websocket), what
  sockjs-client uses first;
- `rawwebsocket`: the raw WebSocket endpoint (/sync/websocket), one protocol message per
  WebSocket message, no framing;
- `xhr_streaming`: a long POST streaming frames, reopened on the same session when the
  server ends it (every ~128 KB, SockJS's response_limit), as sockjs-client does;
- `eventsource`: the same over a long GET of `text/event-stream` (`data: <frame>` lines);
- `xhr`: xhr-polling, one POST per batch of frames.

SockJS frames: "o" open, "h" heartbeat, 'a["...", ...]' messages, 'c[code,"reason"]' close.
Every received frame lands in `inbox` as (kind, payload) with kind "open", "heartbeat",
"messages" (payload: the decoded protocol messages) or "close" ([code, reason]); read it
frame by frame (`frames()`, chaos) or message by message (`recv()`, `quiet()`, tests), or
give `on_message(message, arrived)` to get each message as it arrives with the wall-clock
time its frame was read, taken before the message is decoded (bench: decoding a large
message, a 10k-event recovery is megabytes, is the client's cost, not the server's). Our
own {"type": "heartbeat"} messages are also kept in `heartbeats`, and recv() skips them.

The client is abortable at any moment, like a browser tab that is closed (`abort()`: the
TCP connection drops, no close handshake), and can stop reading (`pause()`: a frozen tab;
the socket's buffers fill, so the server really sees a stalled reader). The xhr
transports speak HTTP/1.1 over raw asyncio streams for that reason (`http_post`, also
used by the fuzz tests for raw xhr_send bodies); `send_frame()` writes a WebSocket
message exactly as given (malformed input).
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import string
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import urlsplit

from tornado.httpclient import HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

log = logging.getLogger(__name__)

TRANSPORTS = ("websocket", "rawwebsocket", "xhr_streaming", "eventsource", "xhr")
# sockjs-client's and bench's spellings of the same transports
ALIASES = {"xhr-streaming": "xhr_streaming", "xhr-polling": "xhr", "xhr_polling": "xhr"}
MAX_MESSAGE_BYTES = 64 << 20
_DEFAULT = object()  # "the client's own Origin" (None means: send no Origin header)


class SessionClosed(ConnectionError):
    """The SockJS session ended (close frame, connection lost, or the server forgot it)."""


def transport_name(name: str) -> str:
    """The canonical name of a transport; ValueError for an unknown one.

    >>> transport_name("xhr-streaming")
    'xhr_streaming'
    """
    canonical = ALIASES.get(name, name)
    if canonical not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; expected one of {TRANSPORTS}")
    return canonical


def session_path() -> str:
    """A fresh `<server>/<session>` path segment pair, as sockjs-client makes one."""
    session = "".join(random.choices(string.ascii_lowercase + string.digits, k=16))
    return f"{random.randint(0, 999):03d}/{session}"


def decode_message(text: str) -> Any:
    """A protocol message: decoded JSON, or the raw string when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_frame(frame: str) -> tuple[str, list[Any]]:
    """('open'|'heartbeat'|'messages'|'close', payload); ValueError for anything else.

    >>> parse_frame('a["{}", "not json"]')
    ('messages', [{}, 'not json'])
    >>> parse_frame('c[3000,"Go away!"]')
    ('close', [3000, 'Go away!'])
    """
    if frame == "o":
        return "open", []
    if frame == "h":
        return "heartbeat", []
    if frame.startswith("a"):
        return "messages", [decode_message(text) for text in json.loads(frame[1:])]
    if frame.startswith("c"):
        return "close", json.loads(frame[1:])
    raise ValueError(f"unknown SockJS frame {frame[:40]!r}")


async def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float,
                    on_chunk: Callable[[bytes], None] | None = None,
                    gate: asyncio.Event | None = None, method: str = "POST") -> tuple[int, bytes]:
    """One HTTP/1.1 POST (or `method`) with Connection: close; (status, body). Body chunks
    go to on_chunk as they arrive when given (the body returned is then empty). `timeout`
    bounds the connect and the status line, not a streaming body; while `gate` is cleared
    nothing is read (backpressure, as a frozen tab)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 80), timeout)
    try:
        head = [f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
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
                if gate is not None:
                    await gate.wait()
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


class Client:
    """One SockJS session over one transport. Make it with `connect()` or `make_client()`.

    sockjs_url is the server's SockJS prefix (http://host:port/sync); origin the Origin
    header sent with every request (None: none, as a non-browser program); path a
    `<server>/<session>` to use instead of a fresh one (session-hijack tests)."""

    transport = ""

    def __init__(self, sockjs_url: str, *, origin: str | None = None, path: str | None = None,
                 on_message: Callable[[Any, float], None] | None = None, timeout: float = 10.0):
        self.base = sockjs_url.rstrip("/")
        self.url = f"{self.base}/{path or session_path()}"  # the session's URL (rawwebsocket: unused)
        self.origin = origin
        self.timeout = timeout
        self.inbox: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
        self.heartbeats: deque[dict] = deque(maxlen=100)
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()     # set by a close frame, a lost connection, abort() or close()
        self.close_frame: list | None = None
        self.reading = asyncio.Event()    # cleared: read nothing (pause)
        self.reading.set()
        self._on_message = on_message
        self._pending: deque[Any] = deque()  # messages of a consumed frame that recv() has not returned yet
        self._close_seen = False

    def _headers(self, origin: Any = _DEFAULT) -> dict[str, str]:
        origin = self.origin if origin is _DEFAULT else origin
        return {"Origin": origin} if origin else {}

    # ------------------------------------------------------------ receiving (transport side)
    def _deliver(self, kind: str, payload: list[Any], arrived: float = 0.0) -> None:
        if kind == "open":
            self.opened.set()
        elif kind == "close":
            if self.close_frame is None:
                self.close_frame = payload
            self.closed.set()
        elif kind == "messages":
            self.heartbeats.extend(m for m in payload if isinstance(m, dict) and m.get("type") == "heartbeat")
            if self._on_message is not None:
                for message in payload:
                    self._on_message(message, arrived)
                return
        self.inbox.put_nowait((kind, payload))

    def _frame(self, text: str) -> None:
        try:
            if text.startswith("a"):
                self._messages(json.loads(text[1:]))
                return
            kind, payload = parse_frame(text)
        except ValueError:
            log.warning("bad SockJS frame %r", text[:80])
            return
        self._deliver(kind, payload)

    def _messages(self, texts: list[str]) -> None:
        arrived = time.time()  # before decoding (see the module doc)
        self._deliver("messages", [decode_message(text) for text in texts], arrived)

    # ------------------------------------------------------------ receiving (caller side)
    async def frames(self, timeout: float) -> tuple[str, list[Any]]:
        """The next frame; SessionClosed once the session closed, TimeoutError if none came."""
        if self._close_seen:
            raise SessionClosed(f"closed: {self.close_frame}")
        kind, payload = await asyncio.wait_for(self.inbox.get(), timeout)
        if kind == "close":
            self._close_seen = True
            raise SessionClosed(f"closed: {payload}")
        return kind, payload

    async def recv(self, timeout: float = 10.0) -> Any:
        """The next protocol message other than a heartbeat; SessionClosed, TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._pending:
                message = self._pending.popleft()
                if not (isinstance(message, dict) and message.get("type") == "heartbeat"):
                    return message
            kind, payload = await self.frames(deadline - loop.time())
            if kind == "messages":
                self._pending.extend(payload)

    async def recv_type(self, kind: str, timeout: float = 10.0) -> dict:
        message = await self.recv(timeout)
        assert message["type"] == kind, f"expected {kind}, got {message}"
        return message

    async def quiet(self, seconds: float = 0.5) -> list[Any]:
        """Whatever arrives within `seconds` (expected: nothing), up to a close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        got: list[Any] = []
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(await self.recv(left))
            except (TimeoutError, asyncio.TimeoutError, SessionClosed):
                break
        return got

    # ------------------------------------------------------------ sending
    async def send(self, *messages: Any) -> None:
        """Protocol messages (a str is sent as it is, anything else as JSON), in one frame."""
        await self._send_texts([m if isinstance(m, str) else json.dumps(m) for m in messages])

    async def send_raw(self, body: str) -> None:
        """One SockJS frame body exactly as given (a JSON array of strings, normally)."""
        raise NotImplementedError

    async def _send_texts(self, texts: list[str]) -> None:
        await self.send_raw(json.dumps(texts))

    async def auth(self, token: str) -> Any:
        await self.send({"type": "auth", "token": token})
        return await self.recv()

    async def subscribe(self, topic: str, since: int) -> None:
        await self.send({"type": "subscribe", "topic": topic, "since": since})

    # ------------------------------------------------------------ life
    async def open(self, timeout: float = 10.0) -> "Client":
        raise NotImplementedError

    def pause(self) -> None:
        """Read nothing from the connection until resume()."""
        self.reading.clear()

    def resume(self) -> None:
        self.reading.set()

    def abort(self) -> None:
        """Drop the connection without a word, like a killed tab."""
        raise NotImplementedError

    async def close(self) -> None:
        """End the session from this side (a WebSocket close handshake; the xhr transports
        just stop)."""
        self.abort()


class WebSocketClient(Client):
    """`websocket` (SockJS-framed) or, with raw=True, `rawwebsocket`."""

    def __init__(self, sockjs_url: str, *, raw: bool = False, **kwargs: Any):
        super().__init__(sockjs_url, **kwargs)
        self.raw = raw
        self.transport = "rawwebsocket" if raw else "websocket"
        ws_base = (self.base if raw else self.url).replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.ws_url = ws_base + "/websocket"
        self.conn: WebSocketClientConnection | None = None
        self._reader: asyncio.Task | None = None

    async def open(self, timeout: float = 10.0) -> "WebSocketClient":
        """Connect (tornado's HTTPClientError for a refused handshake, e.g. 403 for a foreign
        Origin); a framed session is open once its "o" frame arrived."""
        request = HTTPRequest(self.ws_url, headers=self._headers(), connect_timeout=timeout)
        self.conn = await asyncio.wait_for(websocket_connect(request, max_message_size=MAX_MESSAGE_BYTES), timeout)
        self._reader = asyncio.ensure_future(self._read())
        if self.raw:
            self.opened.set()
        else:
            await asyncio.wait_for(self.opened.wait(), timeout)
        return self

    async def _read(self) -> None:
        assert self.conn is not None
        while True:
            await self.reading.wait()
            data = await self.conn.read_message()
            if data is None:
                code, reason = self.conn.close_code, self.conn.close_reason
                self._deliver("close", [code, reason or ""] if code else [0, "connection lost"])
                return
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            if self.raw:
                self._messages([text])
            else:
                self._frame(text)

    async def send_frame(self, data: str | bytes, binary: bool | None = None) -> None:
        """One WebSocket message exactly as given (binary for bytes unless told)."""
        if self.conn is None or self.conn.protocol is None:
            raise SessionClosed("websocket closed")
        try:
            await self.conn.write_message(data, binary=isinstance(data, bytes) if binary is None else binary)
        except (WebSocketClosedError, StreamClosedError) as exc:
            raise SessionClosed("websocket closed") from exc

    async def send_raw(self, body: str) -> None:
        await self.send_frame(body, binary=False)

    async def _send_texts(self, texts: list[str]) -> None:
        if self.raw:  # no framing: one WebSocket message per protocol message
            for text in texts:
                await self.send_frame(text, binary=False)
        else:
            await self.send_raw(json.dumps(texts))

    def abort(self) -> None:
        self.closed.set()
        if self._reader:
            self._reader.cancel()
        if self.conn is not None:
            stream = getattr(self.conn.protocol, "stream", None) if self.conn.protocol else None
            if stream is not None:
                stream.close()  # drop TCP without a close handshake, like a killed tab
            else:
                self.conn.close()

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self._reader is not None:
            self._reader.cancel()
        self.closed.set()


class XhrClient(Client):
    """`xhr_streaming` (streaming=True), `eventsource` (streaming, eventsource=True) or `xhr`
    (polling). All three send with xhr_send."""

    def __init__(self, sockjs_url: str, *, streaming: bool, eventsource: bool = False, **kwargs: Any):
        super().__init__(sockjs_url, **kwargs)
        self.streaming = streaming or eventsource
        self.eventsource = eventsource
        self.transport = "eventsource" if eventsource else "xhr_streaming" if streaming else "xhr"
        self._poller: asyncio.Task | None = None
        # xhr-polling: how long each poll took, request sent to response read (seconds;
        # the latest 10,000). A poll that found messages waiting is one round trip: what
        # polling adds to a message's latency over a streaming transport.
        self.poll_seconds: deque[float] = deque(maxlen=10_000)

    async def open(self, timeout: float = 10.0) -> "XhrClient":
        """Start receiving; SessionClosed if the first response is not the open frame (a
        403 for a foreign Origin, say)."""
        self._poller = asyncio.ensure_future(self._poll())
        kind, _ = await self.frames(timeout)
        if kind != "open":
            raise SessionClosed(f"expected open frame, got {kind}")
        return self

    async def _poll(self) -> None:
        buf = bytearray()
        prelude = [self.streaming]
        eventsource = self.eventsource

        def on_chunk(data: bytes) -> None:
            buf.extend(data)
            end = buf.rfind(b"\n")
            if end < 0:
                return
            # Every whole line of the chunk at once (one copy per chunk, not per line).
            lines = bytes(buf[:end]).split(b"\n")
            del buf[:end + 1]
            for line in lines:
                if eventsource:
                    # text/event-stream: "data: <frame>\r\n\r\n"; blank lines end events.
                    if line.startswith(b"data: "):
                        self._on_line(line[6:].rstrip(b"\r").decode("utf-8", "replace"))
                    continue
                text = line.decode("utf-8", "replace")
                if prelude[0] and len(text) > 1 and set(text) == {"h"}:
                    prelude[0] = False  # the 2 KiB "hhh..." prelude that defeats proxy buffering
                    continue
                self._on_line(text)

        suffix = "/eventsource" if eventsource else "/xhr_streaming" if self.streaming else "/xhr"
        method = "GET" if eventsource else "POST"
        try:
            while not self.closed.is_set():
                await self.reading.wait()
                buf.clear()
                prelude[0] = self.streaming
                started = time.monotonic()
                status, _ = await http_post(self.url + suffix, b"", self._headers(), self.timeout, on_chunk,
                                            gate=self.reading, method=method)
                if not self.streaming:
                    self.poll_seconds.append(time.monotonic() - started)
                if status != 200:
                    raise SessionClosed(f"{suffix} answered {status}")
        except (OSError, asyncio.IncompleteReadError, SessionClosed, ValueError) as exc:
            self._deliver("close", [0, f"receiver ended: {exc}"])

    def _on_line(self, text: str) -> None:
        if not text:
            return
        if text == "o" and self.opened.is_set():
            # A second open frame: the server forgot our session (it restarted).
            self._deliver("close", [0, "session lost"])
            return
        self._frame(text)

    async def send_raw(self, body: str) -> None:
        status, resp = await http_post(self.url + "/xhr_send", body.encode("utf-8"), self._headers(), self.timeout)
        if status not in (200, 204):
            raise SessionClosed(f"xhr_send answered {status}: {resp[:100]!r}")

    async def post_send(self, body: str | bytes, origin: Any = _DEFAULT) -> int:
        """The status of one xhr_send with this body as it is, with the client's Origin
        unless another (or None: no Origin) is given."""
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        status, _ = await http_post(self.url + "/xhr_send", data, self._headers(origin), self.timeout)
        return status

    def abort(self) -> None:
        self.closed.set()
        if self._poller:
            self._poller.cancel()


def make_client(transport: str, sockjs_url: str, origin: str | None = None, **kwargs: Any) -> Client:
    """A client of the given transport (not connected yet: `await client.open()`)."""
    kind = transport_name(transport)
    if kind in ("websocket", "rawwebsocket"):
        return WebSocketClient(sockjs_url, raw=kind == "rawwebsocket", origin=origin, **kwargs)
    return XhrClient(sockjs_url, streaming=kind == "xhr_streaming", eventsource=kind == "eventsource", origin=origin,
                     **kwargs)


async def connect(transport: str, sockjs_url: str, origin: str | None = None, *, timeout: float = 10.0,
                  **kwargs: Any) -> Client:
    """A client of the given transport with its session open."""
    return await make_client(transport, sockjs_url, origin, **kwargs).open(timeout)
