"""Regression tests for our sockjs-tornado fixes, and the SockJS protocol behaviours we
rely on (after the public sockjs-protocol suite: greeting, info, polling/streaming
framing, raw and framed websocket, session closing). A real Tornado server in-process
with a tiny echo connection; no database needed."""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import tornado.httpserver
import tornado.netutil
import tornado.web
from sockjs.tornado import SockJSConnection, SockJSRouter
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from stack.sockjs_client import session_path
from syncserver.origins import OriginPolicy
from syncserver.sockjs_patches import NO_CACHE, PatchedRouter

ORIGIN = "http://127.0.0.1:8000"


class Echo(SockJSConnection):
    def on_message(self, message):
        self.send(message)


class CloseAtOnce(SockJSConnection):
    def on_open(self, info):
        self.close()

    def on_message(self, message):
        pass


@asynccontextmanager
async def serve(conn=Echo, patched=True, disabled=("htmlfile", "jsonp"), origins=(ORIGIN,)):
    settings = {"disabled_transports": list(disabled), "jsessionid": False}
    if patched:
        router = PatchedRouter(conn, "/echo", settings, OriginPolicy(set(origins)))
    else:
        router = SockJSRouter(conn, "/echo", settings)
    server = tornado.httpserver.HTTPServer(tornado.web.Application(router.urls))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    http = AsyncHTTPClient(force_instance=True)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/echo", http
    finally:
        http.close()
        router._sessions_cleanup.stop()
        server.stop()
        await server.close_all_connections()


def post(url, body=b"", **kw):
    return HTTPRequest(url, method="POST", body=body, request_timeout=5, **kw)


async def test_fault1_session_closed_in_on_open_over_xhr_polling_answers_and_then_closes(caplog):
    async with serve(CloseAtOnce) as (base, http):
        url = f"{base}/{session_path()}/xhr"
        first = await http.fetch(post(url))
        assert first.body == b"o\n"
        assert first.headers["Content-Length"] == "2"
        second = await http.fetch(post(url))
        assert second.body == b'c[3000,"Go away!"]\n'
    assert "Content-Length" not in caplog.text


async def test_fault1_is_real_in_upstream(caplog):
    # Proves the test above can fail: upstream raises on the same request.
    async with serve(CloseAtOnce, patched=False) as (base, http):
        await http.fetch(HTTPRequest(f"{base}/{session_path()}/xhr", method="POST", body=b"",
                                     request_timeout=1.5), raise_error=False)
    assert "Tried to write more data than Content-Length" in caplog.text


async def test_fault2_xhr_send_204_keeps_its_content_type():
    async with serve() as (base, http):
        path = f"{base}/{session_path()}"
        assert (await http.fetch(post(f"{path}/xhr"))).body == b"o\n"
        sent = await http.fetch(post(f"{path}/xhr_send", b'["x"]'))
        assert sent.code == 204
        assert sent.headers["Content-Type"] == "text/plain; charset=UTF-8"
        assert (await http.fetch(post(f"{path}/xhr"))).body == b'a["x"]\n'


async def test_fault3_no_transform_on_every_uncached_response():
    async with serve() as (base, http):
        path = f"{base}/{session_path()}"
        for req in (post(f"{path}/xhr"), post(f"{path}/xhr_send", b'["x"]'), HTTPRequest(f"{base}/info")):
            resp = await http.fetch(req)
            assert resp.headers["Cache-Control"] == NO_CACHE
            assert "no-transform" in resp.headers["Cache-Control"]


async def test_greeting_and_info():
    async with serve() as (base, http):
        for url in (base, base + "/"):
            resp = await http.fetch(url)
            assert resp.body == b"Welcome to SockJS!\n"
            assert resp.headers["Content-Type"] == "text/plain; charset=UTF-8"
        info = await http.fetch(HTTPRequest(f"{base}/info", headers={"Origin": ORIGIN}))
        doc = json.loads(info.body)
        assert doc["websocket"] is True and doc["cookie_needed"] is False and isinstance(doc["entropy"], int)
        assert info.headers["Content-Type"] == "application/json; charset=UTF-8"
        assert info.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert info.headers["Access-Control-Allow-Credentials"] == "true"
        pre = await http.fetch(HTTPRequest(f"{base}/info", method="OPTIONS", headers={"Origin": ORIGIN}))
        assert pre.code == 204 and pre.headers["Access-Control-Allow-Methods"] == "OPTIONS, GET"
        iframe = await http.fetch(f"{base}/iframe.html", raise_error=False)
        assert iframe.code == 404


