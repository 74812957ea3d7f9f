"""Acceptance fixtures: the whole stack as `make run` starts it (stack.run.Stack: migrate,
seed_demo, broker, relay, sync server, portal) on free ports against a database of its
own, and headless Debian chromium driven by Playwright.

One stack serves the whole package (starting it is most of the cost), one browser each
module; each test makes its own checklist, so tests do not see each other's items. Tests
that kill or restart a service leave it running again for the next one.

Scopes matter: Playwright's sync API keeps an event loop on the main thread while it
runs, which makes Django refuse ORM calls in every later test of the same pytest run
(SynchronousOnlyOperation), and a second sync_playwright() cannot start meanwhile. So the
browser lives per module, and nothing of this package outlives the package.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
from pathlib import Path

import psycopg
import pytest

from runtime.database import database_url, with_dbname
from stack.keys import KeySet
from stack.processes import ROOT, free_port
from stack.run import Stack
from tests.acceptance import clients, pages

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts" / "acceptance"
DEMO_PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo", "admin": "admin-demo"}
# Variables that would point the stack's services elsewhere than the ports chosen here.
SYNC_TOKEN_TTL = 12  # seconds
STACK_OVERRIDES = ("SYNC_PUBLIC_URL", "SYNC_ALLOWED_ORIGINS", "SYNC_BROKER_URL", "OUTBOX_RELAY_BROKER_URL",
                   *KeySet.generate().env(), "OUTBOX_BROKER_CURVE_SECRET_KEY_FILE",
                   "OUTBOX_RELAY_CURVE_SECRET_KEY_FILE", "SYNC_CURVE_SECRET_KEY_FILE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="package")
def acc_database_url():
    """A database of the acceptance session's own on the configured server, dropped at the end."""
    base = database_url()
    name = f"acc_{secrets.token_hex(4)}"
    admin = with_dbname(base, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(base, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="package")
def stack(acc_database_url, artifacts, tmp_path_factory):
    """The running stack; its combined output goes to test-artifacts/acceptance/stack.log."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    env = {
        "DATABASE_URL": acc_database_url,
        "PORTAL_PORT": str(free_port()),
        "SYNC_PORT": str(free_port()),
        "OUTBOX_BROKER_FRONTEND": str(free_port()),
        "OUTBOX_BROKER_BACKEND": str(free_port()),
        "OUTBOX_RELAY_METRICS_PORT": str(free_port()),
        # Short-lived sync tokens: every page renews its token over its open connection
        # several times during the suite (test_authority.py counts the renewals).
        "SYNC_TOKEN_TTL": str(SYNC_TOKEN_TTL),
        # Rate-limit counters of this stack alone (not shared with a `make run` of this checkout).
        "PORTAL_RATELIMIT_DIR": str(tmp_path_factory.mktemp("ratelimit")),
        **{name: "" for name in STACK_OVERRIDES if name in os.environ},
    }
    log = open(artifacts / "stack.log", "w", encoding="utf-8")
    s = Stack(env=env, out=log, keys=KeySet.generate())
    try:
        s.start()
        yield s
    finally:
        s.stop()
        log.close()


@pytest.fixture(autouse=True)
def stack_running(request, stack):
    """Every test starts with every service up (a failed fault test may have left one down)."""
    assert stack.supervisor is not None
    for name, child in stack.supervisor.children.items():
        if not child.alive():
            stack.restart(name)
    yield


@pytest.fixture(scope="package")
def base_url(stack) -> str:
    return stack.portal_url.rstrip("/")


@pytest.fixture(scope="package")
def api(stack, base_url) -> clients.ApiClient:
    """alice's third-party program: a REST client with an API token of hers."""
    return clients.ApiClient(base_url, clients.create_api_token(stack.database_url, "alice"))


@pytest.fixture(scope="module")
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="package")
def login_states() -> dict[str, dict]:
    """Cookies of the demo users' logged-in sessions, kept across modules."""
    return {}


