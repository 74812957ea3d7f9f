"""Brute-force limits, hit exactly: up to the limit attempts are answered as usual, past
it they are refused with 429 and Retry-After, and after the cool-off the right credential
works again. (Logins: the right password after LIMIT-1 failures logs in; the LIMIT-th
failure locks, answered with the lockout page itself.) Web login and admin login (django-axes), API-token guessing, sync-token and
API-token creation (portal/throttling.py). Real requests against real PostgreSQL. The
login cool-offs are set short and waited for for real; the request-rate limits run on a
test clock (`clock`) with a long window, so a slow machine cannot stretch the requests
that should fill a window past its end, and nobody waits for the window to pass."""
from __future__ import annotations

import time

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

LIMIT = 5
COOLOFF = 2  # seconds: the login lockout (django-axes keeps its own time in the database)
WINDOW = 600  # seconds: the request-rate limits, on the test clock


@pytest.fixture(autouse=True)
def short_limits(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    from datetime import timedelta

    settings.AXES_COOLOFF_TIME = timedelta(seconds=COOLOFF)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        "sync_token": f"{LIMIT}/{WINDOW}s", "api_token_create": f"{LIMIT}/{WINDOW}s",
        "api_token_failure": f"{LIMIT}/{WINDOW}s"}}


class Clock:
    """The rate limits' time, moved only by the test. (Their cache entries still expire
    in real time, after WINDOW seconds: far beyond any test.)"""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    from portal.throttling import PortalRateThrottle

    fake = Clock(time.time())
    monkeypatch.setattr(PortalRateThrottle, "timer", staticmethod(fake))
    return fake


def login(client: Client, username: str, password: str, path: str = "/login/", addr: str = "127.0.0.1", **extra):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=addr, **extra)


def logged_in(response) -> bool:
    return response.status_code == 302 and "/login/" not in response["Location"]


def assert_refused(response, within: int = COOLOFF) -> int:
    assert response.status_code == 429, (response.status_code, response.content[:300])
    seconds = int(response["Retry-After"])
    assert 1 <= seconds <= within + 1
    return seconds


# --- web and admin login (django-axes) -------------------------------------------------


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_the_right_password_after_limit_minus_one_failures_logs_in(alice, path):
    alice.is_staff = True
    alice.save()
    client = Client()
    for _ in range(LIMIT - 1):
        assert login(client, "alice", "wrong", path).status_code == 200  # the form again, with its error
    assert logged_in(login(client, "alice", "pw-alice", path))


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_after_limit_failures_even_the_right_password_is_refused_until_the_cool_off(alice, path):
    alice.is_staff = True
    alice.save()
    client = Client()
    for i in range(LIMIT - 1):
        r = login(client, "alice", f"wrong-{i}", path)
        assert r.status_code == 200, f"failure {i + 1} of {LIMIT} should be answered as usual"
    assert_refused(login(client, "alice", "wrong-last", path))  # the LIMIT-th failure locks
    refused = login(client, "alice", "pw-alice", path)
    wait = assert_refused(refused)
    assert b"Too many failed login attempts" in refused.content
    assert b"<html" in refused.content  # a page, not a bare string
    time.sleep(wait + 0.2)
    assert logged_in(login(client, "alice", "pw-alice", path))


def test_two_hundred_guesses_do_not_end_in_a_login(alice):
    """The reported defect: 200 wrong passwords on /login/, then the right one logged in."""
    client = Client()
    answers = [login(client, "alice", f"guess-{i}").status_code for i in range(200)]
    assert answers[:LIMIT - 1] == [200] * (LIMIT - 1) and set(answers[LIMIT - 1:]) == {429}
    assert login(client, "alice", "pw-alice").status_code == 429


def test_guesses_from_many_addresses_lock_the_account(alice):
    """Lockout by username: spreading guesses over addresses does not help."""
    for i in range(LIMIT - 1):
        assert login(Client(), "alice", "wrong", addr=f"198.51.100.{i + 1}").status_code == 200
    assert_refused(login(Client(), "alice", "wrong", addr="198.51.100.200"))
    assert_refused(login(Client(), "alice", "pw-alice", addr="203.0.113.9"))


def test_guesses_at_many_accounts_lock_the_address(alice, bob):
    """Lockout by client address: spraying one password over usernames does not help."""
    for i in range(LIMIT - 1):
        assert login(Client(), f"user{i}", "Summer2026!", addr="198.51.100.7").status_code == 200
    assert_refused(login(Client(), "userlast", "Summer2026!", addr="198.51.100.7"))
    assert_refused(login(Client(), "bob", "pw-bob", addr="198.51.100.7"))
    assert logged_in(login(Client(), "bob", "pw-bob", addr="198.51.100.8"))


