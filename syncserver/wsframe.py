"""Server-to-client WebSocket frames built once and written to many connections.

Fan-out sends the same message to thousands of connections. Tornado's write_message
frames it again for each one and wraps every write in a Future plus an asyncio Task;
at 100k deliveries/s that bookkeeping, not the socket, was most of the cost. Server
frames are unmasked (RFC 6455 5.1), so the bytes of a frame are the same for every
connection: build them once (`text_frame`, pure) and hand them to each connection's
socket (`write_frame`), going through Tornado's IOStream buffer only when the socket
cannot take all of it now, so per-connection ordering is kept. (It uses IOStream's
write buffer directly for a reader that is behind; tests/syncserver/test_fanout.py
checks it against the installed Tornado.)

A connection that negotiated permessage-deflate needs its own compressed bytes:
`fast_stream` answers None for it and the caller uses Tornado's normal path. (The
server does not enable compression; SockJSWebSocketHandler returns compression
options only on Tornado 4.)
"""
from __future__ import annotations

import struct

from tornado.iostream import IOStream, StreamClosedError

_FIN_TEXT = 0x81  # FIN + opcode 1 (text)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed text frame carrying `payload` (UTF-8)."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", _FIN_TEXT, 126, n) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, n) + payload


def fast_stream(ws_connection: object) -> IOStream | None:
    """The IOStream of a server-side, uncompressed Tornado WebSocket connection, or None
    when frames built by `text_frame` would be wrong for it (compression, client side)."""
    if ws_connection is None or getattr(ws_connection, "mask_outgoing", True):
        return None
    if getattr(ws_connection, "_compressor", None) is not None:
        return None
    stream = getattr(ws_connection, "stream", None)
    # Exactly IOStream: an SSLIOStream must encrypt through its own write path.
    return stream if type(stream) is IOStream else None


def write_frame(stream: IOStream, frame: bytes) -> bool:
    """Write a prebuilt frame; False if the stream is closed (the frame is dropped; the
    stream's close callback ends the connection). Never blocks, never awaits."""
    if stream.closed():
        return False
    queued = stream._write_buffer
    if queued:
        # A slow reader: earlier bytes wait for the socket to become writable, and
        # IOStream is already watching for that. Queue behind them without another
        # send() that would fail with EAGAIN, and without a Future per message.
        queued.append(frame)
        stream._total_write_index += len(frame)
        return True
    # Nothing queued before us: try the socket right away.
    try:
        sent = stream.socket.send(frame)
    except BlockingIOError:
        sent = 0
    except OSError:
        sent = 0  # let IOStream hit the same error below: it closes and reports the stream
    if sent == len(frame):
        return True
    try:
        # The rest, when the socket is writable: IOStream queues it and registers for
        # that. The returned Future is not needed (IOStream retrieves its exception).
        stream.write(memoryview(frame)[sent:] if sent else frame)
    except StreamClosedError:
        return False
    return True
