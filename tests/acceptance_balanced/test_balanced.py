"""Three sync servers behind HAProxy, in chromium: users on different servers see each
other's edits and presence; a server killed with kill -9 under load, or drained with
SIGTERM, and every page still ends equal to the database without a reload; every SockJS
transport works through the balancer."""
from __future__ import annotations

import re
import signal
import time
from urllib.parse import urlsplit

import pytest

from tests.acceptance import pages
from tests.acceptance.test_faults import BackgroundWriter, no_navigation_marker
from tests.acceptance.test_transports import SESSION_PATH, TRANSPORTS

pytestmark = pytest.mark.browser


def presence(page) -> dict[str, int]:
    """The page's "Here now" list: username -> tabs."""
    return {row[0]: int(row[1]) for row in page.evaluate(
        "() => [...document.querySelectorAll('#presence-list li')].map(li => [li.dataset.username, li.dataset.tabs])")}


def wait_presence(page, expected: dict[str, int], who: str, timeout: float = pages.WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while presence(page) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{who}'s page shows {presence(page)} here, expected {expected}")
        page.wait_for_timeout(100)


def open_on_new_server(browsers, servers, username: str, cid: int, query: str = ""):
    """Open the page and return it with the server its connection landed on (after the
    sessions of closed pages are gone: the counts must hold still first)."""
    before, deadline = servers.connections(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.7)
        now = servers.connections()
        if now == before:
            break
        before = now
    page = browsers.checklist_page(username, cid, query)
    deadline = time.monotonic() + 10
    while True:
        after = servers.connections()
        grown = [n for n in after if after[n] > before.get(n, 0)]
        if len(grown) == 1:
            return page, grown[0]
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.1)


def test_users_on_different_servers_see_each_others_edits_and_presence(browsers, make_checklist, db, servers):
    cid = make_checklist(["Tent"])
    alice, alice_on = open_on_new_server(browsers, servers, "alice", cid)
    bob, bob_on = open_on_new_server(browsers, servers, "bob", cid)
    assert alice_on != bob_on, "leastconn put both on one server"
    wait_presence(alice, {"alice": 1, "bob": 1}, "alice")
    wait_presence(bob, {"alice": 1, "bob": 1}, "bob")
    assert "(you)" in alice.locator("#presence-list li[data-username=alice]").inner_text()

    pages.add(alice, "Stove")
    pages.toggle(bob, "Tent")
    pages.rename(alice, "Tent", "Big tent")
    pages.wait_all(db.items(cid), alice=alice, bob=bob)

    second = browsers.checklist_page("bob", cid, label="bob-2")
    wait_presence(alice, {"alice": 1, "bob": 2}, "alice")
    second.context.close()  # the tab is closed
    wait_presence(alice, {"alice": 1, "bob": 1}, "alice", timeout=10)
    bob.context.close()
    wait_presence(alice, {"alice": 1}, "alice", timeout=10)


def test_removed_member_leaves_the_list_and_sees_no_more_presence(browsers, make_checklist, api, servers):
    cid = make_checklist(["Map"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    wait_presence(bob, {"alice": 1, "bob": 1}, "bob")
    api.remove_member(cid, "bob")
    bob.wait_for_selector("#revoked-banner:not([hidden])", timeout=pages.WAIT_MS)
    wait_presence(alice, {"alice": 1}, "alice")
    assert presence(bob) == {}, "a removed member still sees who is here"
    third = browsers.checklist_page("alice", cid, label="alice-2")
    wait_presence(alice, {"alice": 2}, "alice")
    assert presence(bob) == {}, "a removed member received presence after the removal"
    third.context.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "drain"])
def test_a_server_dies_under_load_and_every_page_ends_equal_to_the_database(
        sig, browsers, make_checklist, api, db, faults, servers):
    cid = make_checklist(["Rope", "Helmet"])
    opened = [open_on_new_server(browsers, servers, who, cid) for who in ("alice", "bob", "alice")]
    victim = opened[0][1]
    on_victim = [page for page, server in opened if server == victim]
    wait_presence(opened[-1][0], {"alice": 2, "bob": 1}, "alice")

    writer = BackgroundWriter(api, cid)
    writer.start()
    time.sleep(1)
    faults.stop(victim, sig)
    pages.add(opened[1][0], "Added while a server is gone")
    for page in on_victim:
        pages.wait_status(page, "live")
    writes = writer.finish()
    assert writes > 0

    final = db.items(cid)
    for page, server in opened:
        pages.wait_items(page, final, f"page on {server}")
        assert no_navigation_marker(page) == "set-at-load", f"the page on {server} was reloaded"
        seen = pages.status_log(page)
        assert "offline" not in seen, seen
    # Everyone is still here, each tab once: the dead server's rows expired, the moved tabs joined again.
    for page, _server in opened:
        wait_presence(page, {"alice": 2, "bob": 1}, "a page", timeout=15)
    faults.restart(victim)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_every_transport_works_through_the_balancer(transport, browsers, make_checklist, api, db, base_url, stack):
    cid = make_checklist(["First"])
    bob = browsers.page_for("bob")
    urls: list[str] = []
    bob.on("request", lambda request: urls.append(request.url))
    bob.on("websocket", lambda ws: urls.append(ws.url))
    bob.goto(f"{base_url}/checklists/{cid}/?transports={transport}")
    pages.wait_status(bob, "live")
    wait_presence(bob, {"bob": 1}, "bob")
    for i in range(3):
        api.add_item(cid, f"Sent over {transport} #{i}")
    pages.wait_all(db.items(cid), bob=bob)
    # Polling and streaming: many requests of one session, each routed by its server id to
    # the server that holds it (a request that reached another one would end the session).
    bob.wait_for_timeout(2500)
    api.patch_item(db.item_id(cid, "First"), done=True)
    pages.wait_all(db.items(cid), bob=bob)
    used, sessions = set(), set()
    for url in urls:
        parts = urlsplit(url)
        match = SESSION_PATH.fullmatch(parts.path)
        if parts.netloc.endswith(f":{stack.ports.sync}") and match:
            used.add(match[1])
            sessions.add(re.match(r"/sync/([^/]+/[^/]+)/", parts.path)[1])
    assert used == TRANSPORTS[transport], f"forced {transport}, the page used {sorted(used)}"
    assert len(sessions) == 1, f"the page needed {len(sessions)} sessions: {sorted(sessions)}"
    assert pages.status_log(bob)[-1] == "live" and "reconnecting" not in pages.status_log(bob)[1:]


def test_a_tab_whose_network_drops_leaves_within_seconds_and_comes_back(browsers, make_checklist):
    cid = make_checklist(["Compass"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    wait_presence(alice, {"alice": 1, "bob": 1}, "alice")
    bob.context.set_offline(True)
    dropped = time.monotonic()
    wait_presence(alice, {"alice": 1}, "alice", timeout=15)
    assert time.monotonic() - dropped < 12
    bob.context.set_offline(False)
    pages.wait_status(bob, "live")
    wait_presence(alice, {"alice": 1, "bob": 1}, "alice")
    wait_presence(bob, {"alice": 1, "bob": 1}, "bob")
