"""Our fixes for sockjs-tornado 1.0.7 on Tornado 6, as subclasses swapped into the
router's URL table (site-packages stays untouched; each fix has a regression test in
tests/syncserver/test_sockjs_patches.py).

1. A session closed right after it opens over xhr polling wrote a second frame into a
   response whose Content-Length was already fixed: "Tried to write more data than
   Content-Length", an unfinished request, a hung client. One polling response now
   carries exactly one frame; a close frame is served by the next poll, as SockJS
   specifies (a closed session answers every poll with its close frame).
2. Tornado 6 strips Content-Type from 204 responses; SockJS clients and the protocol
   expect xhr_send's 204 to keep "text/plain; charset=UTF-8".
3. Cache-Control lacked "no-transform": a compressing proxy buffers streaming responses.
4. A streaming response to an HTTP/1.0 keep-alive request has neither Content-Length nor
   chunking, so only closing the connection ends it; upstream's `no_keep_alive` flag is
   no longer read by Tornado 6, which kept the connection open: the client never saw the
   response end (a response_limit rollover or a close frame stalled the session).
5. A raw-WebSocket client (/websocket) got a close frame without the session's code and
   reason (3000 "Go away!", 3000 "Server shutting down"): they are passed on now.
6. The htmlfile and jsonp transports (off by default, see config.DEFAULT_DISABLED) now
   refuse a callback name outside [A-Za-z0-9_.-] with 500 'invalid "callback"
   parameter' (upstream reflected jsonp's verbatim and mangled htmlfile's: sockjs-client's
   "_jp.<id>" became "jp<id>", so htmlfile never worked); jsonp bodies start with "/**/"
   (Rosetta-Flash hardening), and a jsonp poll carries one frame like xhr (fault 1).
7. /info advertised "origins": ["*:*"] (any origin) whatever the allowlist; it states the
   allowed origins now (sockjs-client ignores the field; people reading it do not).
8. The streaming transports (xhr_streaming, eventsource, htmlfile) wrote each frame with
   Nagle's algorithm on: a frame that followed an unacknowledged one waited for the
   client's delayed ACK, tens of ms. TCP_NODELAY is on for a streaming response now.
9. An eventsource response ended after response_limit (128 KB), as every streaming
   response does so that the browser can free the body an XHR keeps; but sockjs-client
   waits 200 ms before it opens the next EventSource (a workaround for an old Chrome
   crash), so a page on eventsource stalled for 200 ms every 128 KB: in chromium,
   commit->page p99 160 ms at 100 events/s and p50 110 ms at 1,000. An EventSource keeps
   no body, so its responses now end only after EVENTSOURCE_RESPONSE_LIMIT (64 MiB).

Security hardening on the same classes: the origin allowlist on every HTTP transport,
CORS preflight and WebSocket handshake; CORS headers only for an allowlisted Origin
(never "*"); xhr_send only from the session's own IP and only with a JSON array; the
iframe page (only needed by iframe-based fallbacks that bypass CORS) is not served.

A session is bound to its peer: the address that opened it is the only one that may read
it (xhr, xhr_streaming, eventsource: sockjs-tornado's verify_ip) or write it (xhr_send,
ours). Behind a reverse proxy every request comes from the proxy, which made the binding
meaningless (anyone behind the proxy could read and write anyone's session). So the peer
is the request's client address as runtime/peers.py finds it: X-Forwarded-For is
believed only from SYNC_TRUSTED_PROXIES, and `request.remote_ip` is replaced by that
address before any handler looks at it.
"""
from __future__ import annotations

import logging
import re
import secrets
from asyncio import Future
from types import MappingProxyType

import tornado.web
from sockjs.tornado import proto, session, static, transports
from sockjs.tornado.router import SockJSRouter
from sockjs.tornado.transports.htmlfile import HTMLFILE_HEAD
from sockjs.tornado.util import bytes_to_str
from tornado.escape import json_encode
from tornado.web import HTTPError

from runtime.peers import Network, client_address
from syncserver.origins import OriginPolicy

log = logging.getLogger(__name__)

NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
_TORNADO_DEFAULT_TYPE = "text/html; charset=UTF-8"


