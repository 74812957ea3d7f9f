"""Swagger UI and Redoc render in a real browser under the Content-Security-Policy, from
this origin only (drf-spectacular-sidecar). The one thing the policy blocks is Redoc's
footer logo, which its bundle hard-codes from its CDN: nothing is fetched from there."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")
@pytest.mark.parametrize("path, rendered", [("/api/docs/", ".swagger-ui .info .title"),
                                            ("/api/redoc/", "h1")])
def test_api_docs_render_under_the_policy_from_this_origin(live_server, path, rendered):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            page = browser.new_page()
            hosts, violations = set(), []
            page.on("requestfinished", lambda r: hosts.add(urlsplit(r.url).netloc) if r.url.startswith("http") else None)
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text
                    and "cdn.redoc.ly/redoc/logo-mini.svg" not in m.text else None)
            page.goto(live_server.url + path)
            page.wait_for_selector(rendered, timeout=20_000)
            assert "Cloud Checklist API" in page.inner_text(rendered)
            assert hosts == {urlsplit(live_server.url).netloc}, hosts
            assert violations == [], violations
        finally:
            browser.close()
