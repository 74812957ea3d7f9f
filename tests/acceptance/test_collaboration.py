"""People and programs editing one checklist: every writer's committed change reaches
every open page, and the pages end identical to the database."""
from __future__ import annotations

import pytest

from tests.acceptance import pages

pytestmark = pytest.mark.browser


def test_two_users_see_each_others_edits_and_end_identical_to_the_database(
        browsers, make_checklist, db, artifacts):
    cid = make_checklist(["Tent", "Stove", "Map"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    assert pages.items(alice) == pages.items(bob) == db.items(cid)

    # One edit at a time: each appears on the other side.
    steps = [
        (alice, lambda: pages.add(alice, "Matches")),
        (bob, lambda: pages.toggle(bob, "Tent")),
        (alice, lambda: pages.rename(alice, "Stove", "Gas stove")),
        (bob, lambda: pages.move(bob, "Map", "up")),
        (alice, lambda: pages.delete(alice, "Matches")),
        (bob, lambda: pages.add(bob, "Rope")),
    ]
    for _actor, act in steps:
        act()
        pages.wait_all(db.items(cid), alice=alice, bob=bob)

    # Interleaved from both sides, without waiting for the other page in between.
    pages.add(alice, "Torch")
    pages.add(bob, "Batteries")
    pages.move(alice, "Torch", "up")
    pages.rename(bob, "Rope", "Climbing rope")
    pages.toggle(alice, "Batteries")
    pages.toggle(bob, "Tent")
    pages.move(bob, "Batteries", "up")
    pages.delete(alice, "Map")
    pages.add(alice, "Sunscreen")
    pages.rename(bob, "Torch", "Head torch")
    pages.move(alice, "Sunscreen", "up")
    pages.delete(bob, "Gas stove")
    pages.toggle(alice, "Head torch")
    pages.toggle(bob, "Climbing rope")

    # Both at the same instant, on the same rows: row locks order the writes, and each
    # page must end with the newer version whichever answer or event it saw first.
    pages.simultaneously(
        (alice, lambda: item_control(alice, "Tent", ".item-done").click(), "/toggle/"),
        (bob, lambda: item_control(bob, "Tent", ".item-done").click(), "/toggle/"),
    )
    pages.simultaneously(
        (alice, lambda: item_control(alice, "Sunscreen", "button[value=down]").click(), "/move/"),
        (bob, lambda: item_control(bob, "Batteries", "button[value=up]").click(), "/move/"),
    )

    final = db.items(cid)
    pages.wait_all(final, alice=alice, bob=bob)
    assert pages.items(alice) == pages.items(bob) == final
    assert {text for _id, text, _done, _v in final} == {
        "Tent", "Climbing rope", "Batteries", "Head torch", "Sunscreen"}
    alice.screenshot(path=str(artifacts / "two-users-alice.png"), full_page=True)
    bob.screenshot(path=str(artifacts / "two-users-bob.png"), full_page=True)


def test_api_client_changes_appear_on_both_pages(browsers, make_checklist, api, db):
    cid = make_checklist(["Milk", "Bread"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)

    created = api.add_item(cid, "Eggs from the API")
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert "Eggs from the API" in [row[1] for row in pages.items(bob)]

    api.patch_item(created["id"], text="Free-range eggs", done=True)
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert ("Free-range eggs", True) in pages.text_done(pages.items(alice))

    api.patch_item(created["id"], position=-1)  # first
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert pages.items(bob)[0][1] == "Free-range eggs"

    api.delete_item(created["id"])
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert [row[1] for row in pages.items(alice)] == ["Milk", "Bread"]


def test_admin_edit_and_raw_sql_update_appear_on_both_pages(browsers, make_checklist, db, base_url):
    cid = make_checklist(["Passport", "Tickets"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)
    passport = db.item_id(cid, "Passport")
    tickets = db.item_id(cid, "Tickets")

    # An administrator changes an item in the Django admin.
    admin = browsers.page_for("admin")
    admin.goto(f"{base_url}/admin/checklists/item/{passport}/change/")
    admin.fill("#id_text", "Passport (renewed)")
    admin.check("#id_done")
    with admin.expect_navigation():
        admin.click("input[name=_save]")
    assert "/admin/checklists/item/" in admin.url and "/change/" not in admin.url, admin.url
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert ("Passport (renewed)", True) in pages.text_done(pages.items(bob))

    # Someone runs an UPDATE in psql: no Django involved at all.
    assert db.sql("UPDATE checklists_item SET text = %s, done = NOT done WHERE id = %s",
                  ("Tickets (printed)", tickets)) == 1
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    assert ("Tickets (printed)", True) in pages.text_done(pages.items(alice))


def test_removed_member_stops_receiving_changes_and_sees_access_ended(browsers, make_checklist, api, db):
    cid = make_checklist(["Snacks"])
    alice = browsers.checklist_page("alice", cid)
    bob = browsers.checklist_page("bob", cid)

    # bob is live: a change reaches him.
    api.add_item(cid, "Water")
    pages.wait_all(db.items(cid), alice=alice, bob=bob)
    before = pages.items(bob)

    # alice removes bob in her members panel.
    remove = alice.locator("#members button[aria-label='Remove bob']")
    with alice.expect_response(lambda r: r.request.method == "POST" and "/remove/" in r.url) as answer:
        remove.click()
    assert answer.value.ok
    bob.locator("#revoked-banner").wait_for(state="visible", timeout=pages.WAIT_MS)

    # Later changes reach alice's page (so they were delivered) but never bob's.
    item = api.add_item(cid, "Secret plan")
    api.patch_item(item["id"], done=True)
    api.patch_item(db.item_id(cid, "Snacks"), text="Snacks (bought)")
    pages.wait_all(db.items(cid), alice=alice)
    assert pages.items(bob) == before
    assert bob.locator("#revoked-banner").is_visible()
    assert bob.locator("#sync-status").get_attribute("data-status") == "offline"


def item_control(page, text: str, selector: str):
    return pages.item_row(page, text).locator(selector)