def resolve_peer(handler) -> None:
    """Replace request.remote_ip by the client behind trusted proxies (see the module doc)."""
    request = handler.request
    trusted = handler.server.trusted_proxies
    if trusted:
        request.remote_ip = client_address(request.remote_ip, request.headers.get_list("X-Forwarded-For"), trusted)


class SecureHTTPMixin:
    """For every sockjs-tornado HTTP handler (they all derive from BaseHandler)."""

    # Upstream's static handlers skip BaseHandler.initialize, so a refused request
    # crashed in _log_disconnect on this missing attribute.
    logged = False

    def prepare(self) -> None:
        resolve_peer(self)
        origin = self.request.headers.get("Origin")
        if not self.server.origin_policy.allows(origin):
            log.info("refused %s %s from origin %r", self.request.method, self.request.path, origin)
            raise HTTPError(403, "origin not allowed")
        super().prepare()

    def preflight(self) -> None:
        # Reflect only an allowlisted Origin (prepare refused the rest); no Origin, no CORS.
        origin = self.request.headers.get("Origin")
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Vary", "Origin")
        headers = self.request.headers.get("Access-Control-Request-Headers")
        if headers:
            self.set_header("Access-Control-Allow-Headers", headers)

    def disable_cache(self) -> None:
        self.set_header("Cache-Control", NO_CACHE)  # fault 3

    def _clear_representation_headers(self) -> None:
        # Fault 2: Tornado 6 drops Content-Type on 204; keep one the handler chose.
        ctype = self._headers.get("Content-Type")
        super()._clear_representation_headers()
        if self._status_code == 204 and ctype and ctype != _TORNADO_DEFAULT_TYPE:
            self.set_header("Content-Type", ctype)


class SecureWebSocketMixin:
    def prepare(self) -> None:
        resolve_peer(self)  # the peer in conn_info and logs, as for the HTTP transports
        return super().prepare()

    def check_origin(self, origin: str) -> bool:
        # Tornado calls this only when the handshake carries an Origin header.
        return self.server.origin_policy.allows(origin)


_NO_ARGS = MappingProxyType({})


def _done() -> Future:
    f: Future = Future()
    f.set_result(None)
    return f


class LeanWebSocketMixin:
    """Memory of an idle websocket connection (thousands per process): keep only what
    the open connection needs once the handshake is done.

    - sockjs-tornado's `_execute` is a gen.coroutine that stays suspended for the whole
      connection, holding a Runner, a generator frame, two Futures and the handshake
      headers; the same checks done synchronously hand Tornado its own coroutine.
    - After the handshake the request and response headers are emptied in place (the
      suspended handshake frames still reference the objects), the request lets go of
      the detached HTTP/1 connection, and the connection info keeps only the peer
      address; no cookie jar is parsed.
    """

    def _execute(self, transforms, *args, **kwargs):
        self._transforms = transforms
        if self.request.method != "GET":
            self.set_status(405)
            self.set_header("Allow", "GET")
            self.set_header("Connection", "Close")
            self.finish("WebSocket only supports GET requests.")
            return _done()
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            self.set_status(400)
            self.set_header("Connection", "Close")
            self.finish('Can "Upgrade" only to "WebSocket".')
            return _done()
        if "upgrade" not in [s.strip().lower() for s in self.request.headers.get("Connection", "").split(",")]:
            self.set_status(400)
            self.set_header("Connection", "Close")
            self.finish('"Connection" must be "Upgrade".')
            return _done()
        return tornado.web.RequestHandler._execute(self, transforms, *args, **kwargs)

    def get_conn_info(self):
        # Only the IP is used after the handshake (by nobody for websockets, by
        # xhr_send for polling sessions); path is kept for logs.
        return session.ConnectionInfo(self.request.remote_ip, _NO_ARGS, _NO_ARGS, _NO_ARGS, self.request.path)

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
        _empty_headers(self.request.headers)
        _empty_headers(self._headers)
        # The HTTP/1 connection objects handed the stream over (detach) and are not
        # used again; the request would keep them, their Futures and context alive.
        self.request.connection = None
        self.request.server_connection = None


def _empty_headers(headers) -> None:
    for name in ("_as_list", "_combined_cache", "_dict"):
        d = getattr(headers, name, None)
        if isinstance(d, dict):
            d.clear()