async def test_fault7_info_states_the_allowed_origins():
    # Upstream says "origins": ["*:*"] whatever the allowlist: any origin, which is false.
    async with serve(origins=("https://B.example:443", "http://127.0.0.1:8000")) as (base, http):
        for origin in (None, "https://b.example"):
            info = await http.fetch(HTTPRequest(f"{base}/info", headers={"Origin": origin} if origin else {}))
            assert json.loads(info.body)["origins"] == ["http://127.0.0.1:8000", "https://b.example"]


async def test_fault7_is_real_in_upstream():
    async with serve(patched=False) as (base, http):
        assert json.loads((await http.fetch(f"{base}/info")).body)["origins"] == ["*:*"]


async def test_xhr_polling_framing_and_unknown_session():
    async with serve() as (base, http):
        path = f"{base}/{session_path()}"
        missing = await http.fetch(post(f"{path}/xhr_send", b'["x"]'), raise_error=False)
        assert missing.code == 404
        assert (await http.fetch(post(f"{path}/xhr"))).body == b"o\n"
        await http.fetch(post(f"{path}/xhr_send", b'["a", "b"]'))
        resp = await http.fetch(post(f"{path}/xhr"))
        assert resp.body == b'a["a","b"]\n'
        assert resp.headers["Content-Type"] == "application/javascript; charset=UTF-8"
        for bad in (b"", b"[broken", b'"a string"', b"\xff\xfe"):
            r = await http.fetch(post(f"{path}/xhr_send", bad), raise_error=False)
            assert r.code == 500, bad
        await http.fetch(post(f"{path}/xhr_send", b'["still ok"]'))
        assert (await http.fetch(post(f"{path}/xhr"))).body == b'a["still ok"]\n'


async def test_second_concurrent_poll_is_refused_with_2010():
    async with serve() as (base, http):
        path = f"{base}/{session_path()}"
        await http.fetch(post(f"{path}/xhr"))
        first = asyncio.ensure_future(http.fetch(post(f"{path}/xhr")))
        await asyncio.sleep(0.2)
        second = await http.fetch(post(f"{path}/xhr"))
        assert second.body == b'c[2010,"Another connection still open"]\n'
        await http.fetch(post(f"{path}/xhr_send", b'["x"]'))
        assert (await first).body == b'a["x"]\n'


async def test_xhr_streaming_prelude_and_frames():
    async with serve() as (base, http):
        path = f"{base}/{session_path()}"
        chunks: list[bytes] = []
        got_open = asyncio.Event()

        def on_chunk(c):
            chunks.append(c)
            if b"o\n" in b"".join(chunks):
                got_open.set()

        stream = asyncio.ensure_future(http.fetch(HTTPRequest(f"{path}/xhr_streaming", method="POST", body=b"",
                                                              streaming_callback=on_chunk, request_timeout=10)))
        await asyncio.wait_for(got_open.wait(), 5)
        await http.fetch(post(f"{path}/xhr_send", b'["hi"]'))
        for _ in range(50):
            if b'a["hi"]\n' in b"".join(chunks):
                break
            await asyncio.sleep(0.05)
        assert b"".join(chunks) == b"h" * 2048 + b"\no\n" + b'a["hi"]\n'
        stream.cancel()


async def test_websocket_raw_and_framed_echo():
    async with serve() as (base, http):
        ws_base = base.replace("http://", "ws://")
        r = await websocket_connect(f"{ws_base}/websocket")
        await r.write_message("hello")
        assert await r.read_message() == "hello"
        r.close()
        f = await websocket_connect(f"{ws_base}/{session_path()}/websocket")
        assert await f.read_message() == "o"
        await f.write_message('["a","b"]')
        assert await f.read_message() == 'a["a"]'
        assert await f.read_message() == 'a["b"]'
        await f.write_message("[broken")  # SockJS: broken framing ends the connection
        assert await asyncio.wait_for(f.read_message(), 5) is None


