"""Relay benchmark: backlog drain rate, commit-to-publish latency, writer overhead.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.relay_bench

Uses its own scratch database (relay_bench, recreated each run) on DATABASE_URL's server,
a real broker and relay as subprocesses, and prints a table; JSON to bench/results/relay.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import zmq

from bench import capture_bench, reference
from runtime.curve import ClientKeys
from runtime.database import database_url, with_dbname
from stack.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "migrations"
DBNAME = "relay_bench"


def make_db(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DBNAME}"')
    url = with_dbname(admin_url, DBNAME)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((SQL / "schema.sql").read_text())  # the outbox schema as it stands
        conn.execute("CREATE TABLE bench_item (id bigserial PRIMARY KEY, checklist_id int NOT NULL,"
                     " text text NOT NULL, version bigint NOT NULL DEFAULT 0)")
        conn.execute("SELECT outbox_track('bench_item', 'item', 'checklist_id', 'checklist')")
        for t in ("ref_item", "refn_item"):  # issue 3's reference designs (bench/reference.py)
            conn.execute(f"CREATE TABLE {t} (LIKE bench_item INCLUDING ALL)")
        conn.execute(reference.DDL)
    return url


class Stack(Cluster):
    """A broker from the start, one relay on demand (start_relay/stop_relay), no sync
    server: the relay's drain, latency and writer phases each start and stop it. (`url`,
    `front` and `back` are the names bench.relay_pair runs against older revisions too.)"""

    def __init__(self, url: str) -> None:
        super().__init__(url, relays=0, sync_servers=0)
        self.url, self.front, self.back = url, self.frontend, self.backend
        self.start_broker()

    def start_relay(self) -> None:  # type: ignore[override]
        super().start_relay("relay", wait="relay leader")

    def stop_relay(self) -> None:
        if "relay" in self.services:
            super().stop("relay")
            del self.services["relay"]


class Counter:
    """A SUB socket on the broker backend counting events (and their latency)."""

    def __init__(self, url: str, curve: ClientKeys) -> None:
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        curve.apply(self.sock)
        self.sock.connect(url)
        self.count = 0
        self.arrivals: dict[int, float] = {}  # event seq -> epoch s it arrived
        self.record_lag = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        time.sleep(0.3)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(100):
                continue
            topic, raw = self.sock.recv_multipart()
            if topic == b"_heartbeat":
                continue
            self.count += 1
            if self.record_lag:
                now = time.time()
                self.arrivals[json.loads(raw)["data"]["seq"]] = now

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close(0)


def published(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT published_pos FROM outbox_relay_state").fetchone()[0]


def fill_backlog(url: str, rows: int, per_tx: int = 10) -> None:
    """`rows` unsequenced events on 50 topics, `per_tx` to a committed transaction."""
    with psycopg.connect(url) as conn:
        for i in range(0, rows, per_tx):
            conn.execute("SELECT outbox_emit('checklist:' || (g %% 50), 'bench', jsonb_build_object('i', g, 'text', 'some text'))"
                         " FROM generate_series(%s::int, %s::int) g", (i, i + per_tx - 1))
            conn.commit()


def bench_drain(stack: Stack, rows: int) -> dict:
    t0 = time.perf_counter()
    fill_backlog(stack.url, rows)
    insert_s = time.perf_counter() - t0
    start = published(stack.url)
    counter = Counter(stack.back, stack.keys.subscriber())
    stack.start_relay()
    t1 = time.perf_counter()
    # One connection for the whole wait: a new connection per poll forks a backend each
    # time, CPU the relay and PostgreSQL need on a 2-core machine.
    with psycopg.connect(stack.url, autocommit=True) as conn:
        while conn.execute("SELECT published_pos FROM outbox_relay_state").fetchone()[0] < start + rows:
            time.sleep(0.01)
    drain_s = time.perf_counter() - t1
    time.sleep(0.5)
    counter.close()
    stack.stop_relay()
    bare = reference_claim(stack.url, rows)
    return {"rows": rows, "insert_commit_rows_per_s": round(rows / insert_s),
            "drain_events_per_s": round(rows / drain_s), "drain_seconds": round(drain_s, 3),
            "received_by_subscriber": counter.count, "reference_claim_rows_per_s": bare["rows_per_s"]}


def bench_latency(stack: Stack, rate: float, seconds: float) -> dict:
    stack.start_relay()
    counter = Counter(stack.back, stack.keys.subscriber())
    counter.record_lag = True
    n = int(rate * seconds)
    committed: dict[int, float] = {}
    with psycopg.connect(stack.url, autocommit=True) as conn:
        start = time.perf_counter()
        for i in range(n):
            conn.execute("SELECT outbox_emit('checklist:1', 'bench', jsonb_build_object('seq', %s::int))", (i,))
            committed[i] = time.time()  # COMMIT has returned (autocommit): the writer's commit time
            delay = start + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    time.sleep(1.0)
    counter.close()
    stack.stop_relay()
    lags = sorted(counter.arrivals[i] - t for i, t in committed.items() if i in counter.arrivals)
    q = statistics.quantiles(lags, n=100) if len(lags) > 2 else [0] * 99
    return {"rate": rate, "events": n, "received": len(lags), "p50_ms": round(q[49] * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2), "max_ms": round(lags[-1] * 1000, 2) if lags else None}


def reference_claim(url: str, rows: int, batch: int = 2000) -> dict:
    """Issue 3's yardstick: "a batched claim UPDATE ... RETURNING of 2,000 rows at a time"
    on a backlog of `rows`, alone (no sequencing rules, no envelope, no publishing), on a
    twin of the outbox table with the same indexes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ref_outbox")
        conn.execute("INSERT INTO ref_outbox (topic, entity, entity_id, op, data)"
                     " SELECT 'checklist:' || (g %% 50), 'bench', g::text, 'event',"
                     " jsonb_build_object('i', g, 'text', 'some text') FROM generate_series(1, %s) g", (rows,))
        conn.execute("VACUUM ANALYZE ref_outbox")
        done = 0
        t0 = time.perf_counter()
        while True:
            got = conn.execute(
                "UPDATE ref_outbox o SET pos = %s + s.n, sequenced_at = clock_timestamp()"
                " FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM ref_outbox"
                "       WHERE pos IS NULL ORDER BY id LIMIT %s) s"
                " WHERE o.id = s.id RETURNING o.pos, o.topic, o.data::text", (done, batch)).fetchall()
            if not got:
                break
            done += len(got)
        seconds = time.perf_counter() - t0
        conn.execute("TRUNCATE ref_outbox")
    return {"rows": done, "batch": batch, "rows_per_s": round(done / seconds)}


