"""The fan-out bench's websocket load client (bench/peers/sockjs_node/clients.js, "raw")
against our real sync server: it must count every event, whatever the frame size (frames
split across socket reads, several events in one message), or the bench's "nothing lost"
would not mean anything."""
from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest

from stack.cluster import ORIGIN
from stack.processes import ROOT, ProcessGroup
from tests.syncserver.harness import new_topic, sync_stack, token, wait_delivered

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")]

CLIENTS_JS = ROOT / "bench" / "peers" / "sockjs_node" / "clients.js"


async def _until(client, want: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        report = await asyncio.to_thread(client.ask_json, "report", 10)
        if report["received"] >= want or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.1)


def test_the_raw_load_client_counts_every_event_of_every_size(db_url):
    asyncio.run(asyncio.wait_for(_counts_every_event(db_url), 90))


async def _counts_every_event(db_url: str) -> None:
    topic = new_topic(db_url)
    group = ProcessGroup()
    async with sync_stack(db_url) as stack:
        url = stack.sockjs_url.replace("http://", "ws://") + "/websocket"
        options = {"url": url, "n": 3, "token": token([topic]), "topic": topic, "origin": ORIGIN, "since": 0,
                   "parseShare": 1, "client": "raw"}
        client = group.start("load-client", ["node", str(CLIENTS_JS), json.dumps(options)], cwd=CLIENTS_JS.parent,
                             interactive=True, keep=20)
        try:
            line = await asyncio.to_thread(client.expect, "connected", 30)
            assert line.split()[1:] == ["3", "0"], line
            sent_ms = time.time() * 1000
            last = None
            # Small events one by one, one transaction of three, and events larger than a
            # socket read (64 KiB-1 MiB frames arrive in pieces).
            for i in range(20):
                last = await stack.relay.commit(topic, [{"id": i, "data": {"text": f"b:{i}:{sent_ms}"}}])
            last = await stack.relay.commit(topic, [{"id": 100 + k, "data": {"text": f"b:{100 + k}:{sent_ms}"}}
                                                    for k in range(3)])
            for i, size in enumerate((70_000, 300_000, 2_000_000)):
                last = await stack.relay.commit(topic, [{"id": 200 + i, "data": {"text": f"b:{200 + i}:{sent_ms}",
                                                                                "pad": "x" * size}}])
            await wait_delivered(stack, last[-1].pos)
            report = await _until(client, 3 * 26)
            assert report["received"] == 3 * 26, report
            assert report["fragmented"] == 0 and report["failed"] == 0
            # parseShare 1: every event's latency was sampled, each from its own send time.
            assert len(report["lat"]) == 3 * 26 and all(x >= 0 for x in report["lat"])
        finally:
            group.stop_all(timeout=5)
