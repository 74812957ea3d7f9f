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

Security hardening on the same classes: the origin allowlist on every HTTP transport,
CORS preflight and WebSocket handshake; CORS headers only for an allowlisted Origin
(never "*"); xhr_send only from the session's own IP and only with a JSON array; the
iframe page (only needed by iframe-based fallbacks that bypass CORS) is not served.
"""
from __future__ import annotations

import logging

from sockjs.tornado import proto, static, transports
from sockjs.tornado.router import SockJSRouter
from sockjs.tornado.util import bytes_to_str
from tornado.web import HTTPError

from syncserver.origins import OriginPolicy

log = logging.getLogger(__name__)

NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
_TORNADO_DEFAULT_TYPE = "text/html; charset=UTF-8"


class SecureHTTPMixin:
    """For every sockjs-tornado HTTP handler (they all derive from BaseHandler)."""

    # Upstream's static handlers skip BaseHandler.initialize, so a refused request
    # crashed in _log_disconnect on this missing attribute.
    logged = False

    def prepare(self) -> None:
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
    def check_origin(self, origin: str) -> bool:
        # Tornado calls this only when the handshake carries an Origin header.
        return self.server.origin_policy.allows(origin)


class XhrPollingTransport(SecureHTTPMixin, transports.XhrPollingTransport):
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


class XhrStreamingTransport(SecureHTTPMixin, transports.XhrStreamingTransport):
    pass


class EventSourceTransport(SecureHTTPMixin, transports.EventSourceTransport):
    pass


class HtmlFileTransport(SecureHTTPMixin, transports.HtmlFileTransport):
    pass


class JSONPTransport(SecureHTTPMixin, transports.JSONPTransport):
    pass


class JSONPSendHandler(SecureHTTPMixin, transports.JSONPSendHandler):
    pass


class InfoHandler(SecureHTTPMixin, static.InfoHandler):
    pass


class GreetingsHandler(SecureHTTPMixin, static.GreetingsHandler):
    pass


class ChunkingTestHandler(SecureHTTPMixin, static.ChunkingTestHandler):
    pass


class IFrameHandler(SecureHTTPMixin, static.IFrameHandler):
    def get(self):
        raise HTTPError(404)


class WebSocketTransport(SecureWebSocketMixin, transports.WebSocketTransport):
    pass


class RawWebSocketTransport(SecureWebSocketMixin, transports.RawWebSocketTransport):
    pass


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

    def __init__(self, connection, prefix: str, settings: dict, origin_policy: OriginPolicy, context=None):
        self.origin_policy = origin_policy
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
