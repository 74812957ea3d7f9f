"""Browsers' commit -> page latency reports (syncserver/pagelatency.py) through a real sync
server: a report lands in /metrics; malformed ones are protocol errors, out-of-range
values and floods are dropped and counted, and the connection carries on."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from stack.sockjs_client import connect
from syncserver import pagelatency
from tests.syncserver.harness import ORIGIN, new_topic, sync_stack, token

pytestmark = pytest.mark.django_db(transaction=True)


async def scrape(base: str) -> dict[str, float]:
    """/metrics as {sample name{labels}: value} for the client latency families."""
    body = (await AsyncHTTPClient().fetch(f"{base}/metrics")).body.decode()
    out = {}
    for family in text_string_to_metric_families(body):
        if family.name.startswith("sync_client_latency"):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def delta(after: dict, before: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


COUNT, SUM = "sync_client_latency_seconds_count{}", "sync_client_latency_seconds_sum{}"


@pytest.mark.parametrize("transport", ["rawwebsocket", "xhr_streaming"])
async def test_a_browser_report_lands_in_metrics_and_hostile_ones_do_not(db_url, transport):
    topic = new_topic(db_url)
    async with sync_stack(db_url) as stack:
        c = await connect(transport, stack.sockjs_url, ORIGIN)
        try:
            before = await scrape(stack.base)
            # Only an authenticated client may report.
            await c.send({"type": "latency", "samples": [5]})
            assert (await c.recv_type("error"))["code"] == "unauthenticated"
            authed = await c.auth(token([topic]))
            assert authed["type"] == "authed" and abs(authed["server_time"] - (authed["expires_at"] - authed["expires_in"])) < 1.5

            await c.send({"type": "latency", "samples": [12.5, 40]})
            await c.send({"type": "ping", "id": 1})
            assert await c.recv() == {"type": "pong", "id": 1}  # messages are handled in order
            after = await scrape(stack.base)
            assert delta(after, before, COUNT) == 2
            assert delta(after, before, SUM) == pytest.approx(0.0525)
            assert delta(after, before, "sync_client_latency_seconds_bucket{le=0.025}") == 1

            # Malformed: a protocol error, and the connection stays usable.
            for bad in ({"type": "latency", "samples": "fast"}, {"type": "latency", "samples": [1] * 33},
                        {"type": "latency", "samples": [True]}):
                await c.send(bad)
                error = await c.recv_type("error")
                assert (error["code"], error["ref"]) == ("bad_message", "latency")
            await c.send('{"type":"latency","samples":[NaN, Infinity]}')
            assert (await c.recv_type("error"))["code"] == "bad_message"

            # Out of range: dropped and counted, never recorded, never answered.
            before = await scrape(stack.base)
            await c.send({"type": "latency", "samples": [-1, 60_001, 1e300]})
            # A flood: at most the connection's burst is recorded.
            for _ in range(10):
                await c.send({"type": "latency", "samples": [7] * 32})
            await c.send({"type": "ping", "id": 2})
            assert await c.recv() == {"type": "pong", "id": 2}
            after = await scrape(stack.base)
            recorded = delta(after, before, COUNT)
            assert pagelatency.BURST - 2 <= recorded <= pagelatency.BURST + 10  # the 2 above used some; it refills
            assert delta(after, before, SUM) == pytest.approx(recorded * 0.007)
            assert delta(after, before, "sync_client_latency_dropped_total{reason=out_of_range}") == 3
            assert delta(after, before, "sync_client_latency_dropped_total{reason=over_rate}") == 320 - recorded
            assert await c.quiet(0.2) == []
        finally:
            await c.close()
