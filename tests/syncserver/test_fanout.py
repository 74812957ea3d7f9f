"""Fan-out fast path: prebuilt WebSocket frames (syncserver.wsframe) on real sockets and a
real Tornado WebSocket, and the hub's shared catch-up reads."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
import tornado.websocket
from tornado.iostream import IOStream

from syncserver import wsframe
from syncserver.hub import Prepared
from tests.syncserver.test_units import FakeCatchUp, Sink, ev, make_hub


# -- frames ------------------------------------------------------------------------------

class _Recorder:
    """Stands in for the IOStream under Tornado's own frame writer."""

    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_is_byte_identical_to_tornados_server_frame(size):
    proto = tornado.websocket.WebSocketProtocol13(
        None, False, tornado.websocket._WebSocketParams(compression_options=None))
    proto.stream = _Recorder()
    payload = ("é" * size).encode()[:size]
    proto._write_frame(True, 0x1, payload)
    assert wsframe.text_frame(payload) == proto.stream.data


def test_prepared_frames_carry_the_text_for_each_websocket_transport():
    m = Prepared('{"type":"events","topic":"t","events":[{"x":"é"}]}')
    assert m.raw_frame == wsframe.text_frame(m.text.encode())
    assert m.sockjs_frame == wsframe.text_frame(b"a[" + json.dumps(m.text).encode() + b"]")
    assert m.raw_frame is m.raw_frame  # built once, shared by every connection


def _read_frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        n = data[1] & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[2:10], "big"), 10
        assert data[0] == 0x81 and not data[1] & 0x80
        out.append(data[head:head + n])
        data = data[head + n:]
    return out


async def test_write_frame_keeps_order_through_a_full_socket_buffer_and_drops_on_close():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = IOStream(a)
    payloads = [(f"{i}:" + "x" * (i * 97 % 3000)).encode() for i in range(300)]
    for p in payloads:  # the kernel buffer fills: the rest is queued in IOStream, in order
        assert wsframe.write_frame(stream, wsframe.text_frame(p))
    assert len(stream._write_buffer) > 0
    b.setblocking(False)
    got = b""
    expected = sum(len(wsframe.text_frame(p)) for p in payloads)
    for _ in range(500):
        try:
            chunk = b.recv(65536)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        got += chunk
        if len(got) >= expected:
            break
    assert _read_frames(got) == payloads
    stream.close()
    assert wsframe.write_frame(stream, wsframe.text_frame(b"late")) is False
    b.close()


async def test_write_frame_to_a_peer_that_went_away_closes_the_stream():
    a, b = socket.socketpair()
    stream = IOStream(a)
    closed = asyncio.Event()
    stream.set_close_callback(closed.set)
    b.close()
    for _ in range(3):  # the first send may still succeed; then EPIPE closes the stream
        wsframe.write_frame(stream, wsframe.text_frame(b"x" * 100))
    await asyncio.wait_for(closed.wait(), 5)
    assert stream.closed()


def test_fast_path_refuses_compressed_client_and_ssl_connections():
    params = tornado.websocket._WebSocketParams(compression_options={})
    server = tornado.websocket.WebSocketProtocol13(None, False, params)
    a, b = socket.socketpair()
    try:
        server.stream = IOStream(a)
        assert wsframe.fast_stream(server) is server.stream
        server._create_compressors("server", {}, {})  # permessage-deflate negotiated
        assert wsframe.fast_stream(server) is None
        client = tornado.websocket.WebSocketProtocol13(None, True, params)  # masks its frames
        client.stream = server.stream
        assert wsframe.fast_stream(client) is None
        assert wsframe.fast_stream(None) is None
    finally:
        server.stream.close()
        b.close()


# -- hub: shared catch-up reads ---------------------------------------------------------------

async def test_concurrent_subscribers_share_one_outbox_read_then_none_at_the_known_tpos():
    cu = FakeCatchUp([ev(1), ev(2)], latest=2)
    cu.gate = asyncio.Event()
    hub = make_hub(cu)
    early = [Sink(i) for i in range(50)]
    tasks = [asyncio.ensure_future(hub.subscribe(s, "t", 0)) for s in early]
    await asyncio.sleep(0)
    cu.gate.set()
    assert set(await asyncio.gather(*tasks)) == {"recovered_outbox"}
    assert cu.calls == 1
    assert all(s.tpos() == [1, 2] for s in early)
    # Nothing routed live yet: subscribers at the read's latest tpos go live with no query.
    late = [Sink(100 + i) for i in range(50)]
    assert {await hub.subscribe(s, "t", 2) for s in late} == {"live"}
    assert cu.calls == 1
    hub.on_event(ev(3))
    await asyncio.sleep(0)
    assert all(s.tpos() == [1, 2, 3] for s in early) and all(s.tpos() == [3] for s in late)