async def raw_http(base: str, request: bytes, timeout: float) -> tuple[bytes, bool]:
    """Send one raw HTTP request; return what came back and whether the server closed
    the connection (EOF) within `timeout`."""
    host, port = base.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    data, eof = b"", False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                eof = True
                break
            data += chunk
    except asyncio.TimeoutError:
        pass
    finally:
        writer.close()
    return data, eof


def http10_streaming_request(base: str) -> bytes:
    path = base.split("//")[1].split("/", 1)[1]
    return (f"POST /{path}/{session_path()}/xhr_streaming HTTP/1.0\r\n"
            "Connection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").encode()


async def test_fault4_http10_keepalive_streaming_response_ends_with_the_connection():
    # No Content-Length and no chunking on HTTP/1.0: only a close can end the body.
    async with serve(CloseAtOnce) as (base, http):
        data, eof = await raw_http(base, http10_streaming_request(base), timeout=5)
    assert eof, "the server kept the connection open after finishing the response"
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert body == b"h" * 2048 + b"\n" + b"o\n" + b'c[3000,"Go away!"]\n'


async def test_fault4_is_real_in_upstream():
    async with serve(CloseAtOnce, patched=False) as (base, http):
        data, eof = await raw_http(base, http10_streaming_request(base), timeout=1.5)
    assert data.endswith(b'c[3000,"Go away!"]\n') and not eof


async def test_fault5_raw_websocket_close_carries_the_session_code_and_reason():
    async with serve(CloseAtOnce) as (base, http):
        ws = await websocket_connect(base.replace("http://", "ws://") + "/websocket")
        assert await asyncio.wait_for(ws.read_message(), 5) is None
        assert (ws.close_code, ws.close_reason) == (3000, "Go away!")


async def test_fault6_jsonp_callback_is_validated_and_prefixed():
    async with serve(disabled=()) as (base, http):
        path = f"{base}/{session_path()}"
        # sockjs-client's own callback names look like this one.
        opened = await http.fetch(f"{path}/jsonp?c=_jp.a1b2-c")
        assert opened.body == b'/**/_jp.a1b2-c("o");\r\n'
        sent = await http.fetch(post(f"{path}/jsonp_send", b"d=%5B%22x%22%5D",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}))
        assert sent.body == b"ok"
        assert (await http.fetch(f"{path}/jsonp?c=cb")).body == b'/**/cb("a[\\"x\\"]");\r\n'
        for bad in ("alert(1)", "x%3Balert(1)", "%20", "a%0Ab", "%3Cscript%3E"):
            r = await http.fetch(f"{base}/{session_path()}/jsonp?c={bad}", raise_error=False)
            assert (r.code, r.body) == (500, b'invalid "callback" parameter'), bad
            assert r.headers["Cache-Control"] == NO_CACHE


async def test_fault6_jsonp_session_closed_in_on_open_answers_one_frame_per_poll(caplog):
    async with serve(CloseAtOnce, disabled=()) as (base, http):
        url = f"{base}/{session_path()}/jsonp?c=x"
        assert (await http.fetch(HTTPRequest(url, request_timeout=5))).body == b'/**/x("o");\r\n'
        closed = await http.fetch(HTTPRequest(url, request_timeout=5))
        assert closed.body == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'
    assert "Content-Length" not in caplog.text


async def test_fault6_htmlfile_keeps_a_valid_callback_verbatim_and_refuses_others():
    async with serve(disabled=()) as (base, http):
        for bad in ("x%3Balert(1)", "a%20b"):
            r = await http.fetch(f"{base}/{session_path()}/htmlfile?c={bad}", raise_error=False)
            assert (r.code, r.body) == (500, b'invalid "callback" parameter'), bad
        chunks: list[bytes] = []
        got_open = asyncio.Event()

        def on_chunk(c):
            chunks.append(c)
            if b'p("o");' in b"".join(chunks):
                got_open.set()

        stream = asyncio.ensure_future(http.fetch(HTTPRequest(
            f"{base}/{session_path()}/htmlfile?c=_jp.a1b2", streaming_callback=on_chunk, request_timeout=10)))
        await asyncio.wait_for(got_open.wait(), 5)
        stream.cancel()
        assert b"var c = parent._jp.a1b2;" in b"".join(chunks)


