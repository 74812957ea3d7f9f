"""The relay daemon's loop: elect, then sequence and publish until stopped.

    standby --(advisory lock)--> leader:
        LISTEN, connect the publisher, republish (published_pos, last_pos],
        then alternate: busy, drain with the doorbell disarmed (a claim per claim_interval);
        quiet, arm it and claim each ring as it comes (relay.Relay._armed).

Any database error sends the relay back to the election with backoff; the lock lives on
the sequencing connection, so a relay that lost it can no longer claim anything.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Awaitable

import psycopg

from outbox_relay import leader, metrics, sequencer
from outbox_relay.config import RelayConfig
from outbox_relay.listener import ARM_SQL, ARMED_SQL, IN_PROGRESS_SQL, STILL_RUNNING_SQL, Listener
from outbox_relay.pacing import RingRate
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


async def _timed(claim: Awaitable[list[sequencer.Row]]) -> list[sequencer.Row]:
    started = time.perf_counter()
    try:
        return await claim
    finally:
        metrics.CLAIM_SECONDS.observe(time.perf_counter() - started)


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
            paced = False
            while not stop.is_set():
                if heartbeat.done():
                    heartbeat.result()  # re-raises what killed it
                    return
                # Busy: claims disarm the doorbell (their own durable transaction), so writers
                # do not ring, and come one per claim_interval while rows keep arriving.
                await self._drain(conn, publisher, stop, paced)
                if stop.is_set():
                    break
                # Quiet: armed, every writer rings, and each ring is claimed at once.
                woke = await self._armed(conn, publisher, listener, heartbeat, stop)
                if woke == "listener-lost":
                    log.warning("relay listener lost error=%r; reconnecting", str(listener.error()).strip())
                    await self._reconnect_listener(listener, stop)
                paced = woke == "busy"
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

    async def _armed(self, conn: psycopg.AsyncConnection, publisher: Publisher, listener: Listener,
                     heartbeat: asyncio.Task, stop: asyncio.Event) -> str:
        """Arm the doorbell and claim each ring as it comes, without disarming; return when
        that should stop: "busy" (rings come faster than one per BUSY_GAP on average:
        pacing.RingRate), "backlog" (a claim came back full), "listener-lost",
        "heartbeat-lost" (the caller re-raises what ended it) or "stop".

        Staying armed is what makes a quiet relay cheap: one claim per wake-up, where
        disarming at every ring meant disarm, claim, wait, claim, arm, list, claim (about
        three claims and two more round trips per event at 200 events/s). The rings are what
        writers pay, and they pay more as rings get denser (NOTIFY serializes commits): past
        one per BUSY_GAP on average the caller drains disarmed instead.

        The doorbell is a hint anyone may flip (`outbox_set_doorbell`): a wake-up whose claim
        finds nothing checks it, and a poll arms it, each arming again as at the start and
        claiming once more, so a disarmed bell costs latency until then, never an event.
        """
        loop = asyncio.get_running_loop()
        watched = await self._arm(conn)
        rate = RingRate(loop.time())
        counted = listener.rings
        check = False  # whether a claim that finds nothing should check the doorbell
        while not stop.is_set():
            started, rings = loop.time(), listener.rings
            rows = await self._claim(conn, disarm=False)
            if rows:
                self._publish(publisher, rows)
                metrics.BATCHES.inc()
                if len(rows) >= self.config.batch_size:
                    return "backlog"
            if rate.busy(started, rings - counted):
                return "busy"
            counted = rings
            if not rows and check and not await self._is_armed(conn):
                watched = await self._arm(conn)  # then claim what committed unannounced
                check = False
                continue
            woke, watched = await self._sleep(conn, listener, watched, stop)
            if woke in ("stop", "listener-lost"):
                return woke
            if heartbeat.done():
                return "heartbeat-lost"
            check = woke != "poll"
            if woke == "poll":
                watched = await self._arm(conn)
        return "stop"

    async def _is_armed(self, conn: psycopg.AsyncConnection) -> bool:
        cur = await conn.execute(ARMED_SQL, prepare=True)
        return (await cur.fetchone())[0]

    async def _arm(self, conn: psycopg.AsyncConnection) -> list:
        """Arm the doorbell (a no-op if armed); return the transactions in progress now:
        only they may have read "disarmed" and will commit without ringing."""
        await conn.execute(ARM_SQL)
        cur = await conn.execute(IN_PROGRESS_SQL)
        return (await cur.fetchone())[0]

    async def _sleep(self, conn: psycopg.AsyncConnection, listener: Listener, watched: list,
                     stop: asyncio.Event) -> tuple[str, list]:
        """Sleep until a ring, the poll timer, stop or the listener's death, or until some of
        `watched` have ended ("watch"): a commit among them did not ring, so it is claimed
        within a watch step however long the others stay open. Returns what woke it and
        which of `watched` are still running.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.poll_interval
        step = WATCH_FIRST_STEP
        while (remaining := deadline - loop.time()) > 0:
            woke = await listener.wait(min(step, remaining) if watched else remaining, stop)
            if woke != "poll":
                return woke, watched
            if not watched:
                continue
            cur = await conn.execute(STILL_RUNNING_SQL, (watched,))
            running = (await cur.fetchone())[0]
            if len(running) < len(watched):
                return "watch", running
            step = min(step * 2, WATCH_MAX_STEP)
        return "poll", watched

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

    async def _drain(self, conn: psycopg.AsyncConnection, publisher: Publisher, stop: asyncio.Event,
                     paced: bool = False) -> int:
        """Claim and publish until nothing is left (or stop); returns rows published. Each
        claim that finds work disarms the doorbell. paced: a short batch has just been
        published (by the armed loop), so wait claim_interval before the first claim.

        Pipelined: once batch k's claim has committed, the claim of k+1 is sent, and
        PostgreSQL sequences it while batch k is published here (the two overlap on two
        cores). Publication stays in pos order: k+1 is published only after k.
        """
        total = 0
        if paced:
            await sleep_or_stop(stop, self.config.claim_interval)
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

    def _claim(self, conn: psycopg.AsyncConnection, disarm: bool = True) -> Awaitable[list[sequencer.Row]]:
        # A plain function: published_pos is read now, before the caller publishes the batch
        # in flight (_drain sends the next claim first), as the claim's record must be.
        metrics.CLAIMS.inc()
        return _timed(sequencer.claim(conn, self.config.batch_size, self.published_pos,
                                      self.config.max_event_bytes, disarm))

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

