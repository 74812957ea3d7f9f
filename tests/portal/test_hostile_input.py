"""Values PostgreSQL refuses (NUL in text, integers outside bigint, bytes that are not
UTF-8, lone surrogates) in every path segment, query parameter, form field, JSON field
and header of the REST API, the web UI and the admin: a clear 4xx, never a 500.

Walks every URL of the three with hostile values against real PostgreSQL. The test
client is told not to re-raise view exceptions, so a crash shows as the 500 a browser
would get.
"""
from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory

from portal.checklists.models import Checklist, Membership

pytestmark = pytest.mark.django_db

BIG = str(2**63)  # one past bigint
# Text values: NUL alone, inside, at the end; out-of-range and odd numbers; SQL-ish.
HOSTILE_TEXT = ["\x00", "a\x00b", "bob\x00", BIG, "-" + BIG, "9" * 40, "1e400", "NaN", "-1", "0",
                "' OR 1=1 --", "%", "\\", "x" * 3000, ""]
# Path segments where the route wants an id: anything not a valid bigint.
HOSTILE_IDS = [BIG, "9" * 40, "18446744073709551616", "00000000000000000000000001"]


def _client(user=None, **kwargs) -> Client:
    c = Client(raise_request_exception=False, **kwargs)
    if user is not None:
        c.force_login(user)
    return c