class NodelayProbe(SockJSConnection):
    """Answers any message with the TCP_NODELAY state of the socket its session is
    streaming on (the receiving transport's, not xhr_send's)."""

    def on_message(self, message):
        import socket

        sock = self.session.handler.request.connection.stream.socket
        self.send(str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))


@asynccontextmanager
async def open_stream(base: str, http, transport: str):
    """A new session's `transport` response, open (its "o" frame arrived): yields the
    session's URL, the chunks received so far (growing) and the response's future."""
    path = f"{base}/{session_path()}"
    chunks: list[bytes] = []
    method = "GET" if transport == "eventsource" else "POST"
    stream = asyncio.ensure_future(http.fetch(HTTPRequest(
        f"{path}/{transport}", method=method, body=b"" if method == "POST" else None,
        streaming_callback=chunks.append, request_timeout=10, headers={"Origin": ORIGIN})))
    try:
        for _ in range(100):
            if b"o" in b"".join(chunks).replace(b"h" * 2048, b""):
                break
            await asyncio.sleep(0.02)
        yield path, chunks, stream
    finally:
        stream.cancel()


async def streaming_nodelay(base: str, http, transport: str) -> bytes:
    async with open_stream(base, http, transport) as (path, chunks, _):
        await http.fetch(post(f"{path}/xhr_send", b'["?"]', headers={"Origin": ORIGIN}))
        for _ in range(100):
            body = b"".join(chunks)
            if b'a["' in body:
                return body.split(b'a["', 1)[1][:1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer on {transport}: {b''.join(chunks)[-200:]!r}")


async def test_fault8_streaming_responses_are_sent_without_nagle():
    # Nagle on a stream of small frames holds each one behind the client's delayed ACK.
    async with serve(NodelayProbe) as (base, http):
        for transport in ("xhr_streaming", "eventsource"):
            assert await streaming_nodelay(base, http, transport) == b"1", transport


async def test_fault8_is_real_in_upstream():
    async with serve(NodelayProbe, patched=False) as (base, http):
        assert await streaming_nodelay(base, http, "xhr_streaming") == b"0"


class Flood(SockJSConnection):
    """Answers a message "N" with N messages of 1 KB."""

    def on_message(self, message):
        for i in range(int(message)):
            self.send(f"{i:04d}" + "x" * 1020)


async def stream_a_flood(base: str, http, transport: str, count: int) -> tuple[int, bool]:
    """Open `transport` and have `count` KB sent down it; returns how many of the messages
    arrived and whether the response ended."""
    async with open_stream(base, http, transport) as (path, chunks, stream):
        await http.fetch(post(f"{path}/xhr_send", f'["{count}"]'.encode(), headers={"Origin": ORIGIN}))
        for _ in range(100):
            if b"".join(chunks).count(b"x" * 1020) >= count:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a response that is going to end has ended by now
        return b"".join(chunks).count(b"x" * 1020), stream.done()


async def test_fault9_an_eventsource_response_does_not_end_at_the_response_limit():
    # 200 KB, past the 128 KB after which a streaming response ends and the client opens
    # the next; sockjs-client waits 200 ms before it opens an EventSource again.
    async with serve(Flood) as (base, http):
        assert await stream_a_flood(base, http, "eventsource", 200) == (200, False)
        # XHR keeps the whole body in the browser's memory: it still rolls over.
        assert await stream_a_flood(base, http, "xhr_streaming", 200) == (200, True)


async def test_fault9_is_real_in_upstream():
    async with serve(Flood, patched=False) as (base, http):
        assert await stream_a_flood(base, http, "eventsource", 200) == (200, True)
