"""A measuring browser stand-in, run as its own process: connects to a SockJS server over
the raw websocket, xhr-streaming, eventsource or xhr-polling, authenticates, subscribes, and records when each
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
import sys
import time

from stack.sockjs_client import connect

# --transport names (the figures are keyed by them) -> stack.sockjs_client's: "websocket"
# here is the raw WebSocket endpoint (/sync/websocket), as a lean browser client would use.
TRANSPORTS = {"websocket": "rawwebsocket", "xhr-streaming": "xhr_streaming", "eventsource": "eventsource",
              "xhr-polling": "xhr"}


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

    def on_message(self, msg, now: float) -> None:
        """Called as each message arrives (stack.sockjs_client's on_message), with the time
        its frame was read, before the message was decoded (as this client always measured)."""
        kind = msg.get("type") if isinstance(msg, dict) else None
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind == "authed":
            self.authed.set()
        elif kind == "subscribed":
            self.subscribed.set()
        elif kind in ("error", "resync", "revoked"):
            self.error = json.dumps(msg)[:300]
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


async def main_async(args) -> int:
    rec = Recorder(args.count)
    client = await connect(TRANSPORTS[args.transport], args.url, args.origin, on_message=rec.on_message)

    async def watch_close() -> None:
        await client.closed.wait()
        rec.error = rec.error or f"closed {client.close_frame}"
        rec.done.set()

    watcher = asyncio.ensure_future(watch_close())
    await client.send({"type": "auth", "token": args.token})
    await asyncio.wait_for(rec.authed.wait(), 10)
    t_subscribe = time.time()
    await client.send({"type": "subscribe", "topic": args.topic, "since": args.since})
    await asyncio.wait_for(rec.subscribed.wait(), 10)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(rec.done.wait(), args.timeout)
    except asyncio.TimeoutError:
        pass
    with open(args.out, "w") as f:
        json.dump({"recv": rec.recv, "order_ok": rec.order_ok, "first": rec.first, "last": rec.last,
                   "kinds": rec.kinds, "error": rec.error, "t_subscribe": t_subscribe,
                   "poll_seconds": list(getattr(client, "poll_seconds", ()))}, f)
    print(f"done {len(rec.recv)}", flush=True)
    watcher.cancel()
    client.abort()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--transport", choices=tuple(TRANSPORTS), default="websocket")
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
