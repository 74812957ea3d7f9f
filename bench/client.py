"""A measuring browser stand-in, run as its own process: connects to a SockJS server over
the raw websocket or xhr-streaming, authenticates, subscribes, and records when each
benchmark event arrives (its sequence number is in data.text as "b:<seq>:<epoch ms>").

    python -m bench.client --url http://127.0.0.1:8001/sync --transport websocket \
        --token T --topic checklist:1 --origin http://127.0.0.1:8000 --out recv.json \
        --count 1000 --timeout 30 [--since N]

Prints "ready" once subscribed and "done <received>" at the end; writes {"recv": {seq: epoch s},
"order_ok": bool, "first": epoch s, "last": epoch s, "kinds": {...}} to --out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
import sys
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect


class Recorder:
    def __init__(self, count: int):
        self.count = count
        self.recv: dict[int, float] = {}
        self.kinds: dict[str, int] = {}
        self.last_seq = 0
        self.order_ok = True
        self.first: float | None = None
        self.last: float | None = None
        self.done = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.authed = asyncio.Event()
        self.error: str | None = None

    def on_text(self, text: str) -> None:
        now = time.time()
        msg = json.loads(text)
        kind = msg.get("type")
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind == "authed":
            self.authed.set()
        elif kind == "subscribed":
            self.subscribed.set()
        elif kind in ("error", "resync", "revoked"):
            self.error = text[:300]
            self.done.set()
        elif kind in ("events", "recovered"):
            for ev in msg["events"]:
                text_field = (ev.get("data") or {}).get("text", "")
                if not isinstance(text_field, str) or not text_field.startswith("b:"):
                    continue
                seq = int(text_field.split(":")[1])
                if seq in self.recv:
                    continue  # at-least-once delivery; the first arrival counts
                if seq < self.last_seq:
                    self.order_ok = False
                self.last_seq = max(self.last_seq, seq)
                self.recv[seq] = now
                self.first = self.first or now
                self.last = now
            if len(self.recv) >= self.count:
                self.done.set()


async def run_websocket(args, rec: Recorder):
    ws_url = args.url.replace("http://", "ws://").rstrip("/") + "/websocket"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Origin": args.origin}), max_message_size=64 << 20)

    async def reader():
        while True:
            text = await conn.read_message()
            if text is None:
                rec.error = rec.error or "websocket closed"
                rec.done.set()
                return
            rec.on_text(text)

    task = asyncio.create_task(reader())
    return task, conn.write_message, conn.close


async def run_xhr_streaming(args, rec: Recorder):
    session = "".join(random.choices(string.ascii_lowercase + string.digits, k=16))
    base = f"{args.url.rstrip('/')}/{random.randint(100, 999)}/{session}"
    client = AsyncHTTPClient(force_instance=True, max_body_size=1 << 30)
    buffer = bytearray()
    opened = asyncio.Event()

    def on_chunk(chunk: bytes) -> None:
        buffer.extend(chunk)
        while b"\n" in buffer:
            i = buffer.index(b"\n")
            frame = bytes(buffer[:i]).decode()
            del buffer[: i + 1]
            if frame == "o":
                opened.set()
            elif frame.startswith("a"):
                for text in json.loads(frame[1:]):
                    rec.on_text(text)
            elif frame.startswith("c"):
                rec.error = rec.error or f"closed {frame}"
                rec.done.set()

    async def stream() -> None:
        # The server ends each streaming response after ~128 KB (SockJS response_limit); a
        # SockJS client opens the next one on the same session at once, and so do we.
        while not rec.done.is_set():
            buffer.clear()
            req = HTTPRequest(base + "/xhr_streaming", method="POST", body=b"", headers={"Origin": args.origin},
                              streaming_callback=on_chunk, request_timeout=args.timeout + 30, connect_timeout=10)
            resp = await client.fetch(req, raise_error=False)
            if resp.code != 200:
                rec.error = rec.error or f"xhr_streaming answered {resp.code}"
                rec.done.set()

    task = asyncio.ensure_future(stream())
    await asyncio.wait_for(opened.wait(), 10)

    async def send(text: str) -> None:
        await client.fetch(HTTPRequest(base + "/xhr_send", method="POST", body=json.dumps([text]),
                                       headers={"Origin": args.origin, "Content-Type": "text/plain"}))

    return task, send, client.close


async def main_async(args) -> int:
    rec = Recorder(args.count)
    runner = run_websocket if args.transport == "websocket" else run_xhr_streaming
    task, send, close = await runner(args, rec)

    async def say(obj):
        result = send(json.dumps(obj))
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result

    await say({"type": "auth", "token": args.token})
    await asyncio.wait_for(rec.authed.wait(), 10)
    t_subscribe = time.time()
    await say({"type": "subscribe", "topic": args.topic, "since": args.since})
    await asyncio.wait_for(rec.subscribed.wait(), 10)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(rec.done.wait(), args.timeout)
    except asyncio.TimeoutError:
        pass
    with open(args.out, "w") as f:
        json.dump({"recv": rec.recv, "order_ok": rec.order_ok, "first": rec.first, "last": rec.last,
                   "kinds": rec.kinds, "error": rec.error, "t_subscribe": t_subscribe}, f)
    print(f"done {len(rec.recv)}", flush=True)
    task.cancel()
    close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--transport", choices=("websocket", "xhr-streaming"), default="websocket")
    p.add_argument("--token", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--origin", default="http://127.0.0.1:8000")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--out", required=True)
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
