"""The bounded chaos subset that runs in `make test`: real broker, two relays and the sync
server as processes against the test database, browser-like clients on every transport,
writers committing throughout; one fault per test. Each asserts nothing committed was
lost, shown twice or reordered, the final state equals the database, and recovery
happened within the bound. (`make chaos` runs every fault repeatedly and prints figures.)"""
from __future__ import annotations

import asyncio

import pytest

from chaos.faults import FAULTS
from chaos.trial import Options, make_cluster, run_trial
from stack.cluster import Cluster

OPTS = Options(clients=3, writers=2, rate=15.0, warm=1.0, after=1.5, settle_timeout=30.0)


@pytest.fixture
def cluster(db_url):
    c = make_cluster(db_url, relays=2)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def trial(cluster: Cluster, fault: str):
    result = asyncio.run(asyncio.wait_for(run_trial(cluster, fault, FAULTS[fault], OPTS), 120))
    detail = f"{result.totals} notes={result.notes}\n{cluster.outputs()[-3000:]}"
    assert result.committed > 0, detail
    assert result.totals.records == OPTS.clients * OPTS.checklists, detail
    assert result.totals.missing == 0, detail
    assert result.totals.duplicates == 0, detail
    assert result.totals.reorders == 0, detail
    assert result.totals.mismatched == 0, detail
    assert result.totals.state_diff == 0, detail
    assert result.db_holes == 0, detail
    assert result.db_misordered == 0, detail
    assert result.recovery is not None, detail
    return result


@pytest.mark.parametrize("fault", [
    "kill -9 relay leader",
    "kill -9 sync server",
    "kill -9 broker",
    "terminate LISTEN conn",
    "kill client",
    "presence across servers",
    "outage longer than a batch",
])
def test_no_change_lost_duplicated_or_reordered(cluster, fault):
    trial(cluster, fault)
