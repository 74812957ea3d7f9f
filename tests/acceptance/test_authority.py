"""Authority in the browser: a member removed while offline cannot come back with the token
he already had, and a page keeps its live stream across many token expiries by renewing
over its open connection (the suite's stack signs tokens for SYNC_TOKEN_TTL seconds)."""
from __future__ import annotations

import time

import pytest

from tests.acceptance import pages
from tests.acceptance.conftest import SYNC_TOKEN_TTL

pytestmark = pytest.mark.browser


def _events_received(log: list[dict], topic: str) -> list[dict]:
    return [e for conn in log for m in conn["received"]
            if m.get("type") in ("events", "recovered") and m.get("topic") == topic for e in m["events"]]


def test_bob_removed_while_offline_reconnects_with_his_old_token_and_the_page_says_access_ended(
        browsers, make_checklist, api, db):
    cid = make_checklist(["Tent"])
    topic = f"checklist:{cid}"
    bob = browsers.checklist_page("bob", cid)
    api.add_item(cid, "Stove")
    pages.wait_items(bob, db.items(cid), "bob")
    before = pages.items(bob)
    granted: list[int] = []
    bob.on("response", lambda r: granted.append(r.status) if r.url.endswith("/api/sync/token/") else None)

    bob.context.set_offline(True)
    pages.wait_status(bob, "offline")
    api.remove_member(cid, "bob")
    item = api.add_item(cid, "Secret plan")
    api.patch_item(item["id"], done=True)
    bob.context.set_offline(False)

    bob.locator("#revoked-banner").wait_for(state="visible", timeout=pages.WAIT_MS)
    log = pages.sync_log(bob)
    # Back online, the page connected again with the token it already had: the sync server,
    # not the token endpoint, refused it (the portal would not sign a new one for this list).
    assert len(log) >= 2, log
    last = log[-1]
    assert 200 not in granted, f"a sync token was signed after the removal: {granted}"
    assert [m["type"] for m in last["sent"]][:2] == ["auth", "subscribe"], last["sent"]
    assert {"type": "revoked", "topic": topic} in last["received"], last["received"]
    # Nothing changed on the page, and no event reached it after it went offline.
    api.add_item(cid, "Later secret")
    pages.wait_status(bob, "offline")
    time.sleep(1.0)
    assert pages.items(bob) == before
    assert [e["data"].get("text") for e in _events_received(log[1:], topic)] == []
    assert [e["data"].get("text") for e in _events_received(pages.sync_log(bob)[1:], topic)] == []
    assert bob.locator("#revoked-banner").is_visible()


def test_the_page_stays_live_across_several_token_expiries_with_nothing_lost_or_duplicated(
        browsers, make_checklist, api, db):
    cid = make_checklist(["Start"], share_with=())
    topic = f"checklist:{cid}"
    alice = browsers.checklist_page("alice", cid)
    since = int(alice.locator("#checklist-page").get_attribute("data-tpos"))
    expiries = 3
    deadline = time.monotonic() + expiries * SYNC_TOKEN_TTL + 2
    n = 0
    while time.monotonic() < deadline:
        api.add_item(cid, f"write {n}")
        n += 1
        time.sleep(0.25)
    pages.wait_items(alice, db.items(cid), "alice")

    log = pages.sync_log(alice)
    assert len(log) == 1, f"the page reconnected {len(log) - 1} time(s)"
    sent, received = log[0]["sent"], log[0]["received"]
    auths = [m for m in sent if m["type"] == "auth"]
    assert len(auths) >= expiries + 1, f"{len(auths)} auth messages over {expiries} token lifetimes"
    assert len({m["token"] for m in auths}) == len(auths)
    assert [m for m in sent if m["type"] == "subscribe"] == [
        {"type": "subscribe", "topic": topic, "since": since, "presence": True}]  # the page shows who is here
    assert [m for m in received if m["type"] in ("error", "resync", "revoked")] == []
    assert sum(m["type"] == "authed" for m in received) == len(auths)
    tpos = [e["tpos"] for e in _events_received(log, topic)]
    assert tpos == list(range(since + 1, since + 1 + len(tpos))), "events lost, duplicated or out of order"
    texts = [e["data"]["text"] for e in _events_received(log, topic) if e["entity"] == "item"]
    assert texts == [f"write {i}" for i in range(n)]
    assert pages.status_log(alice)[-1] == "live" and "reconnecting" not in pages.status_log(alice)[1:]