class OneFramePollMixin:
    """For the polling transports (xhr, jsonp)."""

    def initialize(self, server):
        super().initialize(server)
        self._frame_written = False

    def send_pack(self, message, binary=False):
        # Fault 1: a polling response is one frame with a fixed Content-Length. Only
        # control frames (close, heartbeat) reach here after the first one, because the
        # session queues data while the handler is inactive; a closed session re-sends
        # its close frame on the next poll, so dropping it here loses nothing.
        if self._frame_written or self._finished:
            return
        self._frame_written = True
        super().send_pack(message, binary)


class StreamingMixin:
    """For the streaming transports (xhr_streaming, eventsource, htmlfile)."""

    def initialize(self, server):
        super().initialize(server)
        # Fault 4: without Content-Length or chunking (HTTP/1.0) only a close delimits
        # the body. Tornado 6 decides this per request in _disconnect_on_finish.
        conn = self.request.connection
        if self.request.version != "HTTP/1.1" and hasattr(conn, "_disconnect_on_finish"):
            conn._disconnect_on_finish = True
        # Fault 8: Nagle stayed on for the whole streaming response. Tornado turns
        # TCP_NODELAY on only when a response finishes (and off again after it), and
        # sockjs-tornado's disable_nagle reaches only the websocket transports; so each
        # small frame written while the previous one was unacknowledged waited for the
        # client's delayed ACK (up to 40 ms on Linux): xhr-streaming's p99 at 1,000
        # events/s. A streaming response is a stream of small, latency-bound writes.
        # Tornado sets it back to off when this response finishes (keep-alive reuse).
        stream = getattr(conn, "stream", None)
        if stream is not None and server.settings.get("disable_nagle", True):
            stream.set_nodelay(True)


_CALLBACK = re.compile(r"[A-Za-z0-9_.\-]+\Z")


class CallbackMixin:
    """For the transports that put the `c` query parameter into script (htmlfile, jsonp)."""

    def prepare(self) -> None:
        super().prepare()
        callback = self.get_argument("c", None, strip=False)
        if callback and not _CALLBACK.match(callback):  # fault 6; a missing one: upstream's 500
            self.disable_cache()
            self.set_status(500)
            self.finish('invalid "callback" parameter')


class XhrPollingTransport(SecureHTTPMixin, OneFramePollMixin, transports.XhrPollingTransport):
    pass


class XhrSendHandler(SecureHTTPMixin, transports.XhrSendHandler):
    def post(self, session_id):
        session = self._get_session(session_id)
        # The session id is not a secret: only the peer that opened the session may
        # feed it (sockjs-tornado checks the IP for polling, not for xhr_send).
        if session is not None and session.conn_info is not None and session.conn_info.ip != self.request.remote_ip:
            self.set_status(404)
            return
        if self.request.body:
            try:
                messages = proto.json_decode(bytes_to_str(self.request.body))
            except ValueError:  # bad JSON or not UTF-8: upstream answers "Broken JSON encoding."
                messages = []
            except RecursionError:
                # Nested thousands deep: upstream would raise again and answer with a
                # traceback; answer as for any other broken JSON.
                messages = None
            if not isinstance(messages, list):
                # A bare string would be fed to the connection character by character.
                self.preflight()
                self.disable_cache()
                self.write("Broken JSON encoding.")
                self.set_status(500)
                return
        super().post(session_id)


class XhrStreamingTransport(SecureHTTPMixin, StreamingMixin, transports.XhrStreamingTransport):
    pass


# Fault 9: what an eventsource response carries before it ends and the client reconnects.
EVENTSOURCE_RESPONSE_LIMIT = 64 * 1024 * 1024


class EventSourceTransport(SecureHTTPMixin, StreamingMixin, transports.EventSourceTransport):
    def initialize(self, server):
        super().initialize(server)
        self.amount_limit = max(self.amount_limit, EVENTSOURCE_RESPONSE_LIMIT)