@pytest.fixture(scope="module")
def sessions(browser, base_url, login_states) -> dict:
    """Logged-in browser state per demo user: each logs in through the login form once."""
    states = login_states

    def state_of(username: str) -> dict:
        if username not in states:
            context = browser.new_context()
            page = context.new_page()
            pages.login(page, base_url, username, DEMO_PASSWORDS[username])
            states[username] = context.storage_state()
            context.close()
        return states[username]

    return {"get": state_of}


class Browsers:
    """Opens one browser context per user (its own cookies, its own network), remembers
    them for screenshots on failure and closes them after the test."""

    def __init__(self, browser, base_url: str, sessions: dict):
        self.browser = browser
        self.base_url = base_url
        self.sessions = sessions
        self.opened: list[tuple[str, object, object]] = []  # (label, context, page)
        self.page_errors: list[str] = []

    def page_for(self, username: str, label: str | None = None):
        context = self.browser.new_context(storage_state=self.sessions["get"](username))
        context.add_init_script(pages.PAGE_INIT_JS)
        page = context.new_page()
        page.set_default_timeout(pages.WAIT_MS)
        label = label or username
        page.on("pageerror", lambda exc: self.page_errors.append(f"{label}: {exc}"))
        self.opened.append((label, context, page))
        return page

    def checklist_page(self, username: str, checklist_id: int, query: str = "", label: str | None = None):
        page = self.page_for(username, label)
        pages.open_checklist(page, self.base_url, checklist_id, query)
        return page

    def screenshots(self, directory: Path, prefix: str) -> list[Path]:
        saved = []
        for label, _context, page in self.opened:
            path = directory / f"{prefix}-{label}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
                saved.append(path)
            except Exception:  # noqa: BLE001 - a closed or crashed page: nothing to save
                pass
        return saved

    def close(self) -> None:
        for _label, context, _page in self.opened:
            context.close()


@pytest.fixture
def browsers(request, browser, base_url, sessions, artifacts):
    b = Browsers(browser, base_url, sessions)
    yield b
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        b.screenshots(artifacts, "FAILED-" + re.sub(r"[^\w.-]+", "_", request.node.name))
    b.close()
    if not failed:
        assert not b.page_errors, f"uncaught errors in the page: {b.page_errors}"


@pytest.fixture
def make_checklist(api, request):
    """A new checklist of alice's, shared with bob as editor, with the given items."""
    def make(texts: list[str], *, share_with: tuple[str, ...] = ("bob",)) -> int:
        checklist_id = api.create_checklist(f"Acceptance: {request.node.name.removeprefix('test_')[:40]}")
        for username in share_with:
            api.share(checklist_id, username, "editor")
        for text in texts:
            api.add_item(checklist_id, text)
        return checklist_id
    return make


@pytest.fixture
def db(stack):
    """What the database holds, for comparison with the pages."""
    class Db:
        url = stack.database_url

        @staticmethod
        def items(checklist_id: int):
            return clients.db_items(stack.database_url, checklist_id)

        @staticmethod
        def item_id(checklist_id: int, text: str) -> int:
            return clients.item_id(stack.database_url, checklist_id, text)

        @staticmethod
        def sql(statement: str, params: tuple = ()) -> int:
            return clients.raw_sql(stack.database_url, statement, params)

    return Db()


@pytest.fixture
def faults(stack):
    """Fault injection on the shared stack's services."""
    class Faults:
        @staticmethod
        def stop(name: str, sig: int = signal.SIGKILL) -> int:
            """Send sig to a service, wait until it has exited; returns its old pid."""
            child = stack.supervisor.children[name]
            stack.kill(name, sig)
            child.proc.wait(15)
            return child.pid

        @staticmethod
        def restart(name: str) -> int:
            """Start it again (stopping it first if it still runs), ready; returns the new pid."""
            stack.restart(name)
            return stack.pids()[name]

    return Faults()
