"""Prometheus metrics of the relay (served on OUTBOX_RELAY_METRICS_PORT, 127.0.0.1)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

BACKLOG = Gauge("outbox_relay_backlog_rows", "Committed outbox rows not yet sequenced")
LAG = Histogram(
    "outbox_relay_publish_lag_seconds", "From the write (created_at) to publication",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PUBLISHED = Counter("outbox_relay_events_published_total", "Events published (republished ones included)")
BATCHES = Counter("outbox_relay_batches_total", "Claim batches that sequenced at least one row")
CLAIMS = Counter("outbox_relay_claims_total", "Claims sent to PostgreSQL, empty ones included")
# From sending a claim to having its rows: PostgreSQL's sequencing, the durable commit, and
# any publishing the loop did meanwhile (a full batch is published while the next claim
# runs). Milliseconds normally; seconds mean the claim's plans read far more than its batch.
CLAIM_SECONDS = Histogram(
    "outbox_relay_claim_seconds", "From sending a claim to having its rows, empty claims included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEADER = Gauge("outbox_relay_leader", "1 while this relay is the leader")
POISON = Counter("outbox_relay_poison_rows_total", "Rows sequenced with an error (published without data)")
HEARTBEATS = Counter("outbox_relay_heartbeats_total", "Heartbeats published")


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
