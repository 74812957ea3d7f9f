"""Several sync servers behind HAProxy (stack/balancer.py, Cluster(balancer=True)): every
transport works through the balancer, a client whose server dies (kill -9) or drains
(SIGTERM) resumes on another one with `recovered` from the outbox, not `resync`."""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from stack.balancer import Backend, haproxy_config
from stack.cluster import Cluster
from stack.sockjs_client import connect
from tests.syncserver.harness import ORIGIN, SECRET, django_call, token, wait_sequenced

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(shutil.which(HAPROXY) is None, reason="apt-get install haproxy")


@needs_haproxy
def test_the_generated_configuration_is_valid_haproxy(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(18001, [Backend(f"s{i}", "127.0.0.1", 19000 + i) for i in range(3)]))
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sessions_hash_on_the_server_id_segment_and_websockets_are_balanced():
    cfg = haproxy_config(8001, [Backend("a", "127.0.0.1", 1), Backend("b", "127.0.0.1", 2)])
    assert "bind 127.0.0.1:8001" in cfg  # never every interface unless asked
    # /sync/<server>/<session>/<transport>: field 3 of the path split on "/" is <server>.
    assert "balance hash path,field(3,/)" in cfg and "hash-type consistent" in cfg
    assert "use_backend sync_by_session if sockjs_session !websocket" in cfg
    assert "balance leastconn" in cfg and "option httpchk GET /healthz" in cfg
    assert "server a 127.0.0.1:1 track sync_balanced/a" in cfg
    deeper = haproxy_config(8001, [Backend("a", "127.0.0.1", 1)], prefix="/api/sync")
    assert "path,field(4,/)" in deeper
    with pytest.raises(ValueError):
        haproxy_config(8001, [])


async def _connections(http: AsyncHTTPClient, cluster: Cluster) -> dict[str, int]:
    """Open SockJS sessions per live sync server, as each one's /healthz counts them."""
    counts = {}
    for name, proc in cluster.syncs.items():
        if not proc.alive():
            continue
        try:
            body = (await http.fetch(f"http://127.0.0.1:{cluster.sync_ports[name]}/healthz")).body
        except HTTPClientError as exc:  # 404 while draining still has the body
            body = exc.response.body if exc.response is not None else b"{}"
        except OSError:  # stopped listening (at the end of a drain)
            continue
        counts[name] = json.loads(body).get("connections", 0)
    return counts


async def _routed_everywhere(http: AsyncHTTPClient, cluster: Cluster, but: str, timeout: float = 15) -> None:
    """Until every sync server but `but` has routed everything committed so far (else a
    lagging server would answer a resume with `subscribed` and send the rest live: nothing
    lost, but not the `recovered` this test is about)."""
    top = await asyncio.to_thread(wait_sequenced, cluster.database_url)
    deadline = time.monotonic() + timeout
    for name, proc in cluster.syncs.items():
        if name == but or not proc.alive():
            continue
        while True:
            body = (await http.fetch(f"http://127.0.0.1:{cluster.sync_ports[name]}/healthz")).body
            if json.loads(body)["broker"]["delivered_pos"] >= top:
                break
            assert time.monotonic() < deadline, f"{name} did not route pos {top}"
            await asyncio.sleep(0.05)


async def _events_until(client, count: int, timeout: float = 15) -> tuple[list[str], list[dict]]:
    """Message types and events received until `count` events have arrived."""
    kinds, events = [], []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        msg = await client.recv(max(0.1, deadline - time.monotonic()))
        kinds.append(msg["type"])
        assert msg["type"] != "resync", f"{client.transport}: {msg}"
        events += msg.get("events", [])
    return kinds, events


