"""stack.cluster: the throwaway stack the relay, sync server and chaos suites and the
benchmarks run their daemons in."""
from __future__ import annotations

import io
import signal
import urllib.request

import pytest

from stack.cluster import Cluster, isolated_env
from stack.processes import port_open
from tests.stack.test_supervisor import gone

pytestmark = pytest.mark.django_db(transaction=True)


def test_isolated_env_drops_only_our_prefixes():
    env = {"PATH": "/bin", "DATABASE_URL": "x", "SYNC_PORT": "1", "OUTBOX_BROKER_BACKEND": "y", "PORTAL_HTTPS": "1",
           "SYNCHRONIZE": "keep"}
    assert isolated_env(env) == {"PATH": "/bin", "DATABASE_URL": "x", "SYNCHRONIZE": "keep"}


def test_services_are_killed_restarted_on_their_ports_and_all_stopped(db_url, monkeypatch):
    # A developer's shell with settings of ours that would break the daemons: not inherited.
    monkeypatch.setenv("OUTBOX_RELAY_BATCH_SIZE", "many")
    monkeypatch.setenv("SYNC_PORT", "not a port")
    log = io.StringIO()
    cluster = Cluster(db_url, relays=2, log_to=log)
    try:
        cluster.start()
        assert set(cluster.services) == {"broker", "relay-1", "relay-2", "syncserver"}
        assert set(cluster.relays) == {"relay-1", "relay-2"} and cluster.sync is cluster.services["syncserver"]
        leader = cluster.leader()
        standby = ({"relay-1", "relay-2"} - {leader}).pop()
        old = cluster.pids()
        cluster.kill(leader)
        assert gone(old[leader])
        # Reaped, not only a zombie main thread: until every thread of the process has
        # exited, waitpid does not report it, so alive() still says yes while the state row
        # still names it (the likely cause of a CI failure on a loaded machine, where
        # leader() answered with the relay just killed).
        assert cluster.services[leader].finish(10) == -signal.SIGKILL
        assert cluster.leader(20) == standby, cluster.outputs()[-4000:]
        cluster.restart(leader)
        assert cluster.services[leader].pid != old[leader]
        cluster.restart("syncserver")  # a live one: stopped first, then on the same port again
        assert gone(old["syncserver"]) and port_open(cluster.sync_port)
        with urllib.request.urlopen(f"{cluster.sync_base}/healthz", timeout=10) as response:
            assert response.status == 200
        cluster.kill("broker", signal.SIGSTOP)  # any signal: the chaos faults pause the broker
        cluster.kill("broker", signal.SIGCONT)
        assert cluster.broker is not None and cluster.broker.alive()
        running = cluster.pids()
        assert set(running) == {"broker", "relay-1", "relay-2", "syncserver"}
    finally:
        codes = cluster.stop()
    assert all(gone(pid) for pid in running.values())
    assert codes == {"syncserver": 0, "relay-2": 0, "relay-1": 0, "broker": 0}, cluster.outputs()[-3000:]
    # Every line was passed on, prefixed with its service's name; outputs() has them too.
    assert "relay-1    | " in log.getvalue() and "syncserver | " in log.getvalue()
    assert "--- broker" in cluster.outputs() and "broker ready" in cluster.outputs()
