"""Assembly: the Tornado application (SockJS at /sync, /healthz, /metrics) and the
server's background work (event stream, client heartbeats), started and stopped as one
unit.

/healthz reports the broker stream as the subscriber library sees it: the last heartbeat
the outbox did not contradict (a forged heartbeat claiming a position nobody committed
neither shows in /healthz nor keeps a dead stream looking alive)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Awaitable, Callable, Protocol

import tornado.httpserver
import tornado.netutil
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from tornado.ioloop import PeriodicCallback

from syncserver import protocol
from syncserver.authority import DatabaseAuthority
from syncserver.catchup import OutboxCatchUp
from syncserver.config import Config
from syncserver.connection import SyncConnection
from syncserver.hub import HEARTBEAT_TOPIC, Authority, CatchUp, Hub, Prepared
from syncserver.origins import OriginPolicy
from syncserver.presence import Presence
from syncserver.redaction import for_browsers
from syncserver.sockjs_patches import PatchedRouter

log = logging.getLogger(__name__)

SOCKJS_PREFIX = "/sync"
BROKER_STALE_AFTER = 3.0
# Thousands of clients reconnect at once after a restart; with Tornado's default 128 the
# kernel drops SYNs and the clients' retries back off for seconds (capped by somaxconn).
LISTEN_BACKLOG = 2048


class EventSource(Protocol):
    """What feeds the hub: outbox_relay.subscriber.Subscriber, or a test double. It may
    also tell the last heartbeat it believed (heartbeat_at, monotonic; heartbeat_pos)."""
    delivered_pos: int

    async def run(self, on_event: Callable[..., Awaitable[None] | None]) -> None: ...


class SyncServer:
    def __init__(self, config: Config, *, source: EventSource | None = None, catchup: CatchUp | None = None,
                 authority: Authority | None = None):
        self.config = config
        self.catchup = catchup if catchup is not None else OutboxCatchUp(config.database_url)
        if source is None:
            from outbox_relay.subscriber import Subscriber

            if config.curve is None:
                raise ValueError("the sync server needs its CURVE keys (Config.curve)")
            source = Subscriber(broker_url=config.broker_url, dsn=config.database_url, curve=config.curve)
        self.source = source
        # Grant checks share the catch-up reads' pool (both are short reads).
        self.authority = authority if authority is not None else DatabaseAuthority(self.catchup.pool)
        self.hub = Hub(self.catchup, authority=self.authority, recent_events=config.recent_events,
                       max_recover_events=config.max_recover_events, max_subscriptions=config.max_subscriptions,
                       coalesce=config.coalesce_ms / 1000)
        # Presence lives in PostgreSQL, shared by every sync server (syncserver/presence.py).
        self.presence: Presence | None = None
        if config.database_url and hasattr(self.catchup, "pool"):
            self.presence = Presence(config.database_url, self.hub, pool=self.catchup.pool)
            self.hub.presence = self.presence
        self.origin_policy = OriginPolicy(config.allowed_origins)
        self.closing = False
        self.draining = False  # SIGTERM seen: /healthz answers 404 so a balancer routes no new connections here
        self.port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._http: tornado.httpserver.HTTPServer | None = None
        self._heartbeat: PeriodicCallback | None = None
        self.router: PatchedRouter | None = None

    def make_app(self) -> tornado.web.Application:
        settings = {
            "disabled_transports": list(self.config.disabled_transports),
            "jsessionid": False,   # no sticky cookie: a proxy routes by the server-id path segment
            "verify_ip": True,
            "websocket_allow_origin": [],  # unused: check_origin is ours
            "heartbeat_delay": 25,
        }
        self.router = PatchedRouter(SyncConnection, SOCKJS_PREFIX, settings, self.origin_policy, context=self,
                                    trusted_proxies=self.config.trusted_proxies)
        routes = [
            (r"/healthz", HealthHandler, {"server": self}),
            (r"/metrics", MetricsHandler),
            *self.router.urls,
        ]
        return _Application(
            routes,
            websocket_max_message_size=self.ws_frame_limit,
            websocket_ping_interval=None,
        )

    @property
    def ws_frame_limit(self) -> int:
        # Above our message limit, so an oversized message gets a too_large error and the
        # connection survives; far larger frames are cut off by Tornado itself.
        return max(1024 * 1024, 8 * self.config.max_message_bytes)

    async def start(self) -> int:
        """Start everything; returns the bound port (config.port may be 0)."""
        if hasattr(self.catchup, "open"):
            await self.catchup.open()
        app = self.make_app()
        self._http = tornado.httpserver.HTTPServer(app, max_body_size=self.ws_frame_limit, xheaders=False)
        sockets = tornado.netutil.bind_sockets(self.config.port, self.config.host, backlog=LISTEN_BACKLOG)
        self._http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._run_source(), name="sync-event-source")]
        if self.presence is not None:
            await self.presence.start()
        self._heartbeat = PeriodicCallback(self._send_heartbeat, self.config.heartbeat_interval * 1000)
        self._heartbeat.start()
        return self.port

    async def _run_source(self) -> None:
        await self.source.run(self._route)

    def _route(self, event) -> None:
        # Browsers get the redacted envelope, built here once per event (syncserver/redaction.py).
        self.hub.on_event(event if event.topic == HEARTBEAT_TOPIC else for_browsers(event))

    @property
    def broker_heard(self) -> float | None:
        """Monotonic time of the last broker heartbeat the outbox did not contradict."""
        return getattr(self.source, "heartbeat_at", None)

    @property
    def broker_pos(self) -> int | None:
        return getattr(self.source, "heartbeat_pos", None)

    def _send_heartbeat(self) -> None:
        self.hub.broadcast(Prepared(protocol.heartbeat(self.source.delivered_pos, time.time())))

    def task_failure(self) -> BaseException | None:
        """The exception of a background task that died (the process should stop)."""
        for task in self._tasks + (self.presence.tasks if self.presence is not None else []):
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def drain(self) -> None:
        """Fail /healthz (404) for config.drain_seconds while still serving, so a balancer takes
        this server out before its sessions close (they reconnect through the balancer to
        another server and resume from the outbox: nothing is lost)."""
        self.draining = True
        if self.config.drain_seconds > 0:
            log.info("draining: /healthz answers 404 for %.1f s before the sessions close", self.config.drain_seconds)
            await asyncio.sleep(self.config.drain_seconds)

    async def stop(self) -> None:
        """Close every session cleanly (close code 3000: the client reconnects and
        resumes), stop listening, end background work."""
        self.closing = True  # a connection opened from now on is closed at once (SyncConnection.on_open)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for sink in list(self.hub.sinks):
            if sink.session is not None:
                sink.session.close(3000, "Server shutting down")
        # Still listening a moment: close frames reach the streams, and a polling client's
        # next request (it polls again at once) collects its own instead of finding no server.
        await asyncio.sleep(0.5 if self.draining else 0.2)
        if self._http is not None:
            self._http.stop()
        if self._http is not None:
            await asyncio.wait_for(self._http.close_all_connections(), 5)
        if self.router is not None:
            self.router._sessions_cleanup.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.presence is not None:
            await self.presence.stop()
        if hasattr(self.catchup, "close"):
            await self.catchup.close()

    async def health(self) -> dict:
        age = None if self.broker_heard is None else time.monotonic() - self.broker_heard
        broker = "ok" if age is not None and age < BROKER_STALE_AFTER else ("stale" if age is not None else "unknown")
        db_ok = await self.catchup.ping() if hasattr(self.catchup, "ping") else True
        return {
            "status": ("draining" if self.draining or self.closing
                       else "ok" if broker == "ok" and db_ok else "degraded"),
            "broker": {"status": broker, "last_heartbeat_age": None if age is None else round(age, 3),
                       "pos": self.broker_pos, "delivered_pos": self.source.delivered_pos},
            "db": {"status": "ok" if db_ok else "down"},
            "connections": len(self.hub.sinks),
        }


class _Application(tornado.web.Application):
    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        # Not the successful health checks: a balancer probes every server every second.
        if handler.request.path == "/healthz" and handler.get_status() == 200:
            return
        super().log_request(handler)


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, server: SyncServer) -> None:
        self.server = server

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        health = await self.server.health()
        if health["status"] == "draining":
            # HAProxy's `http-check disable-on-404`: no new connections, but the requests of
            # the sessions this server still holds keep coming until it closes them.
            self.set_status(404)
        self.write(json.dumps(health))


class MetricsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(REGISTRY))
