"""What writers feel through the portal as deployed: REST and web-form writes per second
through gunicorn, with capture on against capture off in the same run, and the batch API.

The portal runs as compose.yaml runs it: gunicorn, 2 workers x 4 threads, DEBUG off, an
access log line per request (written to /dev/null here: the worker still formats and writes
it, and nobody in this process has to read it). The relay and sync server of the run's
stack run beside it, as in a deployment, so capture's cost includes the relay draining
what the writers capture.

Capture off = the same database, the same portal, with the three capture triggers of
checklists_item disabled (ALTER TABLE ... DISABLE TRIGGER) between rounds; the version
trigger stays (ETags and If-Match depend on it). Rounds rotate: on/off, then off/on; a
cell's loss is the median over rounds of that round's on against off (as the pgbench writer
figures do), and its rate and latencies shown are its best round's (a shared machine's noise
only ever slows a round).

Each load client is one keep-alive connection sending its next request when the previous
answer arrived (bench.http_load). REST clients use an API token; form clients share one
real session login (POST /login/ with CSRF) and post the no-JavaScript forms with the CSRF
token, as a browser without JavaScript does (answers: 302). Every client edits an item of
its own, so edits measure the write path rather than one row lock.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import http_load, procs
from bench.stats import loss_pct

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = (1, 8, 32)
BATCH = 500  # entries per batch request: the endpoint's maximum
CAPTURE_TRIGGERS = ("outbox_capture_insert", "outbox_capture_update", "outbox_capture_delete")
PASSWORD = "api-bench-password"

_SETUP = """
import json
from django.contrib.auth import get_user_model
from django.db import transaction
from portal.apitokens.services import create_token
from portal.checklists import services
User = get_user_model()
user = User.objects.filter(username="api-bench").first() or User.objects.create_user("api-bench", password=%(pw)r)
token, key = create_token(user, "bench")
checklist = services.create_checklist(user, "api bench")
items = []
with transaction.atomic():  # services run inside their caller's transaction
    for i in range(%(n)d):  # a loop: `shell -c` runs this with separate locals, which comprehensions do not see
        items.append(services.add_item(checklist, "edit me %%d" %% i).pk)
