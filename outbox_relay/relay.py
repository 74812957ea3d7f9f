"""The relay daemon's loop: elect, then sequence and publish until stopped.

    standby --(advisory lock)--> leader:
        LISTEN, connect the publisher, republish (published_pos, last_pos],
        then: disarm, drain, arm, drain, sleep until a ring / the poll timer.

Any database error sends the relay back to the election with backoff; the lock lives on
the sequencing connection, so a relay that lost it can no longer claim anything.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import psycopg

from outbox_relay import leader, metrics, sequencer
from outbox_relay.config import RelayConfig
from outbox_relay.listener import ARM_SQL, IN_PROGRESS_SQL, STILL_RUNNING_SQL, Listener
from outbox_relay.publisher import Publisher
from runtime.backoff import Backoff, sleep_or_stop

log = logging.getLogger(__name__)

CONNECT_KWARGS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                  "connect_timeout": 5}
BACKLOG_EVERY = 5.0  # seconds between backlog counts (a count is not free on a big backlog)
# While asleep, the relay checks every WATCH_MAX_STEP (starting at WATCH_FIRST_STEP) whether
# a transaction that was in progress when it armed the doorbell has ended (see Relay._sleep).
WATCH_FIRST_STEP = 0.002
WATCH_MAX_STEP = 0.01
# The claim is a plpgsql function whose statements take arrays sized by the batch. With
# custom plans (the default choice for them) PostgreSQL plans its four statements again on
# every call, ~0.5 ms: most of the execution time of a one-event claim, on the path of every
# event's latency. A generic plan is made once per session, and the claim's `= ANY(array)`
# lookups are index lookups whatever the array's size (0004, 0006), so a drain is as fast.
GENERIC_PLANS_SQL = "SET plan_cache_mode = force_generic_plan"


class Relay:
    def __init__(self, config: RelayConfig, dsn: str) -> None:
        if config.curve is None:
            raise ValueError("the relay needs its CURVE keys (RelayConfig.curve)")
        self.config = config
        self.dsn = dsn
        self.name = config.name or f"{socket.gethostname()}:{os.getpid()}"
        self.published_pos = 0
        self.is_leader = False

    async def run(self, stop: asyncio.Event) -> None:
        log.info("relay started name=%s broker=%s", self.name, self.config.broker_url)
        backoff = Backoff(first=0.2, cap=5.0)
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff.reset()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._set_leader(False)
                delay = backoff.next()
                log.warning("relay lost its database session error=%r; retrying in %.1fs", str(exc).strip(), delay)
                await sleep_or_stop(stop, delay)
        log.info("relay stopped name=%s published_pos=%d", self.name, self.published_pos)

    def _set_leader(self, value: bool) -> None:
        self.is_leader = value
        metrics.LEADER.set(1 if value else 0)

    async def _session(self, stop: asyncio.Event) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name="outbox-relay", **CONNECT_KWARGS)
        try:
            await conn.execute(GENERIC_PLANS_SQL)
            said_standby = False
            while not stop.is_set():
                if await leader.try_lead(conn):
                    break
                if not said_standby:
                    log.info("relay standby name=%s", self.name)
                    said_standby = True
                await sleep_or_stop(stop, self.config.lock_retry)
            if stop.is_set():
                return
            await leader.record_leader(conn, self.name)
            self._set_leader(True)
            log.info("relay leader name=%s", self.name)
            await self._lead(conn, stop)
        finally:
            self._set_leader(False)
            await conn.close()

    async def _lead(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        listener = Listener(self.dsn, CONNECT_KWARGS)
        publisher = Publisher(self.config.broker_url, self.config.curve)
        heartbeat = None
        try:
            await listener.start()
            # Slow joiner: give the connection to the broker a moment before the first send;
            # anything lost anyway is repaired by subscribers from the outbox.
            await asyncio.sleep(self.config.connect_delay)
            await self._republish(conn, publisher)
            heartbeat = asyncio.create_task(self._heartbeats(conn, publisher, stop), name="relay-heartbeat")
            while not stop.is_set():
                if heartbeat.done():
                    heartbeat.result()  # re-raises what killed it
                    return
                # No separate disarm: a claim that finds work disarms the doorbell in its own
                # (durable anyway) transaction, so a wake-up costs one commit before publishing.
                await self._drain(conn, publisher, stop)
                if stop.is_set():
                    break
                await conn.execute(ARM_SQL)
                cur = await conn.execute(IN_PROGRESS_SQL)
                in_progress = (await cur.fetchone())[0]
                if await self._drain(conn, publisher, stop):
                    continue  # work arrived meanwhile: stay awake (and disarmed next round)
                woke = await self._sleep(conn, publisher, listener, in_progress, stop)
                if woke == "listener-lost":
                    log.warning("relay listener lost error=%r; reconnecting", str(listener.error()).strip())
                    await self._reconnect_listener(listener, stop)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                try:
                    await heartbeat
                except (asyncio.CancelledError, psycopg.Error):
                    pass
            await listener.close()
            publisher.close()
            if not conn.closed:
                try:
                    await sequencer.record_published(conn, self.published_pos)
                except psycopg.Error:
                    pass  # the next leader republishes from the last recorded position

    async def _sleep(self, conn: psycopg.AsyncConnection, publisher: Publisher, listener: Listener,
                     watched: list, stop: asyncio.Event) -> str:
        """Sleep until a ring, the poll timer, stop or the listener's death, and say which.

        Meanwhile watch `watched`, the transactions in progress when the doorbell was armed:
        any of them may have read "disarmed" and will commit without ringing. Each time some
        of them have ended, drain: a commit among them is published within a watch step,
        however long the others stay open ("drained" if that found work: the claim disarmed
        the doorbell, so the caller arms it again). The watch lasts as long as the sleep; the
        next round records whatever is still in progress again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.poll_interval
        step = WATCH_FIRST_STEP
        while (remaining := deadline - loop.time()) > 0:
            woke = await listener.wait(min(step, remaining) if watched else remaining, stop)
            if woke != "poll":
                return woke
            if not watched:
                continue
            cur = await conn.execute(STILL_RUNNING_SQL, (watched,))
            running = (await cur.fetchone())[0]
            if len(running) < len(watched) and await self._drain(conn, publisher, stop):
                return "drained"
            watched = running
            step = min(step * 2, WATCH_MAX_STEP)
        return "poll"

    async def _reconnect_listener(self, listener: Listener, stop: asyncio.Event) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while not stop.is_set():
            try:
                await listener.start()
                return  # the caller's loop drains next: LISTEN, then drain
            except psycopg.OperationalError as exc:
                log.warning("relay listener reconnect failed error=%r", str(exc).strip())
                await sleep_or_stop(stop, backoff.next())

    async def _republish(self, conn: psycopg.AsyncConnection, publisher: Publisher) -> None:
        """At-least-once after a takeover: send what the last leader may not have sent."""
        last, published = await sequencer.positions(conn)
        self.published_pos = published
        if last > published:
            log.info("relay republishing from=%d to=%d", published + 1, last)
        while self.published_pos < last:
            rows = await sequencer.unpublished(conn, self.published_pos, last, self.config.batch_size)
            if not rows:
                break
            self._publish(publisher, rows)
            await sequencer.record_published(conn, self.published_pos)
        self.published_pos = max(self.published_pos, last)

    async def _drain(self, conn: psycopg.AsyncConnection, publisher: Publisher, stop: asyncio.Event) -> int:
        """Claim and publish until nothing is left (or stop); returns rows published.

        Pipelined: once batch k's claim has committed, the claim of k+1 is sent, and
        PostgreSQL sequences it while batch k is published here (the two overlap on two
        cores). Publication stays in pos order: k+1 is published only after k.
        """
        total = 0
        rows = await self._claim(conn)
        while rows:
            if stop.is_set():
                # Finish the batch in flight (its claim committed), record it, and go.
                self._publish(publisher, rows)
                total += len(rows)
                await sequencer.record_published(conn, self.published_pos)
                return total
            if len(rows) < self.config.batch_size:
                # A short batch: the claim found no more rows. Publish at once; starting the
                # next claim first would delay this batch by its send (~0.4 ms of p50 at
                # 100 events/s) to overlap a claim that will most likely find nothing.
                self._publish(publisher, rows)
                metrics.BATCHES.inc()
                total += len(rows)
                # Under a steady trickle, claiming again at once finds a row or two each
                # time, and every claim costs a durable commit and ~0.5 ms of CPU that the
                # writers share. Waiting claim_interval lets rows gather: at most
                # 1/claim_interval claims a second, each taking all that arrived meanwhile.
                # An isolated event is not delayed: its claim comes straight from the ring.
                await sleep_or_stop(stop, self.config.claim_interval)
                if stop.is_set():
                    return total
                rows = await self._claim(conn)
                continue
            following = asyncio.ensure_future(self._claim(conn))
            try:
                await asyncio.sleep(0)  # let the next claim reach PostgreSQL before we publish
                self._publish(publisher, rows)
            except BaseException:
                following.cancel()
                raise
            metrics.BATCHES.inc()
            total += len(rows)
            rows = await following
        return total

    def _claim(self, conn: psycopg.AsyncConnection):
        return sequencer.claim(conn, self.config.batch_size, self.published_pos, self.config.max_event_bytes)

    def _publish(self, publisher: Publisher, rows: list[sequencer.Row]) -> None:
        now = time.time()
        send = publisher.send
        for pos, topic, envelope, _created, error in rows:
            send(topic, envelope)
            if error:
                metrics.POISON.inc()
                log.error("poison row published without data pos=%d topic=%s error=%r", pos, topic, error)
        # Observing every row would cost more than it tells; first and last bound the batch.
        metrics.LAG.observe(max(0.0, now - rows[0][3].timestamp()))
        if len(rows) > 1:
            metrics.LAG.observe(max(0.0, now - rows[-1][3].timestamp()))
        metrics.PUBLISHED.inc(len(rows))
        self.published_pos = rows[-1][0]

    async def _heartbeats(self, conn: psycopg.AsyncConnection, publisher: Publisher, stop: asyncio.Event) -> None:
        last_count = 0.0
        while not stop.is_set():
            # The recorded position, not only our own: it also covers what another relay
            # (a previous leader) sequenced, so subscribers learn of it and repair it.
            recorded = await sequencer.record_published(conn, self.published_pos)
            publisher.heartbeat(max(recorded, self.published_pos))
            metrics.HEARTBEATS.inc()
            publisher.check_handshakes()
            if time.monotonic() - last_count >= BACKLOG_EVERY:
                cur = await conn.execute("SELECT count(*) FROM outbox WHERE pos IS NULL")
                metrics.BACKLOG.set((await cur.fetchone())[0])
                last_count = time.monotonic()
            await sleep_or_stop(stop, self.config.heartbeat_interval)

