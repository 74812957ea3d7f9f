"""The api bench's pure parts and its load client (no portal, no database)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench import api_bench, figures, http_load


def test_paired_loss_is_the_median_of_each_rounds_loss():
    assert api_bench.paired_loss([100, 200, 100], [90, 100, 95]) == 10.0
    assert api_bench.paired_loss([], []) is None
    assert api_bench.paired_loss([0, 100], [5, 80]) == 20.0  # a round with nothing measured is left out


def test_api_rows_say_targets_and_where_the_cpu_goes():
    cells = {f"{k}/{n}/{m}": {"per_s": 500.0 if m == "off" else 450.0,
                              "cpu_ms_per_write": {"portal": 2.0, "postgres": 1.0 if m == "on" else 0.5}}
             for k in api_bench.KINDS for n in (1, 8, 32) for m in ("on", "off")}
    raw = {"api": {"cells": cells, "loss_pct": {f"{k}/{n}": 10.0 for k in api_bench.KINDS for n in (1, 8, 32)},
                   "rest_create_1": {"p50_ms": 2.5, "p99_ms": 9.0}, "batch_size": 500,
                   "batch": {"1": {"items_per_s": 9000.0}, "8": {"items_per_s": 12000.0}}}}
    rows = figures.api(raw)["rows"]
    by_start = {r["figure"].split(",")[0]: r for r in rows}
    assert rows[0]["ours"] == 2.5 and rows[0]["met"] is True
    assert rows[1]["ours"] == 450.0 and rows[1]["met"] is True
    assert all(r["met"] is True for r in rows if "% writes/s lost" in r["figure"])
    assert any("CPU ms per REST create" in r["figure"] and "postgres 1.00" in r["ours"] for r in rows)
    assert "1. Batch endpoint" in by_start
    assert figures.api({}) == {"rows": []}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201 if body == b"ok" else 400)
        self.send_header("Set-Cookie", "a=1; Path=/")
        self.send_header("Set-Cookie", "b=2; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_load_client_keeps_connections_counts_errors_and_reads_every_cookie():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        conn = http_load.Connection(port)
        status, headers, body = conn.request("POST", "/", {}, b"ok")
        assert (status, body) == (201, b"ok")
        assert api_bench._cookies(headers) == {"a": "1", "b": "2"}
        conn.close()
        result = http_load.run(port, 3, 0.3, lambda i, n: ("POST", "/", {}, b"ok" if n % 2 else b"no"), 201)
        assert result.ok > 0 and result.errors > 0 and result.first_error.startswith("400")
        assert result.summary()["clients"] == 3 and result.percentile(50) > 0
    finally:
        server.shutdown()