def test_a_forged_x_forwarded_for_does_not_escape_the_address_lockout(alice, bob, settings):
    settings.PORTAL_TRUSTED_PROXIES = ()
    for i in range(LIMIT):
        login(Client(), f"user{i}", "x", addr="198.51.100.7", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
    assert_refused(login(Client(), "bob", "pw-bob", addr="198.51.100.7", HTTP_X_FORWARDED_FOR="10.9.9.99"))


def test_behind_a_trusted_proxy_clients_are_told_apart(alice, bob, settings):
    from runtime.peers import parse_trusted

    settings.PORTAL_TRUSTED_PROXIES = parse_trusted("192.0.2.10")
    for i in range(LIMIT):
        login(Client(), f"user{i}", "x", addr="192.0.2.10", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert_refused(login(Client(), "bob", "pw-bob", addr="192.0.2.10", HTTP_X_FORWARDED_FOR="198.51.100.7"))
    # Another client behind the same proxy is not locked out with the first.
    assert logged_in(login(Client(), "bob", "pw-bob", addr="192.0.2.10", HTTP_X_FORWARDED_FOR="198.51.100.8"))


# --- API tokens: guessing ------------------------------------------------------------


def api_get(token: str, addr: str = "127.0.0.1"):
    return Client().get("/api/checklists/", HTTP_AUTHORIZATION=f"Token {token}", REMOTE_ADDR=addr)


def test_token_guessing_is_refused_after_the_limit_even_with_a_valid_token(alice, token_for, clock):
    good = token_for(alice)
    for i in range(LIMIT):
        assert api_get(f"cl_guess{i}").status_code == 401, f"guess {i + 1} of {LIMIT} is an ordinary 401"
    refused = api_get(good)
    wait = assert_refused(refused, WINDOW)
    assert wait >= WINDOW  # the window started with the first guess, no time has passed
    assert "Too many failed token attempts" in refused.json()["detail"]
    assert api_get(good, addr="198.51.100.1").status_code == 200  # other addresses are not affected
    clock.advance(wait - 1)
    assert_refused(api_get(good), WINDOW)  # a second early: still refused
    clock.advance(1.01)
    assert api_get(good).status_code == 200


def test_valid_tokens_do_not_count_against_the_limit(alice, token_for):
    good = token_for(alice)
    for _ in range(3 * LIMIT):
        assert api_get(good).status_code == 200


def test_malformed_token_headers_count_as_failures(alice, token_for):
    good = token_for(alice)
    for bad in ["Token", "Token a b", "Token \xe9", "Bearer", "Token x"]:
        Client().get("/api/checklists/", HTTP_AUTHORIZATION=bad)
    assert_refused(api_get(good), WINDOW)


# --- sync tokens and API-token creation -------------------------------------------------


def test_sync_tokens_are_limited_per_user(alice, bob, checklist, client_for, clock):
    client = client_for(alice)
    for i in range(LIMIT):
        assert client.post("/api/sync/token/", {}, format="json").status_code == 200, i
        clock.advance(1)
    wait = assert_refused(client.post("/api/sync/token/", {}, format="json"), WINDOW)
    assert wait == WINDOW - LIMIT  # until the first of the window leaves it
    assert client_for(bob).post("/api/sync/token/", {}, format="json").status_code == 200
    clock.advance(wait - 0.5)
    assert_refused(client.post("/api/sync/token/", {}, format="json"), WINDOW)
    clock.advance(0.51)
    assert client.post("/api/sync/token/", {}, format="json").status_code == 200


def test_api_token_creation_is_limited_per_user(alice, bob, clock):
    from portal.apitokens.models import ApiToken

    client = Client()
    client.force_login(alice)
    for i in range(LIMIT):
        assert client.post("/tokens/", {"name": f"t{i}"}).status_code == 302, i
    refused = client.post("/tokens/", {"name": "one too many"})
    wait = assert_refused(refused, WINDOW)
    assert b"too many API tokens" in refused.content
    assert client.post("/tokens/", {"name": "x"}, HTTP_ACCEPT="application/json").status_code == 429
    assert ApiToken.objects.filter(user=alice).count() == LIMIT
    other = Client()
    other.force_login(bob)
    assert other.post("/tokens/", {"name": "bob's"}).status_code == 302
    clock.advance(wait + 0.01)
    assert client.post("/tokens/", {"name": "later"}).status_code == 302


def test_the_counters_of_one_database_do_not_count_for_another(alice, client_for, monkeypatch):
    """User ids are unique within one database only: a portal on another database (staging
    beside production on one host, or a parallel test run) has its own user 1."""
    from django.db import connection

    client = client_for(alice)
    for _ in range(LIMIT):
        client.post("/api/sync/token/", {}, format="json")
    assert_refused(client.post("/api/sync/token/", {}, format="json"), WINDOW)
    monkeypatch.setitem(connection.settings_dict, "NAME", connection.settings_dict["NAME"] + "_elsewhere")
    assert client.post("/api/sync/token/", {}, format="json").status_code == 200
