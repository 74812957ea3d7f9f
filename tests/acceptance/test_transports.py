"""Every SockJS transport the sync server enables by default carries live updates, forced
one at a time in the page with ?transports=<name> (checklist.js passes it to SyncClient),
under the portal's Content-Security-Policy: the page runs with it and the browser reports
no violation (a blocked script, style or connection would show here)."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.acceptance import pages

pytestmark = pytest.mark.browser

# sockjs-client transport name -> the last path segments of the sync server URLs it uses
# (/sync/<server>/<session>/<segment>); receiving transports post with xhr_send.
TRANSPORTS = {
    "websocket": {"websocket"},
    "xhr-streaming": {"xhr_streaming", "xhr_send"},
    "xhr-polling": {"xhr", "xhr_send"},
    "eventsource": {"eventsource", "xhr_send"},
}
SESSION_PATH = re.compile(r"/sync/[^/]+/[^/]+/(\w+)")


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_forced_transport_delivers_live_updates(transport, browsers, make_checklist, api, db, base_url, stack):
    cid = make_checklist(["First"])
    bob = browsers.page_for("bob")
    urls: list[str] = []
    violations: list[str] = []
    bob.on("request", lambda request: urls.append(request.url))
    bob.on("websocket", lambda ws: urls.append(ws.url))
    bob.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    response = bob.goto(f"{base_url}/checklists/{cid}/?transports={transport}")
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    pages.wait_status(bob, "live")

    item = api.add_item(cid, f"Sent over {transport}")
    pages.wait_all(db.items(cid), bob=bob)
    api.patch_item(item["id"], done=True, text=f"Sent over {transport} (done)")
    pages.wait_all(db.items(cid), bob=bob)
    api.delete_item(db.item_id(cid, "First"))
    pages.wait_all(db.items(cid), bob=bob)

    used = used_segments(urls, stack.ports.sync)
    assert used == TRANSPORTS[transport], f"forced {transport}, the page used {sorted(used)}"
    assert violations == [], violations


def test_without_websockets_a_page_streams_over_eventsource_not_xhr_streaming(browsers, make_checklist, api, db,
                                                                              base_url, stack):
    """sockjs-client would fall back to xhr-streaming first, which Chromium delivers to the
    page at most every 50 ms; the sync client leaves it out where EventSource exists."""
    cid = make_checklist(["First"])
    bob = browsers.page_for("bob")
    bob.add_init_script("window.WebSocket = undefined;")  # as for a browser that cannot use one
    urls: list[str] = []
    bob.on("request", lambda request: urls.append(request.url))
    bob.goto(f"{base_url}/checklists/{cid}/")
    pages.wait_status(bob, "live")
    api.add_item(cid, "Sent over eventsource")
    pages.wait_all(db.items(cid), bob=bob)
    used = used_segments(urls, stack.ports.sync)
    assert used == TRANSPORTS["eventsource"], f"the page used {sorted(used)}"


def used_segments(urls: list[str], sync_port: int) -> set[str]:
    """The transports' URL segments among `urls` that went to the sync server."""
    used = set()
    for url in urls:
        parts = urlsplit(url)
        match = SESSION_PATH.fullmatch(parts.path)
        if parts.netloc.endswith(f":{sync_port}") and match:
            used.add(match[1])
    return used
