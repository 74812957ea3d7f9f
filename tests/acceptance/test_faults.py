"""Crashes, restarts and outages while people edit: afterwards no change is missing on any
page, and the pages got there by themselves (no reload)."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.acceptance import pages

pytestmark = pytest.mark.browser

OFFLINE_SECONDS = 30


class BackgroundWriter(threading.Thread):
    """A program that keeps writing through the REST API (add, then toggle) until stopped."""

    def __init__(self, api, checklist_id: int):
        super().__init__(daemon=True, name="api-writer")
        self.api = api.clone()
        self.checklist_id = checklist_id
        self.stopping = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and self.writes < 200:
                item = self.api.add_item(self.checklist_id, f"api write {self.writes}")
                if self.writes % 2:
                    self.api.patch_item(item["id"], done=True)
                self.writes += 1
                self.stopping.wait(0.1)  # pacing: a steady stream, not a flood
        except BaseException as exc:  # noqa: BLE001 - reported by finish() in the test thread
            self.error = exc

    def finish(self) -> int:
        self.stopping.set()
        self.join(30)
        assert not self.is_alive(), "the API writer did not stop"
        if self.error:
            raise self.error
        return self.writes


def no_navigation_marker(page) -> str:
    return page.evaluate("() => window.__acceptanceMarker")


def test_relay_killed_and_restarted_while_users_edit(browsers, make_checklist, api, db, faults, stack):
    cid = make_checklist(["Rope", "Helmet"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    pages.add(alice, "Before the crash")
    pages.wait_all(db.items(cid), alice=alice, bob=bob)

    writer = BackgroundWriter(api, cid)
    writer.start()
    old_pid = faults.stop("relay", signal.SIGKILL)
    # Both users keep editing while nothing is published.
    pages.add(alice, "Added while the relay is down")
    pages.toggle(bob, "Rope")
    pages.rename(alice, "Helmet", "Climbing helmet")
    pages.add(bob, "Bob's addition while down")
    pages.move(bob, "Bob's addition while down", "up")
    new_pid = faults.restart("relay")
    assert new_pid != old_pid
    pages.add(alice, "After the restart")
    pages.toggle(bob, "Climbing helmet")
    writes = writer.finish()
    assert writes > 0

    final = db.items(cid)
    pages.wait_all(final, alice=alice, bob=bob)
    assert len(final) == 3 + 3 + writes
    assert no_navigation_marker(alice) == no_navigation_marker(bob) == "set-at-load"


def test_sync_server_restart_pages_reconnect_by_themselves_and_catch_up(
        browsers, make_checklist, api, db, faults):
    cid = make_checklist(["Lamp", "Chair"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    marks = {who: len(pages.status_log(p)) for who, p in (("alice", alice), ("bob", bob))}

    faults.stop("syncserver", signal.SIGTERM)
    pages.wait_status(alice, "reconnecting")
    pages.wait_status(bob, "reconnecting")
    # Changes committed while the sync server is away: its successor must replay them.
    made = api.add_item(cid, "Added while the sync server is down")
    api.patch_item(db.item_id(cid, "Lamp"), done=True)
    pages.rename(alice, "Chair", "Armchair")
    faults.restart("syncserver")
    api.delete_item(made["id"])
    api.add_item(cid, "Added after the restart")

    pages.wait_status(alice, "live")
    pages.wait_status(bob, "live")
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    for who, page in (("alice", alice), ("bob", bob)):
        seen = pages.status_log(page)[marks[who]:]
        assert seen[0] == "reconnecting" and seen[-1] == "live" and "offline" not in seen, (who, seen)
        assert no_navigation_marker(page) == "set-at-load", f"{who}'s page was reloaded"


def test_browser_offline_for_30s_shows_every_missed_change_without_reload(browsers, make_checklist, api, db):
    cid = make_checklist(["Bread", "Butter", "Jam"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    navigations: list[str] = []
    bob.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == bob.main_frame else None)
    before = pages.items(bob)

    bob.context.set_offline(True)
    went_offline = time.monotonic()
    pages.wait_status(bob, "offline")
    pages.add(alice, "Honey")
    pages.toggle(alice, "Bread")
    pages.rename(alice, "Jam", "Apricot jam")
    pages.move(alice, "Honey", "up")
    pages.delete(alice, "Butter")
    api.add_item(cid, "Tea (from the API)")
    pages.wait_all(db.items(cid), alice=alice)
    # Stay offline for the whole outage (the scenario's length, not a wait for a result).
    bob.wait_for_timeout(max(0.0, OFFLINE_SECONDS - (time.monotonic() - went_offline)) * 1000)
    assert pages.items(bob) == before, "bob's page changed while it was offline"
    assert bob.locator("#sync-status").get_attribute("data-status") == "offline"

    bob.context.set_offline(False)
    pages.wait_status(bob, "live")
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert navigations == [], f"bob's page navigated: {navigations}"
    assert no_navigation_marker(bob) == "set-at-load"
