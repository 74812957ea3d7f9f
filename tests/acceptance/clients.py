"""The other writers of the scenarios, outside the browser: a third-party REST client
(token auth), a raw psycopg connection, and reading the database state to compare with."""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import requests

from stack.processes import ROOT


class ApiClient:
    """A program using the REST API with `Authorization: Token <key>`."""

    def __init__(self, base_url: str, key: str):
        self.base = base_url.rstrip("/")
        self.key = key
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {key}"

    def clone(self) -> "ApiClient":
        """Another client with the same token, for another thread (a Session is not thread-safe)."""
        return ApiClient(self.base, self.key)

    def _call(self, method: str, path: str, expect: int, **kwargs) -> dict | None:
        resp = self.http.request(method, f"{self.base}/api{path}", timeout=15, **kwargs)
        if resp.status_code != expect:
            raise AssertionError(f"{method} /api{path}: expected {expect}, got {resp.status_code}: {resp.text[:300]}")
        return resp.json() if resp.content else None

    def create_checklist(self, title: str) -> int:
        return self._call("POST", "/checklists/", 201, json={"title": title})["id"]

    def share(self, checklist_id: int, username: str, role: str = "editor") -> None:
        self._call("POST", f"/checklists/{checklist_id}/members/", 201, json={"username": username, "role": role})

    def remove_member(self, checklist_id: int, username: str) -> None:
        self._call("DELETE", f"/checklists/{checklist_id}/members/{username}/", 204)

    def add_item(self, checklist_id: int, text: str, **fields) -> dict:
        return self._call("POST", f"/checklists/{checklist_id}/items/", 201, json={"text": text, **fields})

    def patch_item(self, item_id: int, **fields) -> dict:
        return self._call("PATCH", f"/items/{item_id}/", 200, json=fields)

    def delete_item(self, item_id: int) -> None:
        self._call("DELETE", f"/items/{item_id}/", 204)


def create_api_token(database_url: str, username: str) -> str:
    """A new API token for username, made by the portal's own service in a subprocess
    (the portal's database is not this test process's Django database)."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from portal.apitokens.services import create_token\n"
        f"user = get_user_model().objects.get(username={username!r})\n"
        "print('KEY', create_token(user, 'acceptance tests')[1])\n"
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        env={**os.environ, "DATABASE_URL": database_url}, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    keys = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("KEY ")]
    if not keys:
        raise RuntimeError(f"no token printed: {out!r}")
    return keys[0]


def db_items(database_url: str, checklist_id: int) -> list[tuple[int, str, bool, int]]:
    """The checklist's items as (id, text, done, version), in the page's display order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, text, done, version FROM checklists_item WHERE checklist_id = %s ORDER BY position, id",
            (checklist_id,),
        ).fetchall()
    return [tuple(row) for row in rows]


def item_id(database_url: str, checklist_id: int, text: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT id FROM checklists_item WHERE checklist_id = %s AND text = %s", (checklist_id, text),
        ).fetchone()
    assert row, f"no item {text!r} in checklist {checklist_id}"
    return row[0]


def raw_sql(database_url: str, sql: str, params: tuple = ()) -> int:
    """Run one statement on a separate connection and commit (source 'sql'); rows affected."""
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(sql, params)
        conn.commit()
        return cur.rowcount
