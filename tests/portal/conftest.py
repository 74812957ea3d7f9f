"""Shared portal fixtures: users alice/bob/carol (password "pw-<name>"), a checklist owned
by alice with bob as editor and carol as viewer, API clients, and outbox helpers."""
from __future__ import annotations

import psycopg
import pytest


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """PBKDF2 costs ~1 s per user on a busy CI machine; tests only need a correct hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(db, django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(username=username, password=f"pw-{username}", **extra)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def checklist(alice, bob, carol):
    """"Groceries", owned by alice; bob is an editor, carol a viewer; two items."""
    from portal.checklists.models import Checklist, Item, Membership

    c = Checklist.objects.create(title="Groceries", owner=alice)
    Membership.objects.create(checklist=c, user=alice, role=Membership.OWNER)
    Membership.objects.create(checklist=c, user=bob, role=Membership.EDITOR)
    Membership.objects.create(checklist=c, user=carol, role=Membership.VIEWER)
    Item.objects.create(checklist=c, text="Milk", position=0)
    Item.objects.create(checklist=c, text="Bread", position=1)
    return c


@pytest.fixture
def api_client():
    """An unauthenticated DRF client."""
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def token_for(db):
    """token_for(user) -> plaintext API token key."""
    from portal.apitokens.services import create_token

    def make(user, name: str = "test") -> str:
        return create_token(user, name)[1]

    return make


@pytest.fixture
def client_for(token_for):
    """client_for(user) -> a DRF APIClient authenticated with a fresh API token of user."""
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make


@pytest.fixture
def outbox(db):
    """Snapshot helper for outbox rows written in this test's connection.

    outbox.mark() remembers the highest id; outbox.since() returns the rows after it as
    tuples (topic, entity, op) in id order; outbox.rows_since() returns model instances.
    """
    from portal.outbox.models import OutboxEvent

    class Watch:
        last = 0

        def mark(self) -> None:
            self.last = OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

        def rows_since(self) -> list:
            return list(OutboxEvent.objects.filter(id__gt=self.last).order_by("id"))

        def since(self) -> list[tuple[str, str, str]]:
            return [(r.topic, r.entity, r.op) for r in self.rows_since()]

    w = Watch()
    w.mark()
    return w


class CommittedOutbox:
    """Reads the outbox over a separate connection: it sees only committed rows."""

    def __init__(self, url: str):
        self.url = url
        self.last = self.max_id()

    def max_id(self) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]

    def mark(self) -> None:
        self.last = self.max_id()

    def rows(self) -> list[dict]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(
                "SELECT topic, entity, entity_id, op, data, changed, version, actor, source, request_id"
                " FROM outbox WHERE id > %s ORDER BY id",
                (self.last,),
            )
            names = [d.name for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def since(self) -> list[tuple[str, str, str]]:
        return [(r["topic"], r["entity"], r["op"]) for r in self.rows()]


@pytest.fixture
def committed_outbox(db_url) -> CommittedOutbox:
    """Like `outbox`, but through another connection: proves rows are committed."""
    return CommittedOutbox(db_url)


@pytest.fixture(scope="session")
def rate_limit_dir(tmp_path_factory) -> str:
    """A directory for the rate-limit counters of this test process alone. The portal's
    default is one per checkout, which `make test`'s parallel processes would share, and
    clearing it for one test would reset the counters another process's test is filling."""
    return str(tmp_path_factory.mktemp("ratelimit"))


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings, rate_limit_dir):
    """Rate-limit counters (portal/throttling.py) live in a file cache that outlives a
    test; each test starts with none, in this process's own directory."""
    from django.core.cache import caches

    if "ratelimit" not in settings.CACHES:
        yield
        return
    settings.CACHES = {**settings.CACHES, "ratelimit": {**settings.CACHES["ratelimit"], "LOCATION": rate_limit_dir}}
    limits = caches["ratelimit"]
    limits.clear()
    yield
    limits.clear()
