"""A small closed-loop HTTP/1.1 load generator: N clients, each one keep-alive connection,
each sending its next request as soon as the previous answer arrived.

Raw sockets, not http.client or requests: the load clients share the 2 cores with the
portal and PostgreSQL, and what they spend per request is taken from the server. A client
builds a request's bytes, writes them and reads exactly one response (headers, then
Content-Length bytes); a status the caller did not expect is counted as an error and
its first one is kept for the report.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A request maker gets (client index, request number) and returns (method, path, headers, body).
Maker = Callable[[int, int], tuple[str, str, dict[str, str], bytes]]


class Connection:
    """One keep-alive connection to 127.0.0.1:port (reconnects when the server closes it)."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.addr = (host, port)
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.addr, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict, bytes]:
        """(status, lower-cased headers, body). Retries once on a connection the server closed."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.addr[0]}:{self.addr[1]}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(data)
                return self._response()
            except (ConnectionError, EOFError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _read_more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def _response(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._read_more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k, v = k.strip().lower(), v.strip()
            # Several Set-Cookie lines: kept together, one per line.
            headers[k] = f"{headers[k]}\n{v}" if k == "set-cookie" and k in headers else headers.get(k, v)
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._read_more()
        body, self.buf = self.buf[:length], self.buf[length:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


@dataclass
class Result:
    clients: int
    seconds: float
    ok: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Milliseconds."""
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return 1000 * xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def summary(self) -> dict:
        return {"clients": self.clients, "seconds": round(self.seconds, 2), "ok": self.ok, "errors": self.errors,
                "per_s": round(self.per_s, 1), "p50_ms": round(self.percentile(50), 2),
                "p99_ms": round(self.percentile(99), 2), **({"first_error": self.first_error} if self.errors else {})}


def run(port: int, clients: int, duration: float, maker: Maker, expect: int | tuple[int, ...],
        connect: Callable[[Connection, int], None] | None = None) -> Result:
    """`clients` closed-loop clients for `duration` seconds; a response with a status in
    `expect` counts as done. `connect` (optional) prepares each connection (e.g. logs in)."""
    expected = (expect,) if isinstance(expect, int) else tuple(expect)
    result = Result(clients=clients, seconds=duration)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = Connection(port)
        lat, ok, errors, first = [], 0, 0, ""
        try:
            if connect is not None:
                connect(conn, i)
        finally:
            start.wait()
        n = 0
        while time.monotonic() < stop_at[0]:
            method, path, headers, body = maker(i, n)
            n += 1
            t0 = time.perf_counter()
            try:
                status, _, rbody = conn.request(method, path, headers, body)
            except (OSError, EOFError) as exc:
                errors += 1
                first = first or f"{type(exc).__name__}: {exc}"
                conn.close()
                continue
            dt = time.perf_counter() - t0
            if status in expected:
                ok += 1
                lat.append(dt)
            else:
                errors += 1
                first = first or f"{status} {rbody[:200]!r}"
        conn.close()
        with lock:
            result.ok += ok
            result.errors += errors
            result.latencies.extend(lat)
            result.first_error = result.first_error or first

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    # Every client has connected (and logged in) when the barrier opens; the clock starts then.
    while start.n_waiting < clients and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    t0 = time.monotonic()
    stop_at[0] = t0 + duration
    start.wait()
    for t in threads:
        t.join(duration + 60)
    result.seconds = time.monotonic() - t0
    return result
