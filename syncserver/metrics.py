"""Prometheus metrics of the sync server (served at /metrics by the Tornado app)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# The subscriber library's count of broker messages that claimed positions beyond the
# outbox (outbox_subscriber_unfounded_claims_total{kind}): served here with the rest.
from outbox_relay.subscriber import UNFOUNDED as BROKER_UNFOUNDED_CLAIMS  # noqa: F401

CONNECTIONS = Gauge("sync_connections", "Open SockJS connections", ["transport"])
SUBSCRIPTIONS = Gauge("sync_subscriptions", "Active topic subscriptions (live or catching up)")
EVENTS_DELIVERED = Counter("sync_events_delivered_total", "Events sent to clients (one per client per event)", ["kind"])
RESUMES = Counter("sync_resumes_total", "Subscribe outcomes", ["outcome"])
REVOCATIONS = Counter("sync_revocations_total", "Subscriptions ended by a membership removal")
PROTOCOL_ERRORS = Counter("sync_protocol_errors_total", "Error messages sent to clients", ["code"])
SLOW_CLOSED = Counter("sync_slow_clients_closed_total",
                      "Connections closed for leaving more than SYNC_MAX_PENDING_BYTES unread")
COMMIT_TO_PUSH = Histogram(
    "sync_commit_to_push_seconds", "From the event's committed_at to its push to subscribers",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# What users see (syncserver/pagelatency.py): browsers' reports, bounded in value and rate.
CLIENT_LATENCY = Histogram(
    "sync_client_latency_seconds", "From the event's committed_at to its being applied on the page, as browsers report it "
    "(sampled)",
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CLIENT_LATENCY_DROPPED = Counter("sync_client_latency_dropped_total",
                                 "Browser latency samples not recorded (out_of_range: outside 0-60 s; over_rate: "
                                 "beyond a connection's allowance)", ["reason"])
BROKER_EVENTS = Counter("sync_broker_events_total", "Events received from the subscriber stream")
GRANT_CHECKS = Counter("sync_grant_checks_total", "Subscribe grant checks asked of the database (before batching)")
GRANT_QUERIES = Counter("sync_grant_queries_total", "Queries that answered grant checks (one per batch)")
