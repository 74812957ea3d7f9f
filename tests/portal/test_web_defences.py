"""Web defences of the portal, over real requests: a Content-Security-Policy on every page
and nothing inline that it would block, Swagger UI and Redoc served from this origin,
no-store where a secret is shown, HTTPS settings, and the refusal of development secrets."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from stack.processes import ROOT

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def inline_code(html: str) -> list[str]:
    """Inline scripts, <style> elements, style attributes and on* handlers: what a CSP
    without 'unsafe-inline' blocks."""
    found = [m.group(0)[:80] for m in re.finditer(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", html)]
    found += [m.group(0)[:80] for m in re.finditer(r"<style\b[^>]*>", html)]
    found += [m.group(0)[:80] for m in re.finditer(r"<[^>]+\s(style|on[a-z]+)\s*=[^>]*>", html)]
    return found


@pytest.fixture
def pages(alice, checklist, make_user):
    """(client, path) of every kind of page, each as the user who can see it."""
    from django.contrib.auth.models import Permission

    root = make_user("root", is_staff=True, is_superuser=True)
    user, admin, anon = Client(), Client(), Client()
    user.force_login(alice)
    admin.force_login(root)
    user.post("/tokens/", {"name": "t"})  # the next /tokens/ shows the secret
    assert Permission.objects.exists()
    return [
        (anon, "/login/"), (user, "/"), (user, f"/checklists/{checklist.pk}/"), (user, "/tokens/"),
        (user, f"/checklists/{checklist.pk}/members/"), (admin, "/admin/"), (admin, "/admin/outbox/outboxevent/"),
        (admin, f"/admin/checklists/checklist/{checklist.pk}/change/"), (anon, "/api/docs/"), (anon, "/api/redoc/"),
        (user, "/api/checklists/"), (anon, "/no-such-page/"), (anon, "/checklists/1/?x=%00"),
    ]


def test_every_page_has_a_policy_without_inline_scripts(pages, settings):
    for client, path in pages:
        r = client.get(path, HTTP_ACCEPT="text/html")
        csp = directives(r)
        assert csp["script-src"] == ["'self'"], (path, csp["script-src"])
        assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
        assert "http://127.0.0.1:8001" in csp["connect-src"] and "ws://127.0.0.1:8001" in csp["connect-src"], path
        if path != "/api/redoc/":
            assert csp["style-src"] == ["'self'"], (path, csp["style-src"])
        html = r.content.decode()
        if r.status_code == 200 and "html" in r["Content-Type"] and path != "/api/checklists/":
            assert inline_code(html) == [], (path, inline_code(html))


def test_redoc_alone_allows_inline_styles_and_a_blob_worker_never_inline_scripts(client):
    csp = directives(client.get("/api/redoc/"))
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"] and csp["worker-src"] == ["blob:"]
    assert csp["script-src"] == ["'self'"]


def test_swagger_and_redoc_load_from_this_origin_only(client):
    for path in ("/api/docs/", "/api/redoc/"):
        html = client.get(path).content.decode()
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
        assert urls and all(u.startswith("/") for u in urls), (path, urls)
        assert "drf_spectacular_sidecar" in html or "/static/drf_spectacular_sidecar/" in html, path
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    assert "application/javascript" in script["Content-Type"]


def test_the_page_showing_a_new_token_is_never_cached(alice):
    c = Client()
    c.force_login(alice)
    c.post("/tokens/", {"name": "laptop"})
    shown = c.get("/tokens/")
    assert b"new-token-value" in shown.content
    assert "no-store" in shown["Cache-Control"]
    later = c.get("/tokens/")  # the secret is gone: nothing to protect, an ordinary page
    assert b"new-token-value" not in later.content


def test_development_secrets_fail_the_checks_with_debug_off(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "dev-insecure-portal-secret-change-me"
    settings.SYNC_TOKEN_SECRET = "dev-insecure-sync-secret"
    with pytest.raises(SystemCheckError, match="portal.E001.*\n.*\n.*portal.E002|portal.E001"):
        call_command("check")
    settings.SECRET_KEY = "x" * 31
    settings.SYNC_TOKEN_SECRET = "y" * 32
    with pytest.raises(SystemCheckError, match="PORTAL_SECRET_KEY is shorter than 32"):
        call_command("check")
    settings.SECRET_KEY = "k" * 50
    call_command("check")  # passes
    settings.DEBUG = True
    settings.SECRET_KEY = "dev-insecure-portal-secret-change-me"
    call_command("check")  # development: allowed


def _run(code: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "SYNC_"))}
    return subprocess.run([sys.executable, *code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def test_check_deploy_and_the_wsgi_entry_point_refuse_development_secrets():
    proc = _run(["manage.py", "check", "--deploy"], PORTAL_DEBUG="0")
    assert proc.returncode != 0 and "portal.E001" in proc.stderr and "portal.E002" in proc.stderr, proc.stderr[-500:]
    proc = _run(["-c", "import portal.wsgi"], PORTAL_DEBUG="0")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("portal: refusing to start: PORTAL_SECRET_KEY is the "
                                                          "development default"), proc.stderr[-500:]
    good = {"PORTAL_DEBUG": "0", "PORTAL_SECRET_KEY": "k" * 50, "SYNC_TOKEN_SECRET": "s" * 40}
    proc = _run(["-c", "import portal.wsgi"], **good)
    assert proc.returncode == 0, proc.stderr[-500:]


@pytest.mark.parametrize("env, secure", [({"PORTAL_DEBUG": "0"}, True), ({"PORTAL_DEBUG": "1"}, False),
                                         ({"PORTAL_DEBUG": "0", "PORTAL_HTTPS": "0"}, False),
                                         ({"PORTAL_DEBUG": "1", "PORTAL_HTTPS": "1"}, True)])
def test_https_settings_follow_portal_https(env, secure):
    code = ("from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.SECURE_PROXY_SSL_HEADER is not None)")
    proc = _run(["-c", "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'portal.settings'); "
                       "django.setup(); " + code], **env)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.split() == [str(secure)] * 5