class Walk:
    """Collects every bad answer of a walk, so one run reports them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, response, what: str) -> None:
        if response.status_code >= 500:
            self.problems.append(f"{what} -> {response.status_code}")
        elif 400 <= response.status_code < 500 and response.status_code not in (404, 405) \
                and not response.content.strip():
            self.problems.append(f"{what} -> {response.status_code} without a message")

    def assert_clean(self) -> None:
        assert not self.problems, f"{len(self.problems)} bad answers:\n" + "\n".join(self.problems[:400])


@pytest.fixture
def check():
    return Walk()


@pytest.fixture
def api(token_for):
    """api(user) -> an API-token client that answers 500 instead of raising."""
    from rest_framework.test import APIClient

    def make(user):
        c = APIClient(raise_request_exception=False)
        c.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return c

    return make


@pytest.fixture
def superuser(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


# --- the defects as reported -----------------------------------------------------------


def test_nul_in_a_member_username_is_a_400_not_a_500(alice, checklist, api):
    r = api(alice).delete(f"/api/checklists/{checklist.pk}/members/a%00b/")
    assert r.status_code == 400, r.content
    assert "NUL" in r.json()["detail"]


def test_nul_in_an_admin_changelist_filter_is_a_400_not_a_500(superuser):
    r = _client(superuser).get("/admin/outbox/outboxevent/?topic=%00")
    assert r.status_code == 400, r.content[:300]
    assert b"NUL" in r.content


def test_admin_search_by_transaction_id_with_a_non_number_is_not_a_500(superuser, check):
    # search_fields has "=txid", an xid8 column: 'abc' is refused by PostgreSQL.
    for q in ("abc", "-1", BIG, "1 2"):
        check(_client(superuser).get("/admin/outbox/outboxevent/", {"q": q}), f"q={q!r}")
    check.assert_clean()


# --- REST API --------------------------------------------------------------------------


def _api_paths() -> list[str]:
    return [
        "/api/checklists/", "/api/checklists/{c}/", "/api/checklists/{c}/items/", "/api/checklists/{c}/members/",
        "/api/checklists/{c}/members/{u}/", "/api/items/{i}/", "/api/sync/token/",
    ]


def test_api_paths_with_hostile_segments(alice, checklist, api, check):
    client = api(alice)
    item = checklist.items.first()
    for template in _api_paths():
        for bad in HOSTILE_TEXT + HOSTILE_IDS:
            seg = quote(bad, safe="") or "x"
            for fill in ("c", "i", "u"):
                if "{" + fill + "}" not in template:
                    continue
                path = template.format(**{"c": checklist.pk, "i": item.pk, "u": "bob", fill: seg})
                for method in ("get", "patch", "put", "delete", "post"):
                    r = getattr(client, method)(path, {"role": "viewer"}, format="json")
                    check(r, f"{method.upper()} {path}")
    check.assert_clean()


def test_api_query_parameters_with_hostile_values(alice, checklist, api, check):
    client = api(alice)
    item = checklist.items.first()
    for path in ("/api/checklists/", f"/api/checklists/{checklist.pk}/", f"/api/checklists/{checklist.pk}/items/",
                 f"/api/checklists/{checklist.pk}/members/", f"/api/items/{item.pk}/", "/api/schema/"):
        for name in ("page", "page_size", "format", "lang", "version", "q", "\x00"):
            for bad in HOSTILE_TEXT:
                check(client.get(path + "?" + urlencode({name: bad})), f"GET {path}?{name}={bad[:20]!r}")
    # Bytes that are not UTF-8 in the query string and the path.
    check(client.get("/api/checklists/?page=%ff%fe"), "GET ?page=%ff%fe")
    check(client.get(f"/api/checklists/{checklist.pk}/members/%ff%fe/"), "members/%ff%fe/")
    check.assert_clean()


@pytest.mark.parametrize("body", [
    '{"title": "a\\u0000b"}', "[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, '{"\\u0000": 1}', '{"title": "\\ud800"}', '{"\\ud800": 1}', '{"title": 1e400}',
], ids=lambda body: body[:20])
def test_api_json_bodies_with_hostile_values(alice, checklist, api, body, check):
    client = api(alice)
    item = checklist.items.first()
    for method, path in [("post", "/api/checklists/"), ("patch", f"/api/checklists/{checklist.pk}/"),
                         ("post", f"/api/checklists/{checklist.pk}/items/"), ("patch", f"/api/items/{item.pk}/"),
                         ("post", f"/api/checklists/{checklist.pk}/members/"),
                         ("patch", f"/api/checklists/{checklist.pk}/members/bob/"), ("post", "/api/sync/token/")]:
        r = getattr(client, method)(path, body.encode(), content_type="application/json")
        check(r, f"{method.upper()} {path} {body[:40]}")
        assert r.status_code >= 400, (path, body, r.content)
    check.assert_clean()


@pytest.mark.parametrize("body", [{"checklist": 2**63}, {"checklist": -(2**63) - 1}, {"position": 2**31},
                                  {"topics": ["checklist:" + "9" * 19]}, {"topics": ["checklist:\x00"]}])
def test_api_numbers_outside_postgresql_ranges(alice, checklist, api, body, check):
    client = api(alice)
    item = checklist.items.first()
    path = "/api/sync/token/" if "topics" in body else f"/api/items/{item.pk}/"
    r = client.post(path, body, format="json") if "topics" in body else client.patch(path, body, format="json")
    check(r, f"{path} {body}")
    assert r.status_code in (400, 403), r.content
    check.assert_clean()


def test_api_headers_with_hostile_values(alice, checklist, token_for, check):
    client = _client()
    key = token_for(alice)
    for name, value in [("HTTP_AUTHORIZATION", "Token \x00"), ("HTTP_AUTHORIZATION", f"Token {key}\x00"),
                        ("HTTP_IF_MATCH", '"\x00"'), ("HTTP_USER_AGENT", "x\x00y"), ("HTTP_X_REQUEST_ID", "\x00")]:
        headers = {"HTTP_AUTHORIZATION": f"Token {key}", name: value}
        check(client.patch(f"/api/checklists/{checklist.pk}/", json.dumps({"title": "T"}),
                             content_type="application/json", **headers), f"{name}={value!r}")
    check.assert_clean()


# --- web UI ----------------------------------------------------------------------------


def _web_paths(checklist: Checklist) -> list[tuple[str, str, dict]]:
    """(method, path template with {c} {i} {m} {t}, form data) of every web URL."""
    return [
        ("get", "/", {}), ("post", "/", {"title": "T"}), ("get", "/login/", {}), ("get", "/tokens/", {}),
        ("post", "/tokens/", {"name": "n"}), ("post", "/tokens/{t}/revoke/", {}),
        ("get", "/checklists/{c}/", {}), ("post", "/checklists/{c}/rename/", {"title": "T"}),
        ("post", "/checklists/{c}/items/", {"text": "x"}), ("post", "/checklists/{c}/items/{i}/edit/", {"text": "x"}),
        ("post", "/checklists/{c}/items/{i}/toggle/", {"done": "1"}),
        ("post", "/checklists/{c}/items/{i}/move/", {"direction": "up", "index": "1"}),
        ("get", "/checklists/{c}/members/", {}), ("post", "/checklists/{c}/members/add/", {"username": "dave", "role": "viewer"}),
        ("post", "/checklists/{c}/members/{m}/role/", {"role": "viewer"}),
        ("post", "/checklists/{c}/members/{m}/remove/", {}), ("post", "/checklists/{c}/items/{i}/delete/", {}),
        ("post", "/checklists/{c}/delete/", {}),
    ]


def test_web_ui_with_hostile_paths_queries_and_forms(alice, checklist, make_user, check):
    from portal.apitokens.services import create_token

    make_user("dave")
    token, _ = create_token(alice, "t")
    ids = {"c": checklist.pk, "i": checklist.items.first().pk,
           "m": Membership.objects.get(checklist=checklist, user__username="bob").pk, "t": token.pk}
    client = _client(alice)
    for method, template, data in _web_paths(checklist):
        for fill in "cimt":
            if "{" + fill + "}" not in template:
                continue
            for bad in HOSTILE_IDS + ["a%00b", "%00"]:
                path = template.format(**{**ids, fill: bad})
                check(getattr(client, method)(path, data), f"{method.upper()} {path}")
        path = template.format(**ids)
        for bad in HOSTILE_TEXT[:6]:
            check(client.get(path + "?" + urlencode({"next": bad, "page": bad, "transports": bad})),
                   f"GET {path}?...={bad[:10]!r}")
            if method == "post" and data and "delete" not in template and "remove" not in template:
                for field in data:
                    form = {**data, field: bad}
                    check(client.post(path, form), f"POST {path} {field}={bad[:10]!r}")
                    check(client.post(path, form, HTTP_ACCEPT="application/json"), f"POST(json) {path} {field}")
    check.assert_clean()


def test_login_with_hostile_values(alice, check):
    for username in HOSTILE_TEXT[:4] + ["alice\x00"]:
        for password in ("\x00", "pw-alice\x00", "x"):
            for path in ("/login/", "/admin/login/"):
                r = _client().post(path, {"username": username, "password": password, "next": "/\x00"})
                check(r, f"POST {path} {username!r}/{password!r}")
    for path in ("/login/", "/admin/login/"):
        r = _client().post(path, {"username": "u" * 5000, "password": "x"}, HTTP_USER_AGENT="a" * 5000,
                           HTTP_ACCEPT="b" * 5000)
        check(r, f"{path}: a 5000-character username, user agent and Accept")
    check.assert_clean()


# --- admin -----------------------------------------------------------------------------


def _admin_filter_params(model_admin) -> list[str]:
    """Query parameter names the changelist accepts: each list filter's, search, ordering, page."""
    names = ["q", "o", "p", "e", "all", "_to_field", "_popup"]
    for spec in model_admin.list_filter:
        field = spec if isinstance(spec, str) else spec[0]
        names += [field, f"{field}__exact", f"{field}__id__exact", f"{field}__isnull", f"{field}__isempty",
                  f"{field}__gte", f"{field}__lt"]
    if model_admin.date_hierarchy:
        names += [f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")]
    return names


# One value of each kind a filter, search or page parameter can choke on (NUL is refused up front,
# whatever the parameter, by portal/inputguard.py: once per changelist is enough for it):
# a number beyond bigint, one beyond float, text far beyond any column, SQL, empty.
ADMIN_KINDS = ["-" + BIG, "1e400", "x" * 3000, "' OR 1=1 --", ""]


def test_admin_changelists_with_hostile_filters_search_and_pages(superuser, checklist, check):
    client = _client(superuser)
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url
        check(client.get(url + "?" + urlencode({"q": "a\x00b"})), f"{url}?q=NUL")
        for name in _admin_filter_params(model_admin):
            for bad in ADMIN_KINDS:
                check(client.get(url + "?" + urlencode({name: bad})), f"{url}?{name}={bad[:20]!r}")
    check.assert_clean()


def test_admin_object_pages_with_hostile_ids(superuser, checklist, check):
    client = _client(superuser)
    for model in admin.site._registry:
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for bad in HOSTILE_IDS + ["a%00b", "%00", "-1", "1e400"]:
            for suffix in ("change/", "delete/", "history/", ""):
                check(client.get(f"{base}{bad}/{suffix}"), f"{base}{bad}/{suffix}")
            check(client.post(f"{base}{bad}/change/", {"text": "x"}), f"POST {base}{bad}/change/")
    check.assert_clean()


def test_admin_autocomplete_and_changelist_post_with_hostile_values(superuser, checklist, check):
    client = _client(superuser)
    for bad in HOSTILE_TEXT:
        params = {"term": bad, "app_label": "checklists", "model_name": "item", "field_name": "checklist"}
        check(client.get("/admin/autocomplete/?" + urlencode(params)), f"autocomplete term={bad[:20]!r}")
        for key in ("app_label", "model_name", "field_name"):
            check(client.get("/admin/autocomplete/?" + urlencode({**params, "term": "a", key: bad})),
                   f"autocomplete {key}={bad[:20]!r}")
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        request = RequestFactory().get(url)
        request.user = superuser
        for action in model_admin.get_actions(request):
            for bad in HOSTILE_TEXT:
                check(client.post(url, {"action": action, "_selected_action": bad}),
                      f"{url} action {action} selecting {bad[:20]!r}")
    check.assert_clean()