async def test_known_tpos_is_forgotten_once_events_flow_and_a_cancelled_waiter_spares_the_rest():
    cu = FakeCatchUp([ev(1)], latest=1)
    cu.gate = asyncio.Event()
    hub = make_hub(cu, recent_events=0)
    a, b = Sink(1), Sink(2)
    ta = asyncio.ensure_future(hub.subscribe(a, "t", 0))
    tb = asyncio.ensure_future(hub.subscribe(b, "t", 0))
    await asyncio.sleep(0)
    ta.cancel()  # a's connection closed mid-read: b's read goes on
    cu.gate.set()
    assert await tb == "recovered_outbox" and b.tpos() == [1]
    assert ta.cancelled()
    # Events reached the hub: tpos is known live, the earlier read's latest no longer decides.
    hub.on_event(ev(2))
    cu.events, cu.latest = [ev(1), ev(2)], 2
    c = Sink(3)
    assert await hub.subscribe(c, "t", 1) == "recovered_outbox" and c.tpos() == [2]
    assert cu.calls == 2


# -- hub: coalescing ------------------------------------------------------------------------

def _txs(sink: Sink) -> list[list[int]]:
    """The transactions a client rebuilds by splitting every message at tx_last."""
    out, tx = [], []
    for m in sink.got:
        if m["type"] != "events":
            continue
        assert m["events"][-1]["tx_last"], "a message ends at a transaction boundary"
        for e in m["events"]:
            tx.append(e["tpos"])
            if e["tx_last"]:
                out.append(tx)
                tx = []
    return out


def txev(tpos, tx_last):
    e = ev(tpos, tx_last=tx_last)
    doc = json.loads(e.raw)
    doc["tx_last"] = tx_last
    e.raw = json.dumps(doc).encode()
    return e


async def test_a_busy_topic_sends_several_whole_transactions_per_message():
    hub = make_hub(FakeCatchUp(), coalesce=0.02, flush_delay=0.05)
    s = Sink()
    await hub.subscribe(s, "t", 0)
    hub.on_event(txev(1, True))  # quiet topic: sent at the end of this turn
    await asyncio.sleep(0)
    assert s.tpos() == [1]
    plan = [(2, False), (3, True), (4, True), (5, False), (6, False), (7, True), (8, False)]
    for tpos, last in plan:
        hub.on_event(txev(tpos, last))
    assert s.tpos() == [1]  # within the window: held
    await asyncio.sleep(0.035)
    # One message for the whole transactions; 8's transaction is still open, not split off.
    assert _txs(s) == [[1], [2, 3], [4], [5, 6, 7]]
    assert len([m for m in s.got if m["type"] == "events"]) == 2
    hub.on_event(txev(9, True))
    await asyncio.sleep(0.03)
    assert _txs(s) == [[1], [2, 3], [4], [5, 6, 7], [8, 9]]


async def test_a_burst_routed_in_one_turn_is_one_message_and_waits_for_no_timer():
    # The default (no coalescing window): what the broker stream hands over in one turn
    # of the loop (a relay batch) goes out together at the end of that turn; nothing waits
    # for a timer, which the selector would round up to a whole millisecond.
    hub = make_hub(FakeCatchUp())
    s = Sink()
    await hub.subscribe(s, "t", 0)
    for tpos, last in [(1, True), (2, False), (3, True), (4, True), (5, False)]:
        hub.on_event(txev(tpos, last))
    assert s.tpos() == []
    await asyncio.sleep(0)
    messages = lambda: len([m for m in s.got if m["type"] == "events"])  # noqa: E731
    assert _txs(s) == [[1], [2, 3], [4]] and messages() == 1  # 5's transaction is open
    hub.on_event(txev(6, True))  # ends 5's transaction
    hub.on_event(txev(7, True))
    await asyncio.sleep(0)
    assert _txs(s) == [[1], [2, 3], [4], [5, 6], [7]] and messages() == 2


async def test_an_open_transaction_is_flushed_after_flush_delay_when_its_tx_last_is_lost():
    hub = make_hub(FakeCatchUp(), coalesce=0.005, flush_delay=0.02)
    s = Sink()
    await hub.subscribe(s, "t", 0)
    hub.on_event(txev(1, False))
    await asyncio.sleep(0.01)
    assert s.tpos() == []
    await asyncio.sleep(0.03)
    assert s.tpos() == [1]