class HtmlFileTransport(SecureHTTPMixin, CallbackMixin, StreamingMixin, transports.HtmlFileTransport):
    def get(self, session_id):
        # Upstream's get, with the (validated) callback used verbatim instead of
        # stripped of "_" and ".", which broke sockjs-client's "_jp.<id>" (fault 6).
        self._auto_finish = False
        self.preflight()
        self.handle_session_cookie()
        self.disable_cache()
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        callback = self.get_argument("c", None)
        if not callback:
            self.set_status(500)
            self.finish('"callback" parameter required')
            return
        self.write(HTMLFILE_HEAD % callback)
        self.flush()
        if not self._attach_session(session_id):
            self.finish()
            return
        if self.session:
            self.session.flush()


class JSONPTransport(SecureHTTPMixin, CallbackMixin, OneFramePollMixin, transports.JSONPTransport):
    def send_pack(self, message, binary=False):
        # "/**/" first: a response that starts with the callback name can be made to
        # parse as another content type (Rosetta Flash); sockjs-protocol asks for it.
        if getattr(self, "callback", None) and not self.callback.startswith("/**/"):
            self.callback = "/**/" + self.callback
        super().send_pack(message, binary)


class JSONPSendHandler(SecureHTTPMixin, transports.JSONPSendHandler):
    pass


class InfoHandler(SecureHTTPMixin, static.InfoHandler):
    def get(self):
        # Upstream's fields, with the origins the server really allows (fault 7), in the
        # normalized form the check compares: scheme://host[:port]. The allowlist is the
        # portal's public origins, no secret; a page on any other origin gets 403 here.
        self.preflight()
        self.disable_cache()
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.write(json_encode({
            "websocket": self.server.websockets_enabled,
            "cookie_needed": self.server.cookie_needed,
            "origins": sorted(self.server.origin_policy.allowed),
            "entropy": secrets.randbits(31),
        }))


class GreetingsHandler(SecureHTTPMixin, static.GreetingsHandler):
    pass


class ChunkingTestHandler(SecureHTTPMixin, static.ChunkingTestHandler):
    pass


class IFrameHandler(SecureHTTPMixin, static.IFrameHandler):
    def get(self):
        raise HTTPError(404)


class WebSocketTransport(LeanWebSocketMixin, SecureWebSocketMixin, transports.WebSocketTransport):
    pass


class RawWebSocketTransport(LeanWebSocketMixin, SecureWebSocketMixin, transports.RawWebSocketTransport):
    def session_closed(self):
        # Fault 5: pass the session's close code and reason on (upstream sent none).
        code, reason = self.session.get_close_reason() if self.session is not None else (None, None)
        try:
            self.close(code, reason)
        except IOError:
            pass
        finally:
            self._detach()


PATCHED = {
    transports.XhrPollingTransport: XhrPollingTransport,
    transports.XhrSendHandler: XhrSendHandler,
    transports.XhrStreamingTransport: XhrStreamingTransport,
    transports.EventSourceTransport: EventSourceTransport,
    transports.HtmlFileTransport: HtmlFileTransport,
    transports.JSONPTransport: JSONPTransport,
    transports.JSONPSendHandler: JSONPSendHandler,
    transports.WebSocketTransport: WebSocketTransport,
    transports.RawWebSocketTransport: RawWebSocketTransport,
    static.InfoHandler: InfoHandler,
    static.GreetingsHandler: GreetingsHandler,
    static.ChunkingTestHandler: ChunkingTestHandler,
    static.IFrameHandler: IFrameHandler,
}


class PatchedRouter(SockJSRouter):
    """SockJSRouter whose URL table uses the patched handlers and carries the origin policy.

    `disabled_transports` also drops the send handler of a disabled transport (upstream
    always routes jsonp_send)."""

    def __init__(self, connection, prefix: str, settings: dict, origin_policy: OriginPolicy, context=None,
                 trusted_proxies: tuple[Network, ...] = ()):
        self.origin_policy = origin_policy
        self.trusted_proxies = trusted_proxies
        self.context = context
        super().__init__(connection, prefix, settings)
        disabled = set(self.settings["disabled_transports"])
        urls = []
        for pattern, handler, kwargs in self._transport_urls:
            if "jsonp" in disabled and handler is transports.JSONPSendHandler:
                continue
            missing = handler not in PATCHED
            if missing:
                raise RuntimeError(f"sockjs handler {handler!r} has no patched subclass")
            urls.append((pattern, PATCHED[handler], kwargs))
        self._transport_urls = urls