def writer_tps(url: str, writers: int, seconds: float, table: str = "bench_item") -> float:
    """Single-row INSERT transactions/s into `table` by `writers` concurrent clients: pgbench
    (a C client: neither hides nor inflates the server-side difference) when it is on PATH,
    else Python threads (whose own CPU, on a 2-core machine, blurs the figure)."""
    if shutil.which("pgbench"):
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
            script.write(f"INSERT INTO {table} (checklist_id, text) VALUES (:client_id, 'x');\n")
            script.flush()
            return capture_bench.pgbench(url, Path(script.name), writers, max(1, round(seconds)), sync_off=False)
    done = [0] * writers
    stop = time.perf_counter() + seconds
    sql = f"INSERT INTO {table} (checklist_id, text) VALUES (%s, 'x')"

    def work(k: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.perf_counter() < stop:
                conn.execute(sql, (k,))
                done[k] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


# What each writer-overhead variant measures (all single-row inserts, autocommit):
WRITER_VARIANTS = (
    "no_capture",                     # bench_item with its capture triggers disabled
    "capture_relay_running",          # ours, a relay running (it arms and disarms the doorbell)
    "capture_doorbell_always_armed",  # ours, no relay, doorbell armed: every transaction NOTIFYs
    "capture_no_notify",              # ours, no relay, doorbell disarmed: a busy relay's writers
    "reference_trigger",              # issue 3's reference: a row trigger inserting the outbox row
    "reference_trigger_notify",       # the same plus a pg_notify per transaction
)


def bench_writers(stack: Stack, counts: list[int], seconds: float, rounds: int = 3) -> list[dict]:
    """Transactions/s of every variant, `rounds` times in rotating order; each overhead is the
    median over rounds of 1 - variant/no_capture of the same round, so a machine whose speed
    drifts (other load) skews it little."""

    def sql(statement: str) -> None:
        with psycopg.connect(stack.url, autocommit=True) as conn:
            conn.execute(statement)

    def prepare(variant: str) -> str:
        """Set the stage for a variant; returns the table its writers insert into."""
        verb = "DISABLE" if variant == "no_capture" else "ENABLE"
        sql(f"ALTER TABLE bench_item {verb} TRIGGER USER")  # the capture triggers (outbox_track)
        sql(f"SELECT outbox_set_doorbell({variant != 'capture_no_notify'})")
        if variant == "capture_relay_running":
            stack.start_relay()
        return {"reference_trigger": "ref_item", "reference_trigger_notify": "refn_item"}.get(variant, "bench_item")

    out = []
    for n in counts:
        tps: dict[str, list[float]] = {v: [] for v in WRITER_VARIANTS}
        for r in range(rounds):
            for variant in WRITER_VARIANTS[r % len(WRITER_VARIANTS):] + WRITER_VARIANTS[:r % len(WRITER_VARIANTS)]:
                table = prepare(variant)
                try:
                    tps[variant].append(writer_tps(stack.url, n, seconds, table))
                finally:
                    stack.stop_relay()
                sql("TRUNCATE outbox, ref_outbox")  # the same table sizes for every round, a cheap relay start
        row: dict = {"writers": n, "rounds": rounds}
        for variant, values in tps.items():
            row[f"{variant}_tps"] = round(statistics.median(values))
            if variant != "no_capture":
                row[f"{variant}_loss_pct"] = round(100 * statistics.median(
                    1 - v / p for v, p in zip(values, tps["no_capture"])), 1)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one writer measurement")
    args = ap.parse_args()
    url = make_db(database_url())
    stack = Stack(url)
    try:
        drain = bench_drain(stack, args.rows)
        # The drain left a version of 100k rows dead (the claim updates each row); until
        # autovacuum clears them, every index scan of the claim steps over them (claim p50
        # 2.2 ms instead of 1.1 here). Latency is a steady-state figure: vacuum first.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE outbox")
        latency = bench_latency(stack, 100, 5)
        writers = bench_writers(stack, [1, 8, 32], args.seconds)
    finally:
        stack.stop()
    result = {"drain": drain, "latency": latency, "writers": writers}
    print(f"(a) drain {drain['rows']} rows: {drain['drain_events_per_s']} events/s sequenced+published "
          f"({drain['drain_seconds']} s; subscriber received {drain['received_by_subscriber']}); "
          f"insert+commit rate {drain['insert_commit_rows_per_s']} rows/s; the reference claim alone"
          f" (UPDATE ... RETURNING, 2,000 rows a time) {drain['reference_claim_rows_per_s']} rows/s")
    print(f"(b) commit-to-subscriber latency at {latency['rate']}/s: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, "
          f"max {latency['max_ms']} ms ({latency['received']}/{latency['events']} received)")
    print("(c) writer transactions/s, single-row insert+commit (median of rounds; % lost against no capture)")
    for row in writers:
        print(f"  {row['writers']:>2} writers: no capture {row['no_capture_tps']}; " + "; ".join(
            f"{v} {row[f'{v}_tps']} ({row[f'{v}_loss_pct']}%)" for v in WRITER_VARIANTS[1:]))
    out = ROOT / "bench" / "results" / "relay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
