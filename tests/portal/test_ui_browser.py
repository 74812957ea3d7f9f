"""The checklist page's script in a real browser (headless Debian chromium), against a
live Django server and real PostgreSQL, without a sync server: the script's own forms
(fetch + JSON answers) must keep the page and the database in step, and the live
indicator must say the page is not live."""
from __future__ import annotations

import os

import pytest

from portal.checklists.models import Item

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def browser(monkeypatch):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed")
    # Playwright's sync API runs an event loop on this thread, which makes Django refuse
    # ORM calls from the test body; the test is single-threaded, so they are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def sync_url_nowhere(settings):
    from stack.processes import free_port

    # Nothing listens there: the page must say it is not live, and keep working.
    settings.SYNC_PUBLIC_URL = f"http://127.0.0.1:{free_port()}/sync"


def open_page(browser, live_server, user: str, checklist):
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(10_000)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", f"pw-{user}")
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/checklists/{checklist.pk}/")
    return page, errors


def dom_texts(page) -> list[str]:
    return page.eval_on_selector_all("#items li[data-item-id] .item-text", "els => els.map(e => e.textContent)")


def db_texts(checklist) -> list[str]:
    return list(Item.objects.filter(checklist=checklist).order_by("position", "id").values_list("text", flat=True))


def test_script_forms_update_page_and_database(browser, live_server, checklist, sync_url_nowhere):
    page, errors = open_page(browser, live_server, "bob", checklist)
    page.wait_for_function("() => ['reconnecting', 'offline'].includes(document.querySelector('#sync-status').textContent)")

    # Add: the page shows the row from the JSON answer, with its version.
    page.fill("#add-item-form input[name=text]", "Eggs")
    page.press("#add-item-form input[name=text]", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#items li[data-item-id]').length === 3")
    assert dom_texts(page) == ["Milk", "Bread", "Eggs"] == db_texts(checklist)
    assert page.input_value("#add-item-form input[name=text]") == ""
    eggs = Item.objects.get(checklist=checklist, text="Eggs")
    li = f'#items li[data-item-id="{eggs.pk}"]'
    assert page.get_attribute(li, "data-version") == "1"

    # Toggle: clicking the checkbox saves at once.
    page.check(f"{li} .item-done")
    page.wait_for_selector(f'{li}[data-version="2"]')
    assert Item.objects.get(pk=eggs.pk).done is True

    # Edit.
    page.click(f"{li} .item-edit summary")
    page.fill(f"{li} .item-edit input[name=text]", "Free-range eggs")
    page.click(f"{li} .item-edit button[type=submit]")
    page.wait_for_selector(f'{li}[data-version="3"]')
    assert page.text_content(f"{li} .item-text") == "Free-range eggs"
    assert Item.objects.get(pk=eggs.pk).text == "Free-range eggs"

    # Move up: a write of `position`, shown in the new order.
    page.click(f'{li} button[value="up"]')
    page.wait_for_function("() => document.querySelector('#items li:nth-child(2) .item-text').textContent === 'Free-range eggs'")
    assert dom_texts(page) == ["Milk", "Free-range eggs", "Bread"] == db_texts(checklist)

    # Delete.
    page.click(f"{li} .item-delete button")
    page.wait_for_selector(li, state="detached")
    assert dom_texts(page) == ["Milk", "Bread"] == db_texts(checklist)

    # Bad input: a message, nothing written.
    page.evaluate("document.querySelector('#add-item-form input[name=text]').removeAttribute('maxlength')")
    page.fill("#add-item-form input[name=text]", "x" * 501)
    page.press("#add-item-form input[name=text]", "Enter")
    page.wait_for_selector("#flash:not([hidden])")
    assert "500" in page.text_content("#flash")
    assert db_texts(checklist) == ["Milk", "Bread"]
    assert errors == []


def test_viewer_page_is_read_only_in_the_browser(browser, live_server, checklist, sync_url_nowhere):
    page, errors = open_page(browser, live_server, "carol", checklist)
    assert page.query_selector("#add-item-form") is None
    assert page.is_disabled("#items li .item-done")
    assert page.text_content("#checklist-title") == "Groceries"
    page.wait_for_function("() => ['reconnecting', 'offline'].includes(document.querySelector('#sync-status').textContent)")
    assert errors == []


def test_a_refused_toggle_shows_the_saved_state_again(browser, live_server, checklist, sync_url_nowhere):
    """The checkbox flips when clicked, before the server answers: when the save fails
    (here the network refuses it), the page puts it back to what is saved, and says so."""
    page, errors = open_page(browser, live_server, "bob", checklist)
    milk = Item.objects.get(checklist=checklist, text="Milk")
    li = f'#items li[data-item-id="{milk.pk}"]'
    assert not page.is_checked(f"{li} .item-done")
    page.route("**/toggle/", lambda route: route.abort())

    page.click(f"{li} .item-done")
    page.wait_for_selector("#flash:not([hidden])")
    page.wait_for_function(f"() => !document.querySelector('{li} .item-done').checked")
    assert Item.objects.get(pk=milk.pk).done is False
    assert page.get_attribute(li, "data-version") == str(milk.version)
    assert errors == []
