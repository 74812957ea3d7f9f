"""Driving the live checklist page in chromium: log in, open a checklist, act through its
controls, read what it shows, and wait (bounded) until it shows what the database holds.

Every action waits for its own POST answer, so the change is committed when it returns;
it never waits for the other pages, which is what the scenarios then check.
"""
from __future__ import annotations

import json
import re
from contextlib import ExitStack
from typing import Callable

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

# The page's items as [id, text, done, version] rows, in display order.
READ_ITEMS_JS = """() => [...document.querySelectorAll('#items li[data-item-id]')].map(li => [
    Number(li.dataset.itemId), li.querySelector('.item-text').textContent,
    li.querySelector('.item-done').checked, Number(li.dataset.version)])"""

MATCHES_JS = """(expected) => {
    const got = (%s)();
    return JSON.stringify(got) === JSON.stringify(expected);
}""" % READ_ITEMS_JS

# Installed before any page script: a marker that only a reload or navigation would lose,
# a log of every value the live indicator takes, and a log of the sync protocol: each
# SockJS connection the page opens (the global SockJS is wrapped as the vendor script
# defines it) with the messages it sent and received, as parsed JSON.
PAGE_INIT_JS = """
window.__acceptanceMarker = 'set-at-load';
window.__statusLog = [];
window.__sync = [];
(() => {
  let wrapped;
  Object.defineProperty(window, 'SockJS', {
    configurable: true,
    get() { return wrapped; },
    set(Real) {
      wrapped = function (...args) {
        const sock = new Real(...args);
        const log = { sent: [], received: [] };
        window.__sync.push(log);
        const send = sock.send.bind(sock);
        sock.send = (text) => { log.sent.push(JSON.parse(text)); return send(text); };
        sock.addEventListener('message', (e) => {
          try { log.received.push(JSON.parse(e.data)); } catch (err) { log.received.push({ unparsed: String(e.data) }); }
        });
        return sock;
      };
      Object.assign(wrapped, Real);
    },
  });
})();
document.addEventListener('DOMContentLoaded', () => {
  const el = document.getElementById('sync-status');
  if (!el) return;
  const note = () => {
    const s = el.dataset.status;
    if (window.__statusLog[window.__statusLog.length - 1] !== s) window.__statusLog.push(s);
  };
  note();
  new MutationObserver(note).observe(el, { attributes: true, attributeFilter: ['data-status'] });
});
"""

WAIT_MS = 15_000  # bound for any page to follow a committed change


def login(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("#login-form input[name=username]", username)
    page.fill("#login-form input[name=password]", password)
    with page.expect_navigation():
        page.click("#login-form button[type=submit]")
    if page.url.rstrip("/").endswith("/login"):
        raise AssertionError(f"login as {username} failed: still on {page.url}")


def open_checklist(page: Page, base_url: str, checklist_id: int, query: str = "") -> None:
    """Open the checklist page and wait until its live updates are on."""
    page.goto(f"{base_url}/checklists/{checklist_id}/{query}")
    wait_status(page, "live")


def wait_status(page: Page, status: str, timeout: float = WAIT_MS) -> None:
    page.wait_for_function(
        "(s) => document.getElementById('sync-status').dataset.status === s", arg=status, timeout=timeout,
    )


def wait_subscribed(page: Page, timeout: float = WAIT_MS) -> None:
    """Until the server has answered one of the page's subscribes with `subscribed`. The status
    reads "live" from `authed` on, before the subscription is in place: an event committed in
    between reaches the page all the same, but in `recovered`, not as a live event."""
    page.wait_for_function(
        "() => window.__sync.some(s => s.received.some(m => m && m.type === 'subscribed'))", timeout=timeout,
    )


def status_log(page: Page) -> list[str]:
    return page.evaluate("() => window.__statusLog.slice()")


def sync_log(page: Page) -> list[dict]:
    """[{"sent": [...], "received": [...]}] per SockJS connection the page opened, in order."""
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__sync))")


def items(page: Page) -> list[tuple[int, str, bool, int]]:
    return [tuple(row) for row in page.evaluate(READ_ITEMS_JS)]


def text_done(rows: list[tuple]) -> list[tuple[str, bool]]:
    return [(row[1], row[2]) for row in rows]


def wait_items(page: Page, expected: list[tuple[int, str, bool, int]], who: str, timeout: float = WAIT_MS) -> None:
    """Wait until the page shows exactly these rows (id, text, done, version) in this order."""
    want = [list(row) for row in expected]
    try:
        page.wait_for_function(MATCHES_JS, arg=want, timeout=timeout, polling=100)
    except PlaywrightError as exc:
        if "Timeout" not in str(exc):
            raise
        raise AssertionError(
            f"{who}'s page did not show the database state within {timeout / 1000:.0f}s\n"
            f"  expected: {json.dumps(want)}\n  page:     {json.dumps(items(page))}\n"
            f"  status log: {status_log(page)}"
        ) from None


def item_row(page: Page, text: str):
    """The <li> whose text is exactly `text`."""
    return page.locator("#items li[data-item-id]").filter(
        has=page.locator(".item-text", has_text=re.compile(f"^{re.escape(text)}$"))
    )


def _posting(page: Page, action: Callable[[], None], path_end: str) -> None:
    """Run a UI action and wait for its POST answer (the change is then committed)."""
    def is_ours(response) -> bool:
        return response.request.method == "POST" and response.url.split("?")[0].endswith(path_end)

    with page.expect_response(is_ours, timeout=WAIT_MS) as info:
        action()
    response = info.value
    if not response.ok:
        raise AssertionError(f"{path_end} answered {response.status}: {response.text()[:300]}")


def simultaneously(*actions: tuple[Page, Callable[[], None], str]) -> None:
    """Start every (page, action, path_end) before waiting for any answer, so the writes
    race each other in the portal and the database."""
    with ExitStack() as waits:
        infos = []
        for page, _act, path_end in actions:
            infos.append((path_end, waits.enter_context(page.expect_response(
                lambda r, end=path_end: r.request.method == "POST" and r.url.split("?")[0].endswith(end),
                timeout=WAIT_MS))))
        for _page, act, _path_end in actions:
            act()
    for path_end, info in infos:
        if not info.value.ok:
            raise AssertionError(f"{path_end} answered {info.value.status}")


def add(page: Page, text: str) -> None:
    def act() -> None:
        page.fill("#add-item-form input[name=text]", text)
        page.press("#add-item-form input[name=text]", "Enter")
    _posting(page, act, "/items/")


def toggle(page: Page, text: str) -> None:
    _posting(page, lambda: item_row(page, text).locator(".item-done").click(), "/toggle/")


def rename(page: Page, text: str, new_text: str) -> None:
    row = item_row(page, text)

    def act() -> None:
        row.locator(".item-edit summary").click()
        field = row.locator(".item-edit input[name=text]")
        field.fill(new_text)
        field.press("Enter")
    _posting(page, act, "/edit/")


def move(page: Page, text: str, direction: str) -> None:
    button = item_row(page, text).locator(f"button[name=direction][value={direction}]")
    _posting(page, button.click, "/move/")


def delete(page: Page, text: str) -> None:
    _posting(page, item_row(page, text).locator(".item-delete button").click, "/delete/")


def wait_all(expected: list[tuple[int, str, bool, int]], **named_pages: Page) -> None:
    """Wait until every page shows exactly these rows."""
    for who, page in named_pages.items():
        wait_items(page, expected, who)
