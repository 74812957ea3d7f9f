"""One browser connection (any SockJS transport): a thin adapter from SockJS callbacks
to the protocol parser, the token check and the hub.

A connection's subscriptions live no longer than its token: at the token's expiry each
one gets `token_expired` (with its topic) and ends, unless the client renewed before
then by sending `auth` again with a fresh token of the same user. A renewed token that
no longer lists a subscribed topic ends that subscription (`forbidden_topic`, ref auth)."""
from __future__ import annotations

import asyncio
import logging
import time

from sockjs.tornado import SockJSConnection

from runtime import tokens
from syncserver import metrics, pagelatency, protocol, wsframe
from syncserver.hub import Prepared
from syncserver.protocol import ProtocolError
from syncserver.ratelimit import TokenBucket

log = logging.getLogger(__name__)

RATE_PER_SECOND = 50
RATE_BURST = 200


class SyncConnection(SockJSConnection):
    def __init__(self, session):
        super().__init__(session)
        self.ctx = session.server.context
        self.claims: tokens.Claims | None = None
        self.user_id: int | None = None
        self.transport = "unknown"
        self.bucket = TokenBucket(RATE_PER_SECOND, RATE_BURST)
        self._tasks: set[asyncio.Task] | None = None  # subscribes in flight (made on first use)
        self._expiry: asyncio.TimerHandle | None = None  # the token's expiry (one timer per connection)
        self._latency_budget = None  # pagelatency's allowance of samples (made on the first report)
        # Websocket transports: the protocol object whose stream takes prebuilt frames
        # (wsframe), and whether the frame is SockJS's `a[...]` or the raw text.
        self._ws = None
        self._framed = False
        self.username: str | None = None
        self.last_heard = time.monotonic()  # presence closes connections silent too long
        self._max_pending = self.ctx.config.max_pending_bytes
        self._too_slow = False  # closing for leaving too much unread: nothing more is sent

    # -- SockJS callbacks ---------------------------------------------------------------

    def on_open(self, info) -> None:
        self.transport = getattr(self.session, "transport_name", "unknown")
        ws = getattr(self.session.handler, "ws_connection", None)
        if wsframe.fast_stream(ws) is not None:
            self._ws, self._framed = ws, self.session.send_expects_json
        metrics.CONNECTIONS.labels(self.transport).inc()
        self.ctx.hub.add_sink(self)
        if self.ctx.closing:
            self.close()

    def on_message(self, message) -> None:
        self.last_heard = time.monotonic()
        try:
            if not self.bucket.take():
                raise ProtocolError(protocol.RATE_LIMITED, "too many messages; slow down")
            msg = protocol.parse(message, self.ctx.config.max_message_bytes)
            if isinstance(msg, protocol.Auth):
                self._auth(msg)
            elif isinstance(msg, protocol.Subscribe):
                self._subscribe(msg)
            elif isinstance(msg, protocol.Unsubscribe):
                if not self.ctx.hub.unsubscribe(self, msg.topic):
                    raise ProtocolError(protocol.NOT_SUBSCRIBED, "not subscribed to that topic", "unsubscribe")
            elif isinstance(msg, protocol.Latency):
                self._latency(msg)
            else:
                self.send_text(protocol.pong(msg.id))
        except ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(exc.code).inc()
            self.send_text(protocol.error(exc.code, exc.message, exc.ref))

    def on_close(self) -> None:
        self._ws = None
        metrics.CONNECTIONS.labels(self.transport).dec()
        self.ctx.hub.remove_sink(self)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for task in self._tasks or ():
            task.cancel()

    # -- messages -------------------------------------------------------------------------

    def _auth(self, msg: protocol.Auth) -> None:
        try:
            claims = tokens.verify(self.ctx.config.token_secret, msg.token)
        except tokens.TokenError as exc:
            code = protocol.TOKEN_EXPIRED if "expired" in str(exc) else protocol.BAD_TOKEN
            raise ProtocolError(code, str(exc), "auth") from None
        if self.claims is not None and claims.user_id != self.claims.user_id:
            # A refreshed token must be the same user's: anyone who learns a SockJS
            # session id must not be able to swap the identity behind it.
            raise ProtocolError(protocol.BAD_TOKEN, "token is for another user than this connection's", "auth")
        renewed = self.claims is not None
        self.claims, self.user_id, self.username = claims, claims.user_id, claims.username
        now = time.time()
        self.send_text(protocol.authed(claims.username, claims.expires_at, claims.expires_at - now, now))
        if renewed:
            self.ctx.hub.end_where(self, lambda topic: None if claims.allows(topic) else protocol.error(
                protocol.FORBIDDEN_TOPIC, f"the renewed token does not grant {topic}; subscription ended", "auth", topic))
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(loop.time() + (claims.expires_at - now), self._token_expired)

    def _latency(self, msg: protocol.Latency) -> None:
        """A browser's commit -> page samples: only an authenticated client's, bounded in
        value and rate (pagelatency), and never answered."""
        if self.claims is None:
            raise ProtocolError(protocol.UNAUTHENTICATED, "send auth first", "latency")
        if self._latency_budget is None:
            self._latency_budget = pagelatency.budget()
        kept, out_of_range, over_rate = pagelatency.admit(msg.samples, self._latency_budget)
        for seconds in kept:
            metrics.CLIENT_LATENCY.observe(seconds)
        if out_of_range:
            metrics.CLIENT_LATENCY_DROPPED.labels("out_of_range").inc(out_of_range)
        if over_rate:
            metrics.CLIENT_LATENCY_DROPPED.labels("over_rate").inc(over_rate)

    def _token_expired(self) -> None:
        """The token's expiry passed without a renewal: every subscription ends."""
        self._expiry = None
        ended = self.ctx.hub.end_where(self, lambda topic: protocol.error(
            protocol.TOKEN_EXPIRED, "token expired; send auth with a fresh token and subscribe again", "subscribe",
            topic))
        if ended:
            metrics.PROTOCOL_ERRORS.labels(protocol.TOKEN_EXPIRED).inc(len(ended))

    def _subscribe(self, msg: protocol.Subscribe) -> None:
        claims = self.claims
        if claims is None:
            raise ProtocolError(protocol.UNAUTHENTICATED, "send auth first", "subscribe")
        if claims.expires_at <= time.time():
            raise ProtocolError(protocol.TOKEN_EXPIRED, "token expired; reconnect with a fresh one", "subscribe")
        if not claims.allows(msg.topic):
            raise ProtocolError(protocol.FORBIDDEN_TOPIC, f"token does not grant {msg.topic}", "subscribe")
        hub = self.ctx.hub
        if not hub.is_subscribed(self, msg.topic) and hub.subscription_count(self) >= self.ctx.config.max_subscriptions:
            raise ProtocolError(protocol.TOO_MANY_SUBSCRIPTIONS,
                                f"at most {self.ctx.config.max_subscriptions} subscriptions per connection", "subscribe")
        task = asyncio.ensure_future(hub.subscribe(self, msg.topic, msg.since, msg.presence))
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None
        if not task.cancelled() and task.exception() is not None:
            log.error("subscribe failed", exc_info=task.exception())

    # -- sending --------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self.send_prepared(Prepared(text))

    def send_prepared(self, message: Prepared) -> None:
        session = self.session
        if session is None or session.is_closed or self._too_slow:
            return
        ws = self._ws
        if ws is not None and not (self._framed and session.send_queue):
            # Websocket: the frame bytes are built once per message and shared by every
            # connection; no per-connection Future/Task (Tornado's write_message).
            if not (ws.server_terminated or ws.client_terminated):
                stream = ws.stream
                unread = len(stream._write_buffer)
                if unread > self._max_pending:
                    self._close_too_slow(stream, unread)
                    return
                wsframe.write_frame(stream, message.sockjs_frame if self._framed else message.raw_frame)
            return
        stream = _stream_of(session.handler)
        pending = len(session.send_queue) + (len(stream._write_buffer) if stream is not None else 0)
        if pending > self._max_pending:
            self._close_too_slow(stream, pending)
            return
        if session.send_expects_json:
            # The JSON string literal is computed once per message and shared by every
            # subscriber (sockjs-tornado's broadcast does the same).
            session.send_jsonified(message.jsonified, False)
        elif session.handler is not None:
            session.send_message(message.text)

    def _close_too_slow(self, stream, pending: int) -> None:
        """A client that leaves more than max_pending_bytes unread (a stalled network, a
        frozen tab, or one that never reads on purpose) would hold ever more of the
        server's memory. Checked before each message is written, so one message larger
        than the limit still goes out. The connection is closed and its unread output
        dropped; the client reconnects and resumes from its last tpos, so nothing is lost."""
        self._too_slow = True
        metrics.SLOW_CLOSED.inc()
        log.warning("closing a connection that left %d bytes unread transport=%s user=%s",
                    pending, self.transport, self.user_id)
        # Not now: this runs inside the hub's fan-out, which closing would re-enter.
        asyncio.get_running_loop().call_soon(self._drop, stream)

    def _drop(self, stream) -> None:
        session = self.session
        if session is not None and not session.is_closed:
            session.close(3002, "Too slow to read")
        if stream is not None and not stream.closed():
            stream.close()  # its unread bytes go with it; the close frame could not get past them


def _stream_of(handler):
    """The IOStream a SockJS transport handler writes to (None between polls)."""
    if handler is None:
        return None
    ws = getattr(handler, "ws_connection", None)
    if ws is not None:
        return getattr(ws, "stream", None)
    return getattr(getattr(handler.request, "connection", None), "stream", None)
