"""Chaos suite: prove that no committed change is lost, shown twice or reordered under faults.

load.py writes, recorder.py watches as browser-like clients, checker.py compares (pure),
faults.py breaks things, run.py is `make chaos`. The processes run in a stack.cluster.Cluster
(postgres.py adds a private PostgreSQL the faults may restart), the clients speak SockJS
through stack.sockjs_client.
"""