print("SETUP " + json.dumps({"key": key, "checklist": checklist.pk, "items": items}))
"""


def prepare(url: str) -> dict:
    """A user with a password and a token, a checklist of his, one item per edit client."""
    code = _SETUP % {"pw": PASSWORD, "n": 2 * max(CLIENTS)}
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "DATABASE_URL": url})
    if out.returncode:
        raise RuntimeError(f"api bench set-up failed: {out.stderr.strip().splitlines()[-1:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("SETUP "))
    return json.loads(line[len("SETUP "):])


def start_portal(url: str, cwd: Path = ROOT) -> tuple[procs.Process, int]:
    """The portal as compose.yaml runs it, from the checkout at `cwd` (bench.api_pair runs
    another revision's from its worktree)."""
    port = procs.free_port()
    env = {"PYTHONPATH": str(cwd), "DATABASE_URL": url, "PORTAL_DEBUG": "0", "PORTAL_HTTPS": "0",
           "PORTAL_ALLOWED_HOSTS": "127.0.0.1",
           "PORTAL_SECRET_KEY": "bench-portal-secret-" + "k" * 40, "SYNC_TOKEN_SECRET": "bench-sync-secret-" + "s" * 40,
           "PORTAL_LOG_LEVEL": "WARNING",
           # The bench's failed logins and tokens must not lock anybody else's counters out.
           "PORTAL_RATELIMIT_DIR": tempfile.mkdtemp(prefix="bench-ratelimit-")}
    argv = [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", "2", "--threads", "4", "--access-logfile", "/dev/null"]
    proc = procs.start("portal", argv, env, cwd=cwd)
    proc.wait_ready(port=port, timeout=60)
    return proc, port


def set_capture(url: str, on: bool) -> None:
    verb = "ENABLE" if on else "DISABLE"
    with psycopg.connect(url, autocommit=True) as conn:
        for trigger in CAPTURE_TRIGGERS:
            conn.execute(f"ALTER TABLE checklists_item {verb} TRIGGER {trigger}")


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU of one process (all its threads) so far, from /proc; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pids(master_pid: int) -> list[str]:
    """gunicorn's workers: the master's children."""
    try:
        return Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    except OSError:
        return []


class CpuMeter:
    """CPU seconds each part spent during a cell: the portal's workers (if there is a
    portal), this database's PostgreSQL backends that are connected when a sample is taken
    (the portal's and the relay's connections; other databases' on the same server are not
    counted, nor a connection that came and went between the samples) and the stack's
    daemons (relay, broker, sync server)."""

    def __init__(self, url: str, portal_pid: int | None, daemons: dict[str, int]):
        self.url, self.portal_pid, self.daemons = url, portal_pid, daemons

    def _pids(self) -> dict[str, list]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            backends = [str(r[0]) for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        return {"portal": worker_pids(self.portal_pid) if self.portal_pid else [], "postgres": backends,
                **{name: [str(pid)] for name, pid in self.daemons.items()}}

    def sample(self) -> dict[str, dict[str, float]]:
        return {part: {pid: cpu_seconds(pid) for pid in pids} for part, pids in self._pids().items()}

    @staticmethod
    def spent(before: dict, after: dict) -> dict[str, float]:
        """Seconds per part between two samples (a process that appeared counts from 0)."""
        return {part: sum(v - before.get(part, {}).get(pid, 0.0) for pid, v in now.items())
                for part, now in after.items()}


def login(port: int) -> dict[str, str]:
    """One real session login through the login form: {"sessionid", "csrftoken"}."""
    conn = http_load.Connection(port)
    try:
        status, headers, body = conn.request("GET", "/login/", {})
        cookies = _cookies(headers)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
        form = f"username=api-bench&password={PASSWORD}&csrfmiddlewaretoken={token}".encode()
        status, headers, body = conn.request("POST", "/login/", {
            "Cookie": f"csrftoken={cookies['csrftoken']}", "Content-Type": "application/x-www-form-urlencoded"}, form)
        if status != 302:
            raise RuntimeError(f"bench login answered {status}: {body[:200]!r}")
        cookies.update(_cookies(headers))
        return cookies
    finally:
        conn.close()


def _cookies(headers: dict) -> dict[str, str]:
    out = {}
    for line in headers.get("set-cookie", "").split("\n"):
        name, _, rest = line.partition("=")
        if name.strip():
            out[name.strip()] = rest.split(";", 1)[0]
    return out


class Makers:
    """The requests of every kind of write (each a bench.http_load Maker)."""

    def __init__(self, setup: dict, cookies: dict[str, str]):
        self.checklist = setup["checklist"]
        self.items = setup["items"]
        self.n = itertools.count()  # a fresh text for every edit: each one changes the row
        self.api = {"Authorization": f"Token {setup['key']}", "Content-Type": "application/json"}
        self.csrf = cookies["csrftoken"]
        self.form = {"Cookie": f"csrftoken={cookies['csrftoken']}; sessionid={cookies['sessionid']}",
                     "Content-Type": "application/x-www-form-urlencoded"}

    def rest_create(self, i: int, n: int):
        return "POST", f"/api/checklists/{self.checklist}/items/", self.api, b'{"text": "bench item"}'

    def rest_edit(self, i: int, n: int):
        return "PATCH", f"/api/items/{self.items[i]}/", self.api, f'{{"text": "edit {next(self.n)}"}}'.encode()

    def form_create(self, i: int, n: int):
        return ("POST", f"/checklists/{self.checklist}/items/", self.form,
                f"text=bench+item&csrfmiddlewaretoken={self.csrf}".encode())

    def form_edit(self, i: int, n: int):
        return ("POST", f"/checklists/{self.checklist}/items/{self.items[max(CLIENTS) + i]}/edit/", self.form,
                f"text=edit+{next(self.n)}&csrfmiddlewaretoken={self.csrf}".encode())

    def batch_create(self, i: int, n: int):
        body = json.dumps({"items": [{"text": f"batch {k}"} for k in range(BATCH)]}).encode()
        return "POST", f"/api/checklists/{self.checklist}/items/batch/", self.api, body


def paired_loss(off: list[float], on: list[float]) -> float | None:
    """The median over rounds of the % lost from off to on within each round.

    >>> paired_loss([100, 200, 100], [90, 100, 95])
    10.0
    """
    losses = sorted(x for x in (loss_pct(a, b) for a, b in zip(off, on)) if x is not None)
    return statistics.median(losses) if losses else None


KINDS = {"rest_create": 201, "rest_edit": 200, "form_create": 302, "form_edit": 302}


def measure(url: str, *, quick: bool, daemons: dict[str, int] | None = None) -> dict:
    """Every figure of the phase; bounded: about 80 s in full, 25 s quick. daemons: the
    stack's processes by name, whose CPU per write is reported beside the portal's."""
    seconds = 0.4 if quick else 0.6
    rounds = 2 if quick else 4
    setup = prepare(url)
    portal, port = start_portal(url)
    try:
        makers = Makers(setup, login(port))
        meter = CpuMeter(url, portal.pid, daemons or {})
        for kind in KINDS:  # warm every code path and connection of both workers
            http_load.run(port, 8, 0.3, getattr(makers, kind), KINDS[kind])
        best: dict[str, dict] = {}
        per_round: dict[str, list[float]] = {}
        latencies_1: list[float] = []
        for r in range(rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                set_capture(url, on)
                mode = "on" if on else "off"
                for kind, expect in KINDS.items():
                    for clients in CLIENTS:
                        cpu0 = meter.sample()
                        result = http_load.run(port, clients, seconds, getattr(makers, kind), expect)
                        spent = meter.spent(cpu0, meter.sample())
                        key = f"{kind}/{clients}/{mode}"
                        summary = {**result.summary(), "cpu_ms_per_write": {
                            part: round(1000 * v / result.ok, 3) if result.ok else None for part, v in spent.items()}}
                        if result.errors:
                            log.warning("%s: %d errors, first: %s", key, result.errors, result.first_error)
                        per_round.setdefault(key, []).append(summary["per_s"])
                        if key not in best or summary["per_s"] > best[key]["per_s"]:
                            best[key] = summary
                        if kind == "rest_create" and clients == 1 and on:
                            latencies_1.extend(result.latencies)
        set_capture(url, True)
        batch = {}
        for clients in (1, 8):
            result = http_load.run(port, clients, 2 * seconds, makers.batch_create, 200)
            batch[str(clients)] = {**result.summary(), "items_per_s": round(result.per_s * BATCH, 1)}
    finally:
        set_capture(url, True)
        portal.stop()
    lat = http_load.Result(clients=1, seconds=1, latencies=latencies_1)
    out: dict = {"cells": best, "batch": batch, "batch_size": BATCH, "seconds_per_cell": seconds, "rounds": rounds,
                 "rest_create_1": {"p50_ms": round(lat.percentile(50), 2), "p99_ms": round(lat.percentile(99), 2),
                                   "samples": len(latencies_1)}}
    out["loss_pct"] = {f"{kind}/{c}": paired_loss(per_round[f"{kind}/{c}/off"], per_round[f"{kind}/{c}/on"])
                       for kind in KINDS for c in CLIENTS}
    out["rates_per_round"] = per_round
    return out


def main() -> None:
    """python -m bench.api_bench [--quick]: the phase alone, against BENCH_DATABASE_URL."""
    from bench.dbsetup import bench_url
    from bench.dbsetup import prepare as prepare_db

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    url = bench_url()
    prepare_db(url)
    t0 = time.monotonic()
    print(json.dumps(measure(url, quick="--quick" in sys.argv), indent=1))
    print(f"took {time.monotonic() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