@pytest.fixture
def balanced(db_url):
    if shutil.which(HAPROXY) is None:
        pytest.skip("apt-get install haproxy")
    cluster = Cluster(db_url, sync_servers=3, balancer=True, origin=ORIGIN, token_secret=SECRET,
                      relay_env={"OUTBOX_RELAY_HEARTBEAT_INTERVAL": "0.3", "OUTBOX_RELAY_POLL_INTERVAL": "0.5"})
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "drain"])
def test_a_client_resumes_on_another_server_with_recovered(balanced, fault):
    from django.contrib.auth.models import User
    from django.db import transaction

    from portal.checklists.models import Checklist, Item, Membership, checklist_topic

    cluster = balanced

    async def scenario():
        http = AsyncHTTPClient(force_instance=True)
        user = await django_call(lambda: User.objects.create_user("alice", password="x"))

        def new_list():
            with transaction.atomic():
                checklist = Checklist.objects.create(title="Balanced", owner=user)
                Membership.objects.create(checklist=checklist, user=user, role=Membership.OWNER)
            return checklist
        checklist = await django_call(new_list)
        topic = checklist_topic(checklist.pk)
        # else the membership's start is unknown yet: resync
        await asyncio.to_thread(wait_sequenced, cluster.database_url)
        clients = {}
        for transport in ("websocket", "xhr_streaming", "xhr"):
            before = await _connections(http, cluster)
            c = await connect(transport, cluster.sockjs_url, ORIGIN)
            await c.auth(token([topic], user_id=user.pk))
            await c.subscribe(topic, 0)
            while (await c.recv())["type"] != "subscribed":
                pass  # the list's creation, recovered
            after = await _connections(http, cluster)
            on = [name for name in after if after[name] > before.get(name, 0)]
            assert len(on) == 1, (before, after)
            clients[transport] = (c, on[0])
        await django_call(lambda: Item.objects.create(checklist=checklist, text="before", position=0))
        last = {}
        for transport, (c, _server) in clients.items():
            _kinds, events = await _events_until(c, 1)
            last[transport] = events[-1]["tpos"]

        victim = clients["websocket"][1]
        cluster.kill(victim, fault)
        if fault == signal.SIGTERM:
            # Draining: /healthz fails at once (so HAProxy takes it out), sessions stay open a while.
            deadline = time.monotonic() + 2
            while True:
                try:
                    await http.fetch(f"http://127.0.0.1:{cluster.sync_ports[victim]}/healthz")
                except HTTPClientError as exc:
                    assert exc.code == 404
                    break
                except ConnectionError:
                    break
                assert time.monotonic() < deadline, "a draining server kept answering 200 on /healthz"
                await asyncio.sleep(0.05)
        # Writes while its clients are cut off: they must come back as `recovered`.
        await django_call(lambda: [Item.objects.create(checklist=checklist, text=f"during {i}", position=i + 1)
                              for i in range(3)])
        await _routed_everywhere(http, cluster, but=victim)
        moved = [t for t, (_c, server) in clients.items() if server == victim]
        for transport in moved:
            c = clients[transport][0]
            if fault == signal.SIGTERM:
                # The server closes each session (SockJS close code 3000) after the drain.
                await asyncio.wait_for(c.closed.wait(), 15)
                assert c.close_frame == [3000, "Server shutting down"], transport
            c.abort()
            again = await connect(transport, cluster.sockjs_url, ORIGIN, timeout=15)
            await again.auth(token([topic], user_id=user.pk))
            await again.subscribe(topic, last[transport])
            kinds, events = await _events_until(again, 3)
            assert kinds[0] == "recovered", kinds
            assert [e["data"]["text"] for e in events] == ["during 0", "during 1", "during 2"]
            assert [e["tpos"] for e in events] == list(range(last[transport] + 1, last[transport] + 4))
            now = await _connections(http, cluster)
            assert victim not in now or fault == signal.SIGTERM
            await again.close()
        for transport, (c, server) in clients.items():
            if server != victim:
                _kinds, events = await _events_until(c, 3)  # the others never noticed
                assert [e["data"]["text"] for e in events] == ["during 0", "during 1", "during 2"]
                await c.close()
        http.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))
    assert "Traceback" not in cluster.outputs()
