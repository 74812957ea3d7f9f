"""What users see: a real page in chromium reports commit -> applied-on-page latency, and
the sync server's /metrics shows it (sync_client_latency_seconds)."""
from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance import pages

pytestmark = pytest.mark.browser


def client_latency_count(sync_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{sync_port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(body):
        if family.name == "sync_client_latency_seconds":
            return sum(s.value for s in family.samples if s.name == "sync_client_latency_seconds_count")
    return 0.0


@pytest.mark.parametrize("transport", ["websocket", "xhr-streaming"])
def test_a_page_reports_what_its_user_sees_to_metrics(transport, browsers, make_checklist, api, db, base_url, stack):
    cid = make_checklist(["First"])
    bob = browsers.page_for("bob")
    bob.goto(f"{base_url}/checklists/{cid}/?transports={transport}&latency_sample_ms=0")
    pages.wait_status(bob, "live")
    pages.wait_subscribed(bob)  # only live events are sampled
    before = client_latency_count(stack.ports.sync)
    for i in range(3):
        api.add_item(cid, f"Seen live {i}")
        pages.wait_all(db.items(cid), bob=bob)
    sent = bob.evaluate("() => window.__sync.flatMap(s => s.sent).filter(m => m.type === 'latency')"
                        ".flatMap(m => m.samples)")
    deadline = time.monotonic() + 10
    while client_latency_count(stack.ports.sync) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # the page sends its batch within a second
        sent = bob.evaluate("() => window.__sync.flatMap(s => s.sent).filter(m => m.type === 'latency')"
                            ".flatMap(m => m.samples)")
    assert client_latency_count(stack.ports.sync) >= before + 3, sent
    assert len(sent) >= 3 and all(0 <= ms < 10_000 for ms in sent), sent
