"""Figure 3b, what a user sees: commit -> applied on a real page, in chromium (Playwright).

The whole stack as `make run` runs it (portal included, stack.run.Stack, on free ports,
against a scratch database of its own), alice's checklist page open in headless chromium
over one forced transport with `?latency_sample_ms=0`, so its sync client samples nearly
every live transaction (the one-a-second default is for production). A paced writer
updates the list's items at the offered rate (updates, so the page's size stays that of a
real list); the page measures each sample from the event's committed_at (the database's
clock, stamped in the writer's transaction) to the moment it had applied it to the DOM, by
the sync server's clock, and sends it in its `latency` reports. They are read where the
page sends them (a wrapper around SockJS's send installed before the page's scripts): the
server records at most 20 a second per connection in /metrics, the operators' view.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg

from bench import procs
from bench.dbsetup import scratch_database
from bench.stats import summarize_ms

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ITEMS = 20
UPDATE_SQL = "UPDATE checklists_item SET text = %s WHERE id = %s"

# Before any page script: keep every latency sample the page sends.
CAPTURE_JS = """
window.__latency = [];
(() => {
  let wrapped;
  Object.defineProperty(window, 'SockJS', {
    configurable: true,
    get() { return wrapped; },
    set(Real) {
      wrapped = function (...args) {
        const sock = new Real(...args);
        const send = sock.send.bind(sock);
        sock.send = (text) => {
          try { const m = JSON.parse(text); if (m.type === 'latency') window.__latency.push(...m.samples); } catch (e) {}
          return send(text);
        };
        return sock;
      };
      Object.assign(wrapped, Real);
    },
  });
})();
"""


def _alices_list(url: str) -> tuple[int, list[int]]:
    """A checklist of alice's with ITEMS items of its own (made here, before the page opens)."""
    with psycopg.connect(url) as conn:
        cid = conn.execute(
            "SELECT c.id FROM checklists_checklist c JOIN checklists_membership m ON m.checklist_id = c.id "
            "JOIN auth_user u ON u.id = m.user_id WHERE u.username = 'alice' ORDER BY c.id LIMIT 1").fetchone()[0]
        conn.execute("DELETE FROM checklists_item WHERE checklist_id = %s", (cid,))
        ids = [conn.execute("INSERT INTO checklists_item (checklist_id, text, done, position, version) "
                            "VALUES (%s, %s, false, %s, 1) RETURNING id", (cid, f"item {i}", i)).fetchone()[0]
               for i in range(ITEMS)]
    return cid, ids


def paced_updates(url: str, item_ids: list[int], *, rate: float, duration: float, tag: str) -> dict:
    """rate updates/s for duration s, one per transaction, round-robin over the items.
    synchronous_commit off: one connection keeps up with 1,000/s (the latency measured
    starts at the commit's timestamp either way)."""
    total = int(rate * duration)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        t0 = time.monotonic()
        for n in range(total):
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.execute(UPDATE_SQL, (f"{tag}:{n}", item_ids[n % len(item_ids)]))
        elapsed = time.monotonic() - t0
    last = {item_ids[n % len(item_ids)]: f"{tag}:{n}" for n in range(max(0, total - len(item_ids)), total)}
    return {"sent": total, "achieved_rate": round(total / elapsed, 1) if elapsed else 0.0, "last": last}


def run(base_url: str, *, rates: list[float], transports: list[str], duration: float, tmp: Path) -> dict:
    name = f"{psycopg.conninfo.conninfo_to_dict(base_url).get('dbname', 'bench')}_page"
    with scratch_database(name, server=base_url) as url:
        return _run_on(url, rates=rates, transports=transports, duration=duration, tmp=tmp)


def _run_on(url: str, *, rates: list[float], transports: list[str], duration: float, tmp: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from stack.keys import KeySet
    from stack.run import Stack

    env = {"DATABASE_URL": url, "PORTAL_PORT": str(procs.free_port()), "SYNC_PORT": str(procs.free_port()),
           "OUTBOX_BROKER_FRONTEND": str(procs.free_port()), "OUTBOX_BROKER_BACKEND": str(procs.free_port()),
           "OUTBOX_RELAY_METRICS_PORT": str(procs.free_port()), "PORTAL_RATELIMIT_DIR": str(tmp / "ratelimit")}
    out = open(tmp / "page-stack.log", "w", encoding="utf-8")
    stack = Stack(env=env, out=out, keys=KeySet.generate())
    results: dict = {}
    try:
        stack.start()
        cid, item_ids = _alices_list(url)
        portal = stack.portal_url.rstrip("/")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{portal}/login/")
                page.fill("#login-form input[name=username]", "alice")
                page.fill("#login-form input[name=password]", "alice-demo")
                with page.expect_navigation():
                    page.click("#login-form button[type=submit]")
                context.add_init_script(CAPTURE_JS)
                for transport in transports:
                    for rate in rates:
                        results[f"{transport}@{int(rate)}"] = _measure(page, portal, cid, item_ids, url, transport,
                                                                      rate, duration)
                        log.info("page %s@%s: %s", transport, rate, results[f"{transport}@{int(rate)}"])
            finally:
                browser.close()
    finally:
        stack.stop()
        out.close()
    return results


def _measure(page, portal: str, cid: int, item_ids: list[int], url: str, transport: str, rate: float,
             duration: float) -> dict:
    page.goto(f"{portal}/checklists/{cid}/?transports={transport}&latency_sample_ms=0")
    page.wait_for_function("() => document.getElementById('sync-status').dataset.status === 'live'", timeout=20_000)
    # Subscribed, and a few heartbeats in: the page sets its clock by the fastest one.
    page.wait_for_timeout(3000)
    tag = f"{transport}-{int(rate)}"
    w = paced_updates(url, item_ids, rate=rate, duration=duration, tag=tag)
    # Applied: every item shows its last text (nothing lost on the way to the DOM).
    shown = "(last) => Object.entries(last).every(([id, text]) => { " \
            "const li = document.querySelector(`#items li[data-item-id=\"${id}\"] .item-text`); " \
            "return li && li.textContent === text; })"
    applied = True
    try:
        page.wait_for_function(shown, arg={str(k): v for k, v in w["last"].items()}, timeout=20_000)
    except Exception:  # noqa: BLE001 - reported as not applied, with what was measured
        applied = False
    page.wait_for_timeout(1500)  # the page sends its last batch within a second
    samples = page.evaluate("() => window.__latency.slice()")
    return {**summarize_ms(ms / 1000.0 for ms in samples), "sent": w["sent"], "achieved_rate": w["achieved_rate"],
            "all_applied": applied, "rate": rate, "transport": transport}
